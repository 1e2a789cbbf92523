"""Reference audio front end: log-Mel "image" and MFCC "time series".

The one reference of the front-end computation (numpy, float64-capable) plus a thin torch
Module for batched float32 work. Every fast front end (torch, DALI, C++) is tested against
these functions; these are tested against librosa with every parameter pinned by
:class:`mmengine.config.FrontendConfig` (whose docstring gives the equivalent librosa call).

Pipeline, per waveform ``(n,)``::

    pad n_fft//2 zeros on both sides (center, pad_mode "constant")
    -> frames (frames, n_fft), hop_length apart
    -> x periodic Hann -> rfft -> |.|**power           (1 + n_fft//2, frames)
    -> Mel filterbank (Slaney or HTK scale, Slaney area norm or none)   (n_mels, frames)
    -> 10*log10(max(S, amin) / db_ref)                 log-Mel in dB, floor 10*log10(amin/db_ref)
    -> orthonormal DCT-II over the Mel axis, first n_mfcc rows          (n_mfcc, frames)

and, when ``cfg.chroma_bins > 0``, the pitch stream from a second, longer STFT of the same
frames (same hop and centring; ``chroma_n_fft`` samples)::

    |STFT|**chroma_power -> chroma filter bank (chroma_bins, 1 + chroma_n_fft//2) -> dB

Shapes: a waveform is ``(n,)`` or ``(..., n)``; outputs are ``(..., n_mels, frames)`` and
``(..., n_mfcc, frames)`` with ``frames = cfg.n_frames(n)``.
"""
from __future__ import annotations

import functools
import math
from typing import Dict, Optional

import numpy as np

from ..config import FrontendConfig

MEL_SCALES = ("slaney", "htk")
MEL_NORMS = ("slaney", None)
PAD_MODES = ("constant", "reflect")
WINDOWS = ("hann",)
CHROMA_BINS = (0, 12)


def check_config(cfg: FrontendConfig) -> FrontendConfig:
    """Validate every field of ``cfg`` once; return it unchanged or raise ``ValueError``."""
    problems = []
    if cfg.sample_rate <= 0:
        problems.append(f"sample_rate must be > 0, got {cfg.sample_rate}")
    if cfg.n_fft < 2:
        problems.append(f"n_fft must be >= 2, got {cfg.n_fft}")
    if cfg.hop_length < 1:
        problems.append(f"hop_length must be >= 1, got {cfg.hop_length}")
    if cfg.window not in WINDOWS:
        problems.append(f"window must be one of {WINDOWS}, got {cfg.window!r}")
    if cfg.pad_mode not in PAD_MODES:
        problems.append(f"pad_mode must be one of {PAD_MODES}, got {cfg.pad_mode!r}")
    if cfg.power <= 0:
        problems.append(f"power must be > 0, got {cfg.power}")
    if cfg.n_mels < 1:
        problems.append(f"n_mels must be >= 1, got {cfg.n_mels}")
    if not 1 <= cfg.n_mfcc <= cfg.n_mels:
        problems.append(f"n_mfcc must be in [1, n_mels={cfg.n_mels}], got {cfg.n_mfcc}")
    fmax = cfg.sample_rate / 2.0 if cfg.fmax is None else cfg.fmax
    if not 0.0 <= cfg.fmin < fmax <= cfg.sample_rate / 2.0:
        problems.append(f"need 0 <= fmin < fmax <= sample_rate/2, got fmin={cfg.fmin}, "
                        f"fmax={fmax}, sample_rate={cfg.sample_rate}")
    if cfg.mel_scale not in MEL_SCALES:
        problems.append(f"mel_scale must be one of {MEL_SCALES}, got {cfg.mel_scale!r}")
    if cfg.mel_norm not in MEL_NORMS:
        problems.append(f"mel_norm must be one of {MEL_NORMS}, got {cfg.mel_norm!r}")
    if cfg.amin <= 0 or cfg.db_ref <= 0:
        problems.append(f"amin and db_ref must be > 0, got {cfg.amin}, {cfg.db_ref}")
    if cfg.chroma_bins not in CHROMA_BINS:
        problems.append(f"chroma_bins must be one of {CHROMA_BINS}, got {cfg.chroma_bins}")
    if cfg.chroma_bins:
        n = cfg.chroma_n_fft
        if n < 16 or n & (n - 1):
            problems.append(f"chroma_n_fft must be a power of two >= 16, got {n}")
        if not cfg.center:
            problems.append("the chroma stream needs center=True (its frames then match the "
                            "Mel's whatever its FFT size)")
        if cfg.chroma_power not in (1.0, 2.0):
            problems.append(f"chroma_power must be 1 or 2, got {cfg.chroma_power}")
        if cfg.chroma_octwidth is not None and not cfg.chroma_octwidth > 0:
            problems.append(f"chroma_octwidth must be > 0 or None, got {cfg.chroma_octwidth}")
    if problems:
        raise ValueError("invalid FrontendConfig: " + "; ".join(problems))
    return cfg


