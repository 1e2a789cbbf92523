"""Helpers that write small real audio files (and broken ones on purpose) for tests.

The format follows the extension (``.wav``, ``.flac``, ``.ogg`` = Vorbis, ``.mp3``) unless
``fmt``/``subtype`` are given (soundfile names, e.g. ``fmt="WAV", subtype="FLOAT"``). Keep files
short (<= 2 s): every helper refuses longer ones.
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional, Union

import numpy as np
import soundfile as sf

MAX_SECONDS = 2.0
PathLike = Union[str, Path]


def tone(freq: float = 440.0, sr: int = 22050, seconds: float = 1.0,
         amplitude: float = 0.5) -> np.ndarray:
    """Sine wave ``amplitude * sin(2π f t)``: (round(seconds * sr),) float64."""
    t = np.arange(int(round(seconds * sr))) / sr
    return amplitude * np.sin(2 * np.pi * freq * t)


def write_audio(path: PathLike, data: np.ndarray, sr: int, *, fmt: Optional[str] = None,
                subtype: Optional[str] = None) -> Path:
    """Write ``data`` (n,) or (n, channels) at ``sr`` Hz; returns the path."""
    path = Path(path)
    if len(data) > MAX_SECONDS * sr:
        raise ValueError(f"test audio must be <= {MAX_SECONDS} s, got {len(data) / sr:.2f} s")
    sf.write(str(path), data, sr, format=fmt, subtype=subtype)
    return path


def write_tone(path: PathLike, *, freq: float = 440.0, sr: int = 22050, seconds: float = 1.0,
               channels: int = 1, fmt: Optional[str] = None, subtype: Optional[str] = None,
               amplitude: float = 0.5) -> Path:
    """Write a sine tone, the same in every channel."""
    y = tone(freq, sr, seconds, amplitude)
    data = y if channels == 1 else np.repeat(y[:, None], channels, axis=1)
    return write_audio(path, data, sr, fmt=fmt, subtype=subtype)


def write_noise(path: PathLike, *, sr: int = 22050, seconds: float = 1.0, channels: int = 1,
                fmt: Optional[str] = None, subtype: Optional[str] = None,
                amplitude: float = 0.5, seed: int = 0) -> Path:
    """Write uniform white noise in ``[-amplitude, amplitude]``, independent per channel."""
    rng = np.random.default_rng(seed)
    n = int(round(seconds * sr))
    data = rng.uniform(-amplitude, amplitude, n if channels == 1 else (n, channels))
    return write_audio(path, data, sr, fmt=fmt, subtype=subtype)


def write_truncated(src: PathLike, dst: PathLike, fraction: float = 0.5) -> Path:
    """Copy the first ``fraction`` of ``src``'s bytes to ``dst`` (a file cut mid-stream)."""
    data = Path(src).read_bytes()
    dst = Path(dst)
    dst.write_bytes(data[:int(len(data) * fraction)])
    return dst


def write_garbage(path: PathLike, n_bytes: int = 4096, seed: int = 0) -> Path:
    """Random bytes (never starting with 0xFF, so no accidental MPEG frame sync)."""
    rng = np.random.default_rng(seed)
    data = rng.integers(0, 255, n_bytes, dtype=np.uint8)
    path = Path(path)
    path.write_bytes(data.tobytes())
    return path


def write_nonfinite_wav(path: PathLike, *, sr: int = 22050, seconds: float = 0.5,
                        value: float = float("nan"), at: int = 100) -> Path:
    """A 32-bit float WAV tone with ``value`` (NaN or ±Inf) at sample ``at``."""
    y = tone(440.0, sr, seconds).astype(np.float32)
    y[at] = value
    return write_audio(path, y, sr, fmt="WAV", subtype="FLOAT")


def parity_signals(rng: np.random.Generator, sr: int = 22050, seconds: float = 2.0) -> dict:
    """Front-end parity signals, float32: broadband ("noise", "mixture": tones + noise + a
    square wave) and tonal ("tone" 440 Hz, "chirp" 100 Hz → ~8 kHz)."""
    n = int(seconds * sr)
    t = np.arange(n) / sr
    sig = {
        "noise": 0.1 * rng.standard_normal(n),
        "tone": 0.5 * np.sin(2 * np.pi * 440.0 * t),
        "chirp": 0.3 * np.sin(2 * np.pi * (100.0 + 2000.0 * t) * t),
        "mixture": 0.2 * np.sin(2 * np.pi * 220.0 * t) + 0.05 * rng.standard_normal(n)
        + 0.1 * np.sign(np.sin(2 * np.pi * 3.0 * t)),
    }
    return {k: v.astype(np.float32) for k, v in sig.items()}


def reference_diff(out: dict, y: np.ndarray, cfg, what: str, *, broadband: bool):
    """A front end's ``out`` for waveform ``y`` against the float64 reference front end.

    Asserts the shapes ((n_mels, T), (n_mfcc, T)) and float32 dtype; returns ``(d, dm, keep)``:
    |log-Mel difference| in dB, |MFCC difference|, and the log-Mel bins that count (every bin
    for a broadband signal, else those within 100 dB of the clip's peak in power terms, i.e.
    50 dB for a magnitude spectrum: float32 FFT noise sits ~140 dB under the peak).
    """
    from mmengine.features.reference import compute_features

    ref = compute_features(y.astype(np.float64), cfg, dtype=np.float64)
    frames = cfg.n_frames(y.size)
    assert out["logmel"].shape == ref["logmel"].shape == (cfg.n_mels, frames), what
    assert out["mfcc"].shape == ref["mfcc"].shape == (cfg.n_mfcc, frames), what
    assert out["logmel"].dtype == np.float32 and out["mfcc"].dtype == np.float32
    d = np.abs(out["logmel"] - ref["logmel"])
    dm = np.abs(out["mfcc"] - ref["mfcc"])
    span = 100.0 * cfg.power / 2.0
    keep = np.ones_like(d, bool) if broadband else ref["logmel"] > ref["logmel"].max() - span
    return d, dm, keep


def assert_silence_on_reference_floor(compute, chroma: bool = True) -> None:
    """``compute(cfg, waves) -> outputs`` turns 1 s of silence into the reference's floor,
    10 log10(amin / db_ref) dB, on every bin, with finite MFCCs (default and db_ref 10), and
    the chroma too where the front end computes one (``chroma=False``: configs without it)."""
    from mmengine.config import FrontendConfig

    bins = 12 if chroma else 0
    for cfg in (FrontendConfig(chroma_bins=bins), FrontendConfig(db_ref=10.0, chroma_bins=bins)):
        out = compute(cfg, [np.zeros(22050, np.float32)])[0]
        floor = 10 * np.log10(cfg.amin / cfg.db_ref)
        assert np.isfinite(out["mfcc"]).all()
        assert np.abs(out["logmel"] - floor).max() <= 1e-4, (cfg.db_ref, out["logmel"].min())
        if chroma:
            assert np.abs(out["chroma"] - floor).max() <= 1e-4, (cfg.db_ref, out["chroma"].min())
