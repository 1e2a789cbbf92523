"""Per-frame symbolic note features from a MIDI file, aligned with the audio frames.

Frame ``t`` covers the time ``t * hop / sr`` (the centre of audio frame ``t``). Features,
``(SYMBOLIC_DIM, frames)`` float32:

* rows 0–11: pitch-class roll (1 where a note of that pitch class sounds);
* row 12: onsets starting in the frame (count, capped at 4, divided by 4);
* row 13: sounding notes (count, capped at 8, divided by 8);
* row 14: mean sounding pitch, (pitch − 60) / 24 (0 when silent).

No meter, barline or tempo information is encoded: only what sounds when.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

SYMBOLIC_DIM = 15
#: pretty_midi refuses files longer than ``MAX_TICK`` ticks (1e7); music21 writes 10,080 ticks
#: per quarter note, so a music21 MIDI file of a few minutes exceeds it.
MAX_TICK = 1e10


def symbolic_dim() -> int:
    """Rows of ``symbolic_features`` (15)."""
    return SYMBOLIC_DIM


def notes_features(starts, ends, pitch, n_frames: int, *, sr: int, hop: int) -> np.ndarray:
    """Features from note arrays (start s, end s, MIDI pitch), each ``(n_notes,)``
    -> ``(15, n_frames)`` float32. A note covers frames ``round(start * sr / hop)`` up to
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
    return out


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


def symbolic_features(midi_path, n_frames: int, *, sr: int, hop: int) -> np.ndarray:
    """Features of every note in the MIDI file ``midi_path`` -> ``(15, n_frames)`` float32.

    Frame ``t`` is centred on ``t * hop / sr`` seconds, like a centred STFT of the audio
    rendered from the same notes; notes after the last frame are ignored and frames after the
    last note are zero (the built-in data sets loop the piece in the MIDI file itself).

    Example::

        >>> f = symbolic_features("midi/x.mid", 1292, sr=22050, hop=512)  # doctest: +SKIP
        >>> f.shape
        (15, 1292)
    """
    starts, ends, pitch = read_midi_notes(midi_path)
    return notes_features(starts, ends, pitch, n_frames, sr=sr, hop=hop)


def record_symbolic_fn(frontend_cfg, n_frames: int):
    """``fn(record) -> (15, n_frames) or None`` for ``build_feature_set(symbolic_fn=...)``."""

    def fn(record):
        if record.midi_path is None or not Path(record.midi_path).exists():
            return None
        return symbolic_features(record.midi_path, n_frames, sr=frontend_cfg.sample_rate,
                                 hop=frontend_cfg.hop_length)

    return fn
