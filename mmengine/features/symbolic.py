"""Per-frame symbolic note features from a MIDI file, aligned with the audio frames.

Frame ``t`` covers the time ``t * hop / sr`` (the centre of audio frame ``t``). Features,
``(SYMBOLIC_DIM, frames)`` float32:

* rows 0–11: pitch-class roll (1 where a note of that pitch class sounds);
* row 12: onsets starting in the frame (count, capped at 4, divided by 4);
* row 13: sounding notes (count, capped at 8, divided by 8);
* row 14: mean sounding pitch, (pitch − 60) / 24 (0 when silent);
* rows 15–17, relative to the piece (tempo- and transposition-free), at each onset frame
  (notes starting within ``CHORD_S`` of each other form one onset), 0 elsewhere:
  15: log2 of the inter-onset interval to the next onset over the clip's median
  inter-onset interval, clipped to ±3, divided by 3; 16: log2 of the ratio of the next
  interval to the previous one, clipped to ±3, divided by 3; 17: the interval in semitones
  from the previous onset's highest note to this one's, clipped to ±12, divided by 12.

No meter, barline or tempo information is encoded: only what sounds when. Engines built
before rows 15–17 existed read the first 15 rows (``symbolic_features(..., rows=15)``).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

SYMBOLIC_DIM = 18
#: onsets closer than this (seconds) are one onset (a chord) for rows 15–17
CHORD_S = 0.02
#: pretty_midi refuses files longer than ``MAX_TICK`` ticks (1e7); music21 writes 10,080 ticks
#: per quarter note, so a music21 MIDI file of a few minutes exceeds it.
MAX_TICK = 1e10


def symbolic_dim() -> int:
    """Rows of ``symbolic_features`` (18)."""
    return SYMBOLIC_DIM


def notes_features(starts, ends, pitch, n_frames: int, *, sr: int, hop: int) -> np.ndarray:
    """Features from note arrays (start s, end s, MIDI pitch), each ``(n_notes,)``
    -> ``(18, n_frames)`` float32. A note covers frames ``round(start * sr / hop)`` up to
    ``round(end * sr / hop)`` (at least one frame)."""
    out = np.zeros((SYMBOLIC_DIM, n_frames), np.float32)
    fps = sr / hop
    pitch_sum = np.zeros(n_frames, np.float64)
    count = np.zeros(n_frames, np.float64)
    onsets = np.zeros(n_frames, np.float64)
    for s, e, p in zip(starts, ends, pitch):
        a = int(np.floor(s * fps + 0.5))
        b = max(a + 1, int(np.floor(e * fps + 0.5)))
        if a >= n_frames:
            continue
        b = min(b, n_frames)
        out[int(p) % 12, a:b] = 1.0
        count[a:b] += 1
        pitch_sum[a:b] += p
        onsets[a] += 1
    out[12] = np.minimum(onsets, 4) / 4.0
    out[13] = np.minimum(count, 8) / 8.0
    sounding = count > 0
    out[14, sounding] = ((pitch_sum[sounding] / count[sounding]) - 60.0) / 24.0
    _relative_rows(out, np.asarray(starts, np.float64), np.asarray(pitch, np.int64), fps)
    return out


def _relative_rows(out: np.ndarray, starts: np.ndarray, pitch: np.ndarray, fps: float) -> None:
    """Rows 15–17 (see the module docstring), written in place."""
    if len(starts) == 0:
        return
    order = np.argsort(starts, kind="stable")
    starts, pitch = starts[order], pitch[order]
    # first note of each onset (chord): one pass with reduceat, not a mask per onset
    first = np.flatnonzero(np.concatenate([[True], np.diff(starts) > CHORD_S]))
    onset_t = starts[first]
    top = np.maximum.reduceat(pitch, first).astype(np.float64)
    frames = np.floor(onset_t * fps + 0.5).astype(np.int64)
    ioi = np.round(np.diff(onset_t), 3)  # to the millisecond: equal intervals stay equal
    n = out.shape[1]
    if len(ioi):
        med = float(np.median(ioi))
        nxt = np.log2(np.maximum(ioi, 1e-3) / max(med, 1e-3))
        rel = np.clip(nxt, -3, 3) / 3.0
        ratio = np.zeros(len(ioi))
        ratio[1:] = np.clip(np.log2(np.maximum(ioi[1:], 1e-3) / np.maximum(ioi[:-1], 1e-3)),
                            -3, 3) / 3.0
        ok = frames[:-1] < n
        out[15, frames[:-1][ok]] = rel[ok]
        out[16, frames[:-1][ok]] = ratio[ok]
    step = np.zeros(len(top))
    step[1:] = np.clip(np.diff(top), -12, 12) / 12.0
    ok = frames < n
    out[17, frames[ok]] = step[ok]


def read_midi_notes(midi_path) -> tuple:
    """(starts s, ends s, pitches) of every non-drum note of a MIDI file, float64/int64."""
    import pretty_midi
    import pretty_midi.pretty_midi as pm_module

    old = pm_module.MAX_TICK
    pm_module.MAX_TICK = max(old, MAX_TICK)
    try:
        pm = pretty_midi.PrettyMIDI(str(Path(midi_path)))
    finally:
        pm_module.MAX_TICK = old
    notes = [n for inst in pm.instruments if not inst.is_drum for n in inst.notes]
    return (np.array([n.start for n in notes], np.float64),
            np.array([n.end for n in notes], np.float64),
            np.array([n.pitch for n in notes], np.int64))


def symbolic_features(midi_path, n_frames: int, *, sr: int, hop: int,
                      rows: int = SYMBOLIC_DIM) -> np.ndarray:
    """Features of every note in the MIDI file ``midi_path`` -> ``(rows, n_frames)`` float32
    (the first ``rows`` of the ``SYMBOLIC_DIM`` rows; an engine passes the count its model
    was trained with).

    Frame ``t`` is centred on ``t * hop / sr`` seconds, like a centred STFT of the audio
    rendered from the same notes; notes after the last frame are ignored and frames after the
    last note are zero (the built-in data sets loop the piece in the MIDI file itself).

    Example::

        >>> f = symbolic_features("midi/x.mid", 1292, sr=22050, hop=512)  # doctest: +SKIP
        >>> f.shape
        (18, 1292)
    """
    if not 1 <= rows <= SYMBOLIC_DIM:
        raise ValueError(f"rows must be in 1..{SYMBOLIC_DIM}, got {rows}")
    starts, ends, pitch = read_midi_notes(midi_path)
    return notes_features(starts, ends, pitch, n_frames, sr=sr, hop=hop)[:rows]


def record_symbolic_fn(frontend_cfg, n_frames: int):
    """``fn(record) -> (18, n_frames) or None`` for ``build_feature_set(symbolic_fn=...)``."""

    def fn(record):
        if record.midi_path is None or not Path(record.midi_path).exists():
            return None
        return symbolic_features(record.midi_path, n_frames, sr=frontend_cfg.sample_rate,
                                 hop=frontend_cfg.hop_length)

    return fn