# --------------------------------------------------------------------------- Mel scale
_F_SP = 200.0 / 3  # Slaney: Hz per Mel below the break
_MIN_LOG_HZ = 1000.0
_MIN_LOG_MEL = _MIN_LOG_HZ / _F_SP
_LOGSTEP = math.log(6.4) / 27.0


def _check_scale(scale: str) -> None:
    if scale not in MEL_SCALES:
        raise ValueError(f"mel scale must be one of {MEL_SCALES}, not {scale!r}")


def hz_to_mel(f, *, scale: str = "slaney"):
    """Hz → Mel: Slaney (linear below 1 kHz, logarithmic above) or HTK (2595·log10(1+f/700))."""
    _check_scale(scale)
    f = np.asanyarray(f, dtype=np.float64)
    if scale == "htk":
        return 2595.0 * np.log10(1.0 + f / 700.0)
    log_part = _MIN_LOG_MEL + np.log(np.maximum(f, _MIN_LOG_HZ) / _MIN_LOG_HZ) / _LOGSTEP
    return np.where(f >= _MIN_LOG_HZ, log_part, f / _F_SP)


def mel_to_hz(m, *, scale: str = "slaney"):
    """Mel → Hz, the inverse of :func:`hz_to_mel`."""
    _check_scale(scale)
    m = np.asanyarray(m, dtype=np.float64)
    if scale == "htk":
        return 700.0 * (10.0 ** (m / 2595.0) - 1.0)
    log_part = _MIN_LOG_HZ * np.exp(_LOGSTEP * (np.maximum(m, _MIN_LOG_MEL) - _MIN_LOG_MEL))
    return np.where(m >= _MIN_LOG_MEL, log_part, _F_SP * m)


def mel_band_edges(*, n_mels: int, fmin: float, fmax: float, scale: str) -> np.ndarray:
    """``n_mels + 2`` frequencies (Hz) equally spaced in Mel from fmin to fmax, ``(n_mels+2,)``.

    Band ``m`` rises from point ``m`` to its centre, point ``m + 1``, and falls to ``m + 2``."""
    lo, hi = hz_to_mel(fmin, scale=scale), hz_to_mel(fmax, scale=scale)
    return mel_to_hz(np.linspace(lo, hi, n_mels + 2), scale=scale)


