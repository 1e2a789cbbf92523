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

* rows 18–65, the clip's **meter profile** (``meter_profile``): tempo- and
  transposition-free self-similarity of the melody on a grid of the clip's median
  inter-onset interval, at lags of 1–24 grid steps: 18–41 the fraction of grid steps whose
  held top pitch equals the one ``k`` steps later, 42–65 the fraction of onsets followed by
  another onset exactly ``k`` steps later. A bar of a jig spans 6 steps, of a slip jig 9, of
  a reel 8: the melody repeats at bar and phrase lags, which no frame-level row can show
  within a bar. It is a clip-level summary repeated on every frame, so it travels with the
  per-frame rows through caches, crops and engines (the model reads its mean over time).

No meter, barline or tempo information is encoded: only what sounds when. Engines built
before rows 15–17 (rows 18–65) existed read the first 15 (18) rows
(``symbolic_features(..., rows=15)``).
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import numpy as np

from ..config import InputLimits

#: rows 0–17 vary over time; rows ``METER_START`` onwards hold the clip's meter profile
METER_START = 18
#: lags (grid steps) of the meter profile
METER_LAGS = 24
SYMBOLIC_DIM = METER_START + 2 * METER_LAGS
#: the meter grid's step is the median inter-onset interval, at least this long (seconds)
MIN_GRID_S = 0.02
#: at most this many grid steps are compared (a 900 s file at the 0.02 s floor has 45,000)
MAX_GRID = 1 << 16
#: onsets closer than this (seconds) are one onset (a chord) for rows 15–17
CHORD_S = 0.02
def symbolic_dim() -> int:
    """Rows of ``symbolic_features`` (66)."""
    return SYMBOLIC_DIM


def _frames(t, fps: float) -> np.ndarray:
    """Frame of each time ``t`` (seconds): the nearest frame centre, ``floor(t * fps + 0.5)``."""
    return np.floor(np.asarray(t, np.float64) * fps + 0.5).astype(np.int64)


def notes_features(starts, ends, pitch, n_frames: int, *, sr: int, hop: int) -> np.ndarray:
    """Features from note arrays (start s, end s, MIDI pitch), each ``(n_notes,)``
    -> ``(SYMBOLIC_DIM, n_frames)`` float32 (the meter profile from the notes that start
    within the ``n_frames`` frames). A note covers frames ``round(start * sr / hop)`` up to
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
    starts = np.asarray(starts, np.float64)
    pitch = np.asarray(pitch, np.int64)
    _relative_rows(out, starts, pitch, fps)
    inside = _frames(starts, fps) < n_frames
    out[METER_START:] = meter_profile(starts[inside], pitch[inside])[:, None]
    return out


def _onsets(starts: np.ndarray, pitch: np.ndarray) -> tuple:
    """Onset times (notes within ``CHORD_S`` are one onset) and each onset's highest pitch."""
    order = np.argsort(starts, kind="stable")
    starts, pitch = starts[order], pitch[order]
    first = np.flatnonzero(np.concatenate([[True], np.diff(starts) > CHORD_S]))
    return starts[first], np.maximum.reduceat(pitch, first)


def meter_profile(starts, pitch, lags: int = METER_LAGS) -> np.ndarray:
    """The meter profile of a note list -> ``(2 * lags,)`` float32 in [0, 1].

    Onsets (``_onsets``) are placed on a grid whose step ``u`` is their median inter-onset
    interval (rounded to the millisecond, at least ``MIN_GRID_S``): onset ``i`` at step
    ``g_i = round((t_i - t_0) / u)``, over ``Q = g_last + 1`` steps (at most ``MAX_GRID``).
    ``held[g]`` is the highest pitch of the last onset at or before step ``g``. For
    ``k = 1..lags``: ``P_k`` = mean over ``g < Q - k`` of ``held[g] == held[g + k]``, and
    ``O_k`` = the fraction of onset steps ``g < Q - k`` with an onset at ``g + k``; a lag
    the clip is too short for is 0. Returns ``[P_1..P_lags, O_1..O_lags]``;
    all zeros with fewer than 3 onsets. A uniform change of tempo (up to the millisecond
    rounding of the intervals) or a transposition leaves it unchanged.
    """
    out = np.zeros(2 * lags, np.float32)
    starts = np.asarray(starts, np.float64)
    if len(starts) < 3:
        return out
    t, top = _onsets(starts, np.asarray(pitch, np.int64))
    if len(t) < 3:
        return out
    u = max(float(np.median(np.round(np.diff(t), 3))), MIN_GRID_S)
    g = np.round((t - t[0]) / u).astype(np.int64)
    keep = g < MAX_GRID
    g, top = g[keep], top[keep]
    Q = int(g[-1]) + 1
    on = np.zeros(Q, bool)
    on[g] = True
    held = top[np.searchsorted(g, np.arange(Q), side="right") - 1]
    for k in range(1, lags + 1):
        if Q <= k:
            break
        out[k - 1] = np.mean(held[:-k] == held[k:])
        out[lags + k - 1] = (np.count_nonzero(on[:-k] & on[k:])
                             / max(np.count_nonzero(on[:-k]), 1))
    return out


