"""Reference audio front end: log-Mel "image" and MFCC "time series".

Plain numpy (float64-capable) and a thin torch Module. Every fast front end (DALI, C++) is
tested against these functions; these are tested against librosa with the parameters pinned in
:class:`mmengine.config.FrontendConfig`.

Shapes: a waveform is ``(n,)`` or ``(B, n)``; outputs are ``(..., n_mels, frames)`` and
``(..., n_mfcc, frames)`` with ``frames = cfg.n_frames(n)``.
"""
from __future__ import annotations

from typing import Dict, Optional

import numpy as np
import scipy.fft

from ..config import FrontendConfig

# --------------------------------------------------------------------------- Mel scale
_F_SP = 200.0 / 3  # Slaney: Hz per Mel below the break
_MIN_LOG_HZ = 1000.0
_MIN_LOG_MEL = _MIN_LOG_HZ / _F_SP
_LOGSTEP = np.log(6.4) / 27.0


def hz_to_mel(f, *, scale: str = "slaney"):
    """Hz → Mel on the Slaney (linear below 1 kHz, log above) or HTK scale."""
    f = np.asanyarray(f, dtype=np.float64)
    if scale == "htk":
        return 2595.0 * np.log10(1.0 + f / 700.0)
    if scale != "slaney":
        raise ValueError(f"mel scale must be 'slaney' or 'htk', not {scale!r}")
    mel = f / _F_SP
    log_region = f >= _MIN_LOG_HZ
    return np.where(log_region, _MIN_LOG_MEL + np.log(np.maximum(f, 1e-12) / _MIN_LOG_HZ) / _LOGSTEP, mel)


def mel_to_hz(m, *, scale: str = "slaney"):
    """Mel → Hz, inverse of :func:`hz_to_mel`."""
    m = np.asanyarray(m, dtype=np.float64)
    if scale == "htk":
        return 700.0 * (10.0 ** (m / 2595.0) - 1.0)
    if scale != "slaney":
        raise ValueError(f"mel scale must be 'slaney' or 'htk', not {scale!r}")
    return np.where(m >= _MIN_LOG_MEL, _MIN_LOG_HZ * np.exp(_LOGSTEP * (m - _MIN_LOG_MEL)), _F_SP * m)