def mel_filterbank(*, sr: int, n_fft: int, n_mels: int, fmin: float = 0.0,
                   fmax: Optional[float] = None, scale: str = "slaney",
                   norm: Optional[str] = "slaney", dtype=np.float64) -> np.ndarray:
    """Triangular Mel filterbank, ``(n_mels, 1 + n_fft // 2)``, computed in float64.

    ``norm="slaney"`` scales band m by ``2 / (f[m+2] - f[m])`` (every band has the same area
    in Hz); ``None`` leaves the peaks at 1. ``fmax=None`` means Nyquist.

    Example::

        >>> mel_filterbank(sr=22050, n_fft=2048, n_mels=128).shape
        (128, 1025)
    """
    if norm not in MEL_NORMS:
        raise ValueError(f"mel norm must be one of {MEL_NORMS}, not {norm!r}")
    fmax = sr / 2.0 if fmax is None else float(fmax)
    fft_freqs = np.linspace(0.0, sr / 2.0, 1 + n_fft // 2)
    edges = mel_band_edges(n_mels=n_mels, fmin=fmin, fmax=fmax, scale=scale)
    widths = np.diff(edges)
    offsets = edges[:, None] - fft_freqs[None, :]
    rising = -offsets[:-2] / widths[:-1, None]
    falling = offsets[2:] / widths[1:, None]
    fb = np.maximum(0.0, np.minimum(rising, falling))
    if norm == "slaney":
        fb *= (2.0 / (edges[2:] - edges[:-2]))[:, None]
    return fb.astype(dtype)


def hann_window(n: int, dtype=np.float64) -> np.ndarray:
    """Periodic Hann window ``0.5 - 0.5 cos(2πk/n)``, ``(n,)`` (scipy ``get_window('hann', n)``)."""
    k = np.arange(n, dtype=np.float64)
    return (0.5 - 0.5 * np.cos(2.0 * np.pi * k / n)).astype(dtype)


def dct_matrix(n_mfcc: int, n_mels: int, dtype=np.float64) -> np.ndarray:
    """Orthonormal DCT-II basis, ``(n_mfcc, n_mels)``: the first rows of
    ``scipy.fft.dct(np.eye(n_mels), type=2, norm="ortho", axis=0)``."""
    k = np.arange(n_mfcc, dtype=np.float64)[:, None]
    n = np.arange(n_mels, dtype=np.float64)[None, :]
    basis = np.cos(np.pi * k * (2.0 * n + 1.0) / (2.0 * n_mels)) * np.sqrt(2.0 / n_mels)
    basis[0] /= np.sqrt(2.0)
    return basis.astype(dtype)


def chroma_filterbank(*, sr: int, n_fft: int, n_chroma: int = 12, ctroct: float = 5.0,
                      octwidth: Optional[float] = 2.0, dtype=np.float64) -> np.ndarray:
    """Chroma filter bank, ``(n_chroma, 1 + n_fft // 2)``, computed in float64; row 0 is C.

    The definition of ``librosa.filters.chroma`` (tuning 0, L2 column norm, ``base_c``), from
    its documented construction: FFT bin ``k > 0`` sits at ``q_k = n_chroma·log2(f_k / 27.5)``
    chroma steps above A0 = 27.5 Hz (bin 0 is given ``q_1 − 1.5·n_chroma``); chroma ``c`` (counted
    from A) weighs it with a Gaussian bump ``exp(−(2·d / w_k)² / 2)`` of the circular distance
    ``d`` from ``q_k`` to ``c`` (in ``[−n_chroma/2, n_chroma/2)``) and the width ``w_k =
    max(q_{k+1} − q_k, 1)``; each column is scaled to unit L2 norm, then multiplied by the
    octave weight ``exp(−((q_k / n_chroma − ctroct) / octwidth)² / 2)`` (none when
    ``octwidth`` is None) and the rows are rotated so that row 0 is C.

    Example::

        >>> chroma_filterbank(sr=22050, n_fft=8192).shape
        (12, 4097)
    """
    if n_chroma < 1 or n_fft < 2:
        raise ValueError(f"need n_chroma >= 1 and n_fft >= 2, got {n_chroma}, {n_fft}")
    n_bins = 1 + n_fft // 2
    freqs = np.arange(1, n_bins + 1, dtype=np.float64) * (sr / n_fft)  # bins 1..n_bins
    q = n_chroma * np.log2(freqs / 27.5)
    q = np.concatenate(([q[0] - 1.5 * n_chroma], q))  # (n_bins + 1,): bin 0 .. n_bins
    width = np.maximum(np.diff(q), 1.0)  # (n_bins,)
    q = q[:n_bins]
    half = float(np.round(n_chroma / 2.0))
    d = np.remainder(q[None, :] - np.arange(n_chroma)[:, None] + half + 10 * n_chroma,
                     n_chroma) - half
    w = np.exp(-0.5 * (2.0 * d / width[None, :]) ** 2)
    w /= np.sqrt((w * w).sum(axis=0, keepdims=True))
    if octwidth is not None:
        w *= np.exp(-0.5 * ((q / n_chroma - ctroct) / octwidth) ** 2)[None, :]
    w = np.roll(w, -3 * (n_chroma // 12), axis=0)
    return np.ascontiguousarray(w, dtype=dtype)


# ------------------------------------------------------------------------ spectrogram
def frame_signal(y: np.ndarray, *, n_fft: int, hop_length: int, center: bool,
                 pad_mode: str) -> np.ndarray:
    """Frames of ``y`` ``(..., n)`` → ``(..., frames, n_fft)`` (a strided view of the padded copy)."""
    if center:
        pad = [(0, 0)] * (y.ndim - 1) + [(n_fft // 2, n_fft // 2)]
        y = np.pad(y, pad, mode=pad_mode)
    if y.shape[-1] < n_fft:
        raise ValueError(f"signal of {y.shape[-1]} samples is shorter than n_fft={n_fft} "
                         "(use center=True for short signals)")
    frames = np.lib.stride_tricks.sliding_window_view(y, n_fft, axis=-1)
    return frames[..., ::hop_length, :]


def power_spectrogram(y: np.ndarray, *, n_fft: int, hop_length: int, window: str = "hann",
                      center: bool = True, pad_mode: str = "constant",
                      power: float = 2.0) -> np.ndarray:
    """``|STFT(y)|**power``: ``(..., n)`` → ``(..., 1 + n_fft // 2, frames)``.

    The result is float64 when ``y`` is float64, else float32; the window and FFT always run
    in float64 (as librosa's do): a float32 FFT's rounding noise sits ~140 dB under the
    spectrum's peak and would put quiet bins of tonal signals off by whole dB. Items along
    the leading axes are transformed one at a time so the framed copy stays small (~20 MB
    for a 30 s clip at 22.05 kHz)."""
    if window not in WINDOWS:
        raise ValueError(f"window must be one of {WINDOWS} (periodic), not {window!r}")
    if pad_mode not in PAD_MODES:
        raise ValueError(f"pad_mode must be one of {PAD_MODES}, not {pad_mode!r}")
    y = np.asarray(y)
    dtype = np.float64 if y.dtype == np.float64 else np.float32
    import scipy.fft  # here, not at import: the native front end needs only the matrices

    y = y.astype(np.float64, copy=False)
    lead, n = y.shape[:-1], y.shape[-1]
    win = hann_window(n_fft)
    items = y.reshape(-1, n)
    out = None
    for i, item in enumerate(items):
        frames = frame_signal(item, n_fft=n_fft, hop_length=hop_length, center=center,
                              pad_mode=pad_mode)
        mag = np.abs(scipy.fft.rfft(frames * win, axis=-1))
        spec = (mag * mag if power == 2.0 else mag**power).T
        if out is None:
            out = np.empty((items.shape[0],) + spec.shape, dtype=dtype)
        out[i] = spec
    if out is None:  # no items (a leading axis of size 0)
        n_frames = frame_signal(np.zeros(n), n_fft=n_fft, hop_length=hop_length,
                                center=center, pad_mode=pad_mode).shape[0]
        out = np.empty((0, 1 + n_fft // 2, n_frames), dtype=dtype)
    return out.reshape(lead + out.shape[1:])


def power_to_db(S: np.ndarray, *, amin: float, ref: float = 1.0) -> np.ndarray:
    """``10·log10(max(S, amin) / ref)``: an absolute floor at ``10·log10(amin / ref)`` dB.

    Same as ``librosa.power_to_db(S, ref=ref, amin=amin, top_db=None)`` for ``ref >= amin``."""
    return 10.0 * np.log10(np.maximum(S, amin)) - 10.0 * np.log10(ref)


def log_mel(y: np.ndarray, cfg: FrontendConfig = FrontendConfig()) -> np.ndarray:
    """Log-Mel spectrogram in dB of ``y`` ``(..., n)`` → ``(..., n_mels, frames)``.

    float64 in, float64 out; anything else is computed in float32."""
    check_config(cfg)
    S = power_spectrogram(y, n_fft=cfg.n_fft, hop_length=cfg.hop_length, window=cfg.window,
                          center=cfg.center, pad_mode=cfg.pad_mode, power=cfg.power)
    fb = mel_filterbank(sr=cfg.sample_rate, n_fft=cfg.n_fft, n_mels=cfg.n_mels, fmin=cfg.fmin,
                        fmax=cfg.fmax, scale=cfg.mel_scale, norm=cfg.mel_norm, dtype=S.dtype)
    db = power_to_db(np.matmul(fb, S), amin=cfg.amin, ref=cfg.db_ref)
    return db.astype(S.dtype, copy=False)


def chroma(y: np.ndarray, cfg: FrontendConfig) -> np.ndarray:
    """The pitch stream of ``y`` ``(..., n)``: chroma in dB, ``(..., chroma_bins, frames)``.

    ``10·log10(max(F·|STFT(y)|**chroma_power, amin) / db_ref)`` with ``F`` the chroma filter
    bank (:func:`chroma_filterbank`) and the STFT of ``chroma_n_fft`` samples at the Mel's hop
    and centring. float64 in, float64 out; anything else float32."""
    check_config(cfg)
    if not cfg.chroma_bins:
        raise ValueError("this FrontendConfig has no chroma stream (chroma_bins=0)")
    S = power_spectrogram(y, n_fft=cfg.chroma_n_fft, hop_length=cfg.hop_length,
                          window=cfg.window, center=True, pad_mode=cfg.pad_mode,
                          power=cfg.chroma_power)
    fb = chroma_filterbank(sr=cfg.sample_rate, n_fft=cfg.chroma_n_fft, n_chroma=cfg.chroma_bins,
                           ctroct=cfg.chroma_ctroct, octwidth=cfg.chroma_octwidth,
                           dtype=S.dtype)
    db = power_to_db(np.matmul(fb, S), amin=cfg.amin, ref=cfg.db_ref)
    return db.astype(S.dtype, copy=False)


def mfcc_from_log_mel(logmel: np.ndarray, n_mfcc: int) -> np.ndarray:
    """Orthonormal DCT-II over the Mel axis: ``(..., n_mels, frames)`` → ``(..., n_mfcc, frames)``."""
    logmel = np.asarray(logmel)
    if not 1 <= n_mfcc <= logmel.shape[-2]:
        raise ValueError(f"n_mfcc must be in [1, {logmel.shape[-2]}], got {n_mfcc}")
    dtype = np.float64 if logmel.dtype == np.float64 else np.float32
    basis = dct_matrix(n_mfcc, logmel.shape[-2], dtype=dtype)
    return np.matmul(basis, logmel.astype(dtype, copy=False))


def compute_features(y: np.ndarray, cfg: FrontendConfig = FrontendConfig(), *,
                     dtype=np.float32) -> Dict[str, np.ndarray]:
    """Log-Mel (dB) and MFCC of a waveform ``(n,)`` or a batch ``(B, n)`` (any leading axes).

    Args:
        y: waveform(s) at ``cfg.sample_rate``.
        cfg: front-end settings.
        dtype: np.float32 (default) or np.float64 (every step in float64).

    Returns:
        ``{"logmel": (..., n_mels, frames), "mfcc": (..., n_mfcc, frames)}`` in ``dtype``,
        ``frames = cfg.n_frames(n)``, and ``"chroma": (..., chroma_bins, frames)`` when
        ``cfg.chroma_bins > 0``.

    Example::

        >>> y = np.sin(2 * np.pi * 440 * np.arange(22050) / 22050)
        >>> f = compute_features(y)
        >>> f["logmel"].shape, f["mfcc"].shape
        ((128, 44), (20, 44))
    """
    if np.dtype(dtype) not in (np.dtype(np.float32), np.dtype(np.float64)):
        raise ValueError(f"dtype must be float32 or float64, got {dtype}")
    y = np.asarray(y, dtype=dtype)
    lm = log_mel(y, cfg)
    out = {"logmel": lm, "mfcc": mfcc_from_log_mel(lm, cfg.n_mfcc)}
    if cfg.chroma_bins:
        out["chroma"] = chroma(y, cfg)
    return out


# ------------------------------------------------------------------------ torch module
@functools.lru_cache(maxsize=None)
def _torch_module_class():
    import torch

    class LogMelMFCC(torch.nn.Module):
        """Batched torch front end with the reference's parameters.

        ``forward(y)``: waveform ``(n,)`` or ``(B, n)`` → ``(logmel, mfcc)`` of shapes
        ``(..., n_mels, frames)`` and ``(..., n_mfcc, frames)``; ``chroma(y)`` → the pitch
        stream ``(..., chroma_bins, frames)`` when the config has one. The window, filterbank and
        DCT matrix are buffers built in float64 and stored in ``dtype`` (pass
        ``dtype=torch.float64`` for a float64 module; ``.double()`` would only widen the
        float32-rounded buffers). The config is checked once, here.
        """

        def __init__(self, cfg: FrontendConfig = FrontendConfig(), *, dtype=None):
            super().__init__()
            self.cfg = check_config(cfg)
            dtype = torch.float32 if dtype is None else dtype
            fb = mel_filterbank(sr=cfg.sample_rate, n_fft=cfg.n_fft, n_mels=cfg.n_mels,
                                fmin=cfg.fmin, fmax=cfg.fmax, scale=cfg.mel_scale,
                                norm=cfg.mel_norm)
            self.register_buffer("window", torch.from_numpy(hann_window(cfg.n_fft)).to(dtype))
            self.register_buffer("fb", torch.from_numpy(fb).to(dtype))
            self.register_buffer("dct", torch.from_numpy(dct_matrix(cfg.n_mfcc, cfg.n_mels)).to(dtype))
            self.db_offset = 10.0 * math.log10(cfg.db_ref)
            if cfg.chroma_bins:  # the pitch stream's own window and filter bank
                cfb = chroma_filterbank(sr=cfg.sample_rate, n_fft=cfg.chroma_n_fft,
                                        n_chroma=cfg.chroma_bins, ctroct=cfg.chroma_ctroct,
                                        octwidth=cfg.chroma_octwidth)
                self.register_buffer("chroma_window",
                                     torch.from_numpy(hann_window(cfg.chroma_n_fft)).to(dtype))
                self.register_buffer("chroma_fb", torch.from_numpy(cfb).to(dtype))

        def _power(self, y, n_fft, window, power):
            c = self.cfg
            if c.center:
                y = torch.nn.functional.pad(y, (n_fft // 2, n_fft // 2), mode=c.pad_mode)
            mag = torch.stft(y[:, 0], n_fft, c.hop_length, window=window, center=False,
                             return_complex=True).abs()
            return mag * mag if power == 2.0 else mag.pow(power)

        def chroma(self, y):
            """The pitch stream: waveform ``(n,)`` or ``(B, n)`` → chroma in dB, ``(...,
            chroma_bins, frames)`` (the reference's :func:`chroma`)."""
            c = self.cfg
            if not c.chroma_bins:
                raise ValueError("this front end has no chroma stream (chroma_bins=0)")
            lead, n = y.shape[:-1], y.shape[-1]
            y = y.reshape(-1, 1, n).to(self.window.dtype)
            S = self._power(y, c.chroma_n_fft, self.chroma_window, c.chroma_power)
            ch = 10.0 * torch.log10(torch.clamp(self.chroma_fb @ S, min=c.amin)) - self.db_offset
            return ch.reshape(lead + ch.shape[1:])

        def forward(self, y):
            c = self.cfg
            lead, n = y.shape[:-1], y.shape[-1]
            y = y.reshape(-1, 1, n).to(self.window.dtype)
            S = self._power(y, c.n_fft, self.window, c.power)
            lm = 10.0 * torch.log10(torch.clamp(self.fb @ S, min=c.amin)) - self.db_offset
            mf = self.dct @ lm
            return lm.reshape(lead + lm.shape[1:]), mf.reshape(lead + mf.shape[1:])

    return LogMelMFCC


def __getattr__(name):  # lazy: importing this module does not import torch
    if name == "LogMelMFCC":
        return _torch_module_class()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
