"""Waveform arithmetic after decoding: mix to mono, resample (soxr), peak safety, loop, cut windows.

Numpy in, numpy out, on arrays already in memory (no file, no decoder, no limit): the stages of
:func:`mmengine.data.audio.load_audio` after decoding, and the window rule (:func:`windows`)
that :class:`mmengine.data.audio_stream.WindowStream` and the engine follow. Kept apart from
the decoders so that the arithmetic reads on its own; ``mmengine.data.audio`` re-exports every
name.
"""
from __future__ import annotations

from typing import List, Optional

import numpy as np
import soxr


def to_mono(y: np.ndarray) -> np.ndarray:
    """Mix to mono: ``(n,)`` is returned as float32; ``(n, channels)`` -> mean over channels.

    Returns:
        (n,) float32.
    """
    y = np.asarray(y)
    if y.ndim == 1:
        return y.astype(np.float32, copy=False)
    if y.ndim != 2:
        raise ValueError(f"expected (n,) or (n, channels), got shape {y.shape}")
    if y.shape[1] == 1:  # a view when (n, 1) is contiguous float32
        return np.ascontiguousarray(y.reshape(-1), dtype=np.float32)
    return y.mean(axis=1, dtype=np.float32)


def resample(y: np.ndarray, sr_in: int, sr_out: int, quality: str = "HQ") -> np.ndarray:
    """Resample with soxr (band-limited; output length ``≈ round(n * sr_out / sr_in)``, ±1).

    Args:
        y: (n,) or (n, channels).
        sr_in, sr_out: rates in Hz.
        quality: soxr recipe: "VHQ", "HQ", "MQ", "LQ" or "QQ".

    Returns:
        float32 of shape (m,) or (m, channels); ``y`` itself (as float32) when the rates match.
    """
    if sr_in <= 0 or sr_out <= 0:
        raise ValueError(f"sample rates must be positive, got {sr_in} -> {sr_out}")
    y = np.asarray(y, dtype=np.float32)
    if sr_in == sr_out:
        return y
    return np.asarray(soxr.resample(y, sr_in, sr_out, quality=quality), dtype=np.float32)


def peak_safe(y: np.ndarray) -> np.ndarray:
    """Scale ``y`` down to peak 1.0 if its absolute peak exceeds 1.0; else return it unchanged.

    Scaling (not clipping) keeps the waveform's shape; resampling a full-scale signal can
    overshoot 1.0 (Gibbs ringing), and float files may store any level.

    Args:
        y: any shape, float32.

    Returns:
        same shape and dtype.
    """
    if y.size == 0:
        return y
    peak = max(float(y.max()), -float(y.min()))  # no |y| temporary
    if peak > 1.0:
        return (y * np.float32(1.0 / peak)).astype(np.float32, copy=False)
    return y


def loop_to_length(y: np.ndarray, n: int) -> np.ndarray:
    """Repeat ``y`` end to end until it is exactly ``n`` samples long, or cut it to ``n``.

    Used to make fixed-length clips: short audio is looped, never padded with silence.

    Args:
        y: (m,) or (m, channels), m >= 1.
        n: wanted length (>= 0).

    Returns:
        (n,) or (n, channels), same dtype; ``out[i] == y[i % m]``.
    """
    y = np.asarray(y)
    if n < 0:
        raise ValueError(f"length must be >= 0, got {n}")
    m = len(y)
    if m == 0:
        raise ValueError("cannot loop an empty waveform")
    if m >= n:
        return y[:n].copy()
    reps = -(-n // m)
    return np.concatenate([y] * reps, axis=0)[:n]


def windows(y: np.ndarray, n: int, hop: Optional[int] = None) -> List[np.ndarray]:
    """Cut ``y`` into windows of exactly ``n`` samples starting at 0, hop, 2*hop, ...

    Rule: every start ``s`` with ``s + n <= len(y)`` gives the full window ``y[s:s+n]``. If
    samples remain after the end of the last full window, the window at the next start ``t``
    is added as ``loop_to_length(y[t:], n)`` when ``y[t:]`` holds at least ``ceil(n / 2)``
    samples, and dropped otherwise (less than half a window of new audio is not worth a
    mostly repeated window). A waveform no longer than ``n`` gives exactly one (looped) window.

    Args:
        y: (m,) or (m, channels), m >= 1.
        n: window length in samples (>= 1).
        hop: step between window starts (default ``n``: no overlap).

    Returns:
        list of arrays of shape (n,) or (n, channels); full windows are views of ``y``.
    """
    y = np.asarray(y)
    hop = n if hop is None else hop
    if n < 1 or hop < 1:
        raise ValueError(f"window and hop must be >= 1, got n={n}, hop={hop}")
    m = len(y)
    if m == 0:
        raise ValueError("cannot cut windows from an empty waveform")
    if m <= n:
        return [loop_to_length(y, n)]
    n_full = (m - n) // hop + 1
    out = [y[i * hop:i * hop + n] for i in range(n_full)]
    covered = (n_full - 1) * hop + n
    tail_start = n_full * hop
    if covered < m and 2 * (m - tail_start) >= n:
        out.append(loop_to_length(y[tail_start:], n))
    return out