def _relative_rows(out: np.ndarray, starts: np.ndarray, pitch: np.ndarray, fps: float) -> None:
    """Rows 15–17 (see the module docstring), written in place."""
    if len(starts) == 0:
        return
    # first note of each onset (chord): one pass with reduceat, not a mask per onset
    onset_t, top = _onsets(starts, pitch)
    top = top.astype(np.float64)
    frames = _frames(onset_t, fps)
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


def read_midi_notes(midi_path, limits: Optional[InputLimits] = None) -> tuple:
    """(starts s, ends s, pitches) of every non-drum note of a MIDI file, float64/int64.

    The file is read within ``limits`` (``mmengine.features.midi.read_midi``: regular file,
    bytes, events, ticks and resolution checked before mido or pretty_midi see it).

    Raises:
        MidiError: missing, malformed or unreadable; ``MidiLimitError`` outside ``limits``.
    """
    from .midi import read_midi

    pm = read_midi(midi_path, limits)
    notes = [n for inst in pm.instruments if not inst.is_drum for n in inst.notes]
    return (np.array([n.start for n in notes], np.float64),
            np.array([n.end for n in notes], np.float64),
            np.array([n.pitch for n in notes], np.int64))


def symbolic_features(midi_path, n_frames: int, *, sr: int, hop: int,
                      rows: int = SYMBOLIC_DIM,
                      limits: Optional[InputLimits] = None) -> np.ndarray:
    """Features of every note in the MIDI file ``midi_path`` -> ``(rows, n_frames)`` float32
    (the first ``rows`` of the ``SYMBOLIC_DIM`` rows; an engine passes the count its model
    was trained with).

    Frame ``t`` is centred on ``t * hop / sr`` seconds, like a centred STFT of the audio
    rendered from the same notes; notes after the last frame are ignored and frames after the
    last note are zero (the built-in data sets loop the piece in the MIDI file itself).

    Example::

        >>> f = symbolic_features("midi/x.mid", 1292, sr=22050, hop=512)  # doctest: +SKIP
        >>> f.shape
        (66, 1292)
    """
    if not 1 <= rows <= SYMBOLIC_DIM:
        raise ValueError(f"rows must be in 1..{SYMBOLIC_DIM}, got {rows}")
    starts, ends, pitch = read_midi_notes(midi_path, limits)
    return notes_features(starts, ends, pitch, n_frames, sr=sr, hop=hop)[:rows]


def symbolic_windows(midi_path, total: int, first_frames, n_frames: int, *, sr: int,
                     hop: int, rows: int = SYMBOLIC_DIM,
                     limits: Optional[InputLimits] = None) -> np.ndarray:
    """Features of the windows of a long input -> ``(len(first_frames), rows, n_frames)``.

    Window ``w`` covers the frames ``(first_frames[w] + arange(n_frames)) % total`` of the
    input's ``total`` frames (the last window of a long input, and the only window of a short
    one, wraps around as its audio is looped). Rows 0–17 are those frames of
    ``symbolic_features(midi_path, total)``; the meter rows are each window's own profile,
    from the notes that start on its frames, as a training clip's are from its own notes.
    """
    if not 1 <= rows <= SYMBOLIC_DIM:
        raise ValueError(f"rows must be in 1..{SYMBOLIC_DIM}, got {rows}")
    starts, ends, pitch = read_midi_notes(midi_path, limits)
    full = notes_features(starts, ends, pitch, total, sr=sr, hop=hop)[:rows]
    first_frames = np.asarray(first_frames, np.int64)
    out = np.empty((len(first_frames), rows, n_frames), np.float32)
    note_frame = _frames(starts, sr / hop)
    for w, a in enumerate(first_frames):
        out[w] = full[:, (a + np.arange(n_frames)) % total]
        if rows > METER_START:
            mine = ((note_frame - a) % total < n_frames) & (note_frame < total)
            out[w, METER_START:] = meter_profile(starts[mine], pitch[mine])[
                :rows - METER_START, None]
    return out


def record_symbolic_fn(frontend_cfg, n_frames: int):
    """``fn(record) -> (SYMBOLIC_DIM, n_frames) or None`` for ``build_feature_set(symbolic_fn=...)``."""

    def fn(record):
        if record.midi_path is None or not Path(record.midi_path).exists():
            return None
        return symbolic_features(record.midi_path, n_frames, sr=frontend_cfg.sample_rate,
                                 hop=frontend_cfg.hop_length)

    return fn