def mel_filterbank(*, sr: int, n_fft: int, n_mels: int, fmin: float = 0.0,
                   fmax: Optional[float] = None, scale: str = "slaney",
                   norm: Optional[str] = "slaney", dtype=np.float64) -> np.ndarray:
    """Triangular Mel filterbank, ``(n_mels, 1 + n_fft // 2)``.

    Band ``m`` rises from Mel point m to m+1 and falls to m+2 (points equally spaced in Mel
    between fmin and fmax). ``norm="slaney"`` scales each band by 2 / (f[m+2] - f[m]) so that
    every band has the same area; ``None`` leaves peaks at 1.
    """
    fmax = sr / 2.0 if fmax is None else float(fmax)
    fft_freqs = np.linspace(0.0, sr / 2.0, 1 + n_fft // 2)
    mel_pts = np.linspace(hz_to_mel(fmin, scale=scale), hz_to_mel(fmax, scale=scale), n_mels + 2)
    hz_pts = mel_to_hz(mel_pts, scale=scale)
    widths = np.diff(hz_pts)
    ramps = hz_pts[:, None] - fft_freqs[None, :]
    lower = -ramps[:-2] / widths[:-1, None]
    upper = ramps[2:] / widths[1:, None]
    fb = np.maximum(0.0, np.minimum(lower, upper))
    if norm == "slaney":
        fb *= (2.0 / (hz_pts[2:] - hz_pts[:-2]))[:, None]
    elif norm is not None:
        raise ValueError(f"mel_norm must be 'slaney' or None, not {norm!r}")
    return fb.astype(dtype)


def hann_window(n: int, dtype=np.float64) -> np.ndarray:
    """Periodic Hann window (as ``scipy.signal.get_window('hann', n)``), ``(n,)``."""
    k = np.arange(n, dtype=np.float64)
    return (0.5 - 0.5 * np.cos(2.0 * np.pi * k / n)).astype(dtype)


def dct_matrix(n_mfcc: int, n_mels: int, dtype=np.float64) -> np.ndarray:
    """Orthonormal DCT-II basis, ``(n_mfcc, n_mels)`` (``scipy.fft.dct(norm='ortho')`` rows)."""
    k = np.arange(n_mfcc)[:, None]
    n = np.arange(n_mels)[None, :]
    basis = np.cos(np.pi * k * (2 * n + 1) / (2.0 * n_mels)) * np.sqrt(2.0 / n_mels)
    basis[0] /= np.sqrt(2.0)
    return basis.astype(dtype)


# ------------------------------------------------------------------------ spectrogram
def frame_signal(y: np.ndarray, *, n_fft: int, hop_length: int, center: bool,
                 pad_mode: str) -> np.ndarray:
    """Frames of ``y`` ``(..., n)`` → ``(..., frames, n_fft)`` (a strided view when possible)."""
    if center:
        pad = [(0, 0)] * (y.ndim - 1) + [(n_fft // 2, n_fft // 2)]
        y = np.pad(y, pad, mode=pad_mode)
    if y.shape[-1] < n_fft:
        raise ValueError(f"signal of {y.shape[-1]} samples is shorter than n_fft={n_fft}")
    frames = np.lib.stride_tricks.sliding_window_view(y, n_fft, axis=-1)
    return frames[..., ::hop_length, :]


def power_spectrogram(y: np.ndarray, *, n_fft: int, hop_length: int, window: str = "hann",
                      center: bool = True, pad_mode: str = "constant",
                      power: float = 2.0) -> np.ndarray:
    """|STFT|**power of ``y`` ``(..., n)`` → ``(..., 1 + n_fft // 2, frames)``.

    The dtype follows ``y`` (float32 or float64)."""
    if window != "hann":
        raise ValueError(f"only the periodic 'hann' window is supported, not {window!r}")
    y = np.asarray(y)
    dtype = np.float64 if y.dtype == np.float64 else np.float32
    frames = frame_signal(y.astype(dtype, copy=False), n_fft=n_fft, hop_length=hop_length,
                          center=center, pad_mode=pad_mode)
    spec = scipy.fft.rfft(frames * hann_window(n_fft, dtype), axis=-1)
    mag = np.abs(spec)
    out = mag * mag if power == 2.0 else mag**power
    return np.swapaxes(out, -1, -2).astype(dtype, copy=False)


def power_to_db(S: np.ndarray, *, amin: float, ref: float = 1.0) -> np.ndarray:
    """10·log10(max(S, amin) / ref): an absolute floor at 10·log10(amin / ref) dB."""
    return 10.0 * np.log10(np.maximum(S, amin)) - 10.0 * np.log10(ref)


def log_mel(y: np.ndarray, cfg: FrontendConfig = FrontendConfig()) -> np.ndarray:
    """Log-Mel spectrogram in dB, ``(..., n_mels, frames)``."""
    S = power_spectrogram(y, n_fft=cfg.n_fft, hop_length=cfg.hop_length, window=cfg.window,
                          center=cfg.center, pad_mode=cfg.pad_mode, power=cfg.power)
    fb = mel_filterbank(sr=cfg.sample_rate, n_fft=cfg.n_fft, n_mels=cfg.n_mels, fmin=cfg.fmin,
                        fmax=cfg.fmax, scale=cfg.mel_scale, norm=cfg.mel_norm, dtype=S.dtype)
    return power_to_db(np.matmul(fb, S), amin=cfg.amin, ref=cfg.db_ref).astype(S.dtype, copy=False)


def mfcc_from_log_mel(logmel: np.ndarray, n_mfcc: int) -> np.ndarray:
    """Orthonormal DCT-II over the Mel axis: ``(..., n_mels, frames)`` → ``(..., n_mfcc, frames)``."""
    basis = dct_matrix(n_mfcc, logmel.shape[-2], dtype=logmel.dtype)
    return np.matmul(basis, logmel)


def compute_features(y: np.ndarray, cfg: FrontendConfig = FrontendConfig(), *,
                     dtype=np.float32) -> Dict[str, np.ndarray]:
    """Log-Mel (dB) and MFCC of a waveform ``(n,)`` or a batch ``(B, n)``.

    Returns ``{"logmel": (..., n_mels, frames), "mfcc": (..., n_mfcc, frames)}`` in ``dtype``
    (float64 computes everything in float64).

    Example::

        >>> y = np.sin(2 * np.pi * 440 * np.arange(22050) / 22050)
        >>> f = compute_features(y)
        >>> f["logmel"].shape, f["mfcc"].shape
        ((128, 44), (20, 44))
    """
    y = np.asarray(y, dtype=dtype)
    lm = log_mel(y, cfg)
    return {"logmel": lm, "mfcc": mfcc_from_log_mel(lm, cfg.n_mfcc)}


# ------------------------------------------------------------------------ torch module
def _torch_module():
    import torch

    class LogMelMFCC(torch.nn.Module):
        """Batched torch front end: waveform ``(B, n)`` → (log-Mel ``(B, n_mels, frames)``,
        MFCC ``(B, n_mfcc, frames)``). Filterbank, window and DCT are buffers."""

        def __init__(self, cfg: FrontendConfig = FrontendConfig()):
            super().__init__()
            if cfg.window != "hann":
                raise ValueError("only the periodic 'hann' window is supported")
            self.cfg = cfg
            fb = mel_filterbank(sr=cfg.sample_rate, n_fft=cfg.n_fft, n_mels=cfg.n_mels,
                                fmin=cfg.fmin, fmax=cfg.fmax, scale=cfg.mel_scale,
                                norm=cfg.mel_norm, dtype=np.float32)
            self.register_buffer("fb", torch.from_numpy(fb))
            self.register_buffer("window", torch.from_numpy(hann_window(cfg.n_fft, np.float32)))
            self.register_buffer("dct", torch.from_numpy(dct_matrix(cfg.n_mfcc, cfg.n_mels, np.float32)))

        def forward(self, y):
            c = self.cfg
            if c.center:
                y = torch.nn.functional.pad(y, (c.n_fft // 2, c.n_fft // 2), mode=c.pad_mode)
            spec = torch.stft(y, c.n_fft, c.hop_length, window=self.window.to(y.dtype),
                              center=False, return_complex=True)
            S = spec.abs().pow(c.power)
            lm = 10.0 * torch.log10(torch.clamp(self.fb.to(y.dtype) @ S, min=c.amin))
            lm = lm - 10.0 * np.log10(c.db_ref)
            return lm, self.dct.to(y.dtype) @ lm

    return LogMelMFCC


def __getattr__(name):  # lazy: importing this module does not import torch
    if name == "LogMelMFCC":
        return _torch_module()
    raise AttributeError(name)
