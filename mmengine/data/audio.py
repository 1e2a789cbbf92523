"""Audio input: any file libsndfile reads -> a mono float32 waveform at one sample rate.

Pipeline of :func:`load_audio`::

    decode              ->  (n, 1) float32 at the file's rate, the channels mixed (mean) while
                            decoding, one block (one FLAC frame) of every channel at a time,
                            checked (see below): FLAC by our C++ decoder
                            (``mmengine._C.decode_flac``, frame CRCs and length checked,
                            bit-identical to libsndfile, ~2.7x faster); everything else, and
                            any FLAC it refuses, by soundfile/libsndfile
    to_mono             ->  (n,) (a view)
    resample (soxr)     ->  (m,) at ``AudioConfig.sample_rate``, quality ``resample_quality``
    peak_safe           ->  if max|y| > 1.0 the whole signal is scaled down to peak 1.0
                            (never clipped); otherwise levels are left unchanged

Levels are otherwise untouched (no loudness normalisation): a quiet file stays quiet.

:class:`WindowStream` runs the same pipeline block by block and cuts the windows of
:func:`windows` as it goes (what ``Engine.classify`` uses for files): bit-identical windows,
the same checks and errors, and a decoding thread holds one block, the resampler's state and
one window instead of the whole file (a file whose peak passes 1.0 is streamed twice).

Errors (subclasses of :class:`~mmengine.errors.AudioError`; messages name the file and why):

- ``AudioMissingError``: no such file, or the path is a directory.
- ``AudioEmptyError``: 0 bytes.
- ``AudioTruncatedError``: the file ends before its own structure says it should (a WAV
  ``data`` chunk longer than the bytes present; an Ogg page cut short or a stream without its
  end-of-stream page; FLAC metadata cut short or no audio frames after it; an MPEG frame cut
  short), fewer frames decode than the header announces (FLAC STREAMINFO, MP3 Xing/Info), or
  the decoder fails part-way through.
- ``AudioCorruptError``: libsndfile cannot open the file although its extension or its first
  bytes say it is a format libsndfile reads; a WAV whose header was never finalised.
- ``AudioUnsupportedFormatError``: libsndfile cannot open the file, and its first bytes are
  those of a format libsndfile cannot decode (MP4/M4A/AAC, WMA, Matroska/WebM, ...) or its
  extension is not in :data:`KNOWN_EXTENSIONS`; or an MP3 whose MPEG frames hold far more
  audio than libsndfile decodes (VBR without a Xing/Info header: libsndfile 1.2.2 stops after
  15-45 % of it, measured).
- ``AudioZeroLengthError``: a valid file holding no samples.
- ``AudioNonFiniteError``: NaN or Inf samples (float WAV, ...).
- ``AudioTooLongError``: longer than the limit, decided from the header before decoding (a
  FLAC stream whose STREAMINFO gives no length is counted frame by frame by the C++ decoder,
  and a libsndfile stream without a length block by block into one reused buffer, against
  the limit, before its samples are kept).
- ``AudioLimitError`` (the base of ``AudioTooLongError``): the file is outside another of
  ``InputLimits``: more than ``max_file_bytes``, a sample rate outside
  ``min_sample_rate..max_sample_rate`` (0 included), more than ``max_channels``, or more
  than ``max_decoded_bytes`` of float32 samples at its own rate; decided from the file's size
  and header before anything is decoded.

Format rule: libsndfile picks the decoder from the content, never from the name, so a WAV
named ``x.bin`` loads. The extension only matters when libsndfile refuses the file: a known
audio extension means "this should have been audio" (corrupt), any other means "not a format
we read" (unsupported).

Why the structural checks (measured with libsndfile 1.2.2): a cut WAV loads silently with
fewer frames; a cut FLAC fails to read ("lost sync"); a cut Ogg Vorbis fails to open or opens
with 0 frames; a cut MP3 with a Xing/Info header decodes fewer frames than it announces.
libsndfile never reads past the frame count it reports. mpg123 prints its warnings about
damaged MP3 streams straight to stderr.

Where it lives: this module holds the whole-file API (:func:`decode`, :func:`load_audio`,
:func:`load_batch`); ``waveform.py`` the arithmetic after decoding (:func:`to_mono`,
:func:`resample`, :func:`peak_safe`, :func:`loop_to_length`, :func:`windows`);
``audio_stream.py`` the streamed path (:class:`WindowStream`, :func:`stream_windows`);
``audio_decoders.py`` the readers and checks both paths share. Every public name is importable
from here.
"""
from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Iterable, List, Optional, Tuple

import numpy as np

from ..config import AudioConfig, InputLimits
from ..errors import AudioError, AudioNonFiniteError, AudioZeroLengthError
from .audio_decoders import (  # noqa: F401 (_decode_flac_native: tests patch it here)
    _UNKNOWN_FRAMES, PathLike, _check_decoded, _check_frames, _checked_file, _decode_flac_native,
    _frame_limit, _open, _read_known_length, _read_unknown_length)
from .audio_stream import WindowStream, stream_windows  # noqa: F401 (API)
from .containers import KNOWN_EXTENSIONS, _structure_error  # noqa: F401 (API, tests)
from .waveform import loop_to_length, peak_safe, resample, to_mono, windows  # noqa: F401 (API)


def decode(path: PathLike, *, max_duration_s: Optional[float] = None,
           limits: Optional[InputLimits] = None, mono: bool = False
           ) -> Tuple[np.ndarray, int]:
    """Decode a file as it is stored, with every check of the module docstring.

    Args:
        path: audio file (format detected from content).
        max_duration_s: refuse files longer than this (from the header, before decoding);
            None = ``limits.max_seconds``.
        limits: bytes, sample rate, channels and decoded-size limits (default
            ``InputLimits()``), checked before decoding.
        mono: mix the channels while decoding (one block, or one FLAC frame, of every
            channel held at a time): ``y`` is (n, 1), equal to ``to_mono`` of the full
            decode.

    Returns:
        ``(y, sr)``: ``y`` (n, channels) float32 (PCM scaled to [-1, 1), float files as
        stored), ``sr`` the file's sample rate in Hz.

    Raises:
        AudioError: one of the subclasses listed in the module docstring.
    """
    limits = limits or InputLimits()
    if max_duration_s is None:
        max_duration_s = limits.max_seconds
    path_s = _checked_file(path, limits)
    kind, fast, f = _open(path_s, lambda: _decode_flac_native(path_s, max_duration_s, limits, mono))
    if fast is not None:
        return fast
    with f:
        sr, channels, fmt = f.samplerate, f.channels, f.format
        header_frames = f.frames if 0 <= f.frames < _UNKNOWN_FRAMES else None
        limit = _frame_limit(path_s, sr, channels, max_duration_s, limits)
        if header_frames is not None:
            _check_frames(path_s, header_frames, sr, channels, max_duration_s, limits)
            y, failure = _read_known_length(f, header_frames, mono)
        else:
            y, failure = _read_unknown_length(path_s, f, limit, max_duration_s, mono)
    _check_decoded(path_s, kind, fmt, sr, channels, header_frames, len(y), failure)
    bad = ~np.isfinite(y)
    if bad.any():
        first = int(np.argmax(bad.any(axis=1)))
        raise AudioNonFiniteError(
            path_s, f"{int(bad.sum())} non-finite sample(s), first at frame {first}")
    return y, sr


def load_audio(path: PathLike, cfg: Optional[AudioConfig] = None, *,
               max_duration_s: Optional[float] = None,
               limits: Optional[InputLimits] = None) -> np.ndarray:
    """Decode, mix to mono, resample to ``cfg.sample_rate`` and make peak-safe.

    Args:
        path: audio file in any format libsndfile reads (WAV, FLAC, OGG, MP3, AIFF, ...).
        cfg: target rate, resample quality and default duration limit (default ``AudioConfig()``).
        max_duration_s: duration limit in seconds; None uses the smaller of
            ``cfg.max_duration_s`` and ``limits.max_seconds`` (pass ``math.inf`` for no
            limit but ``limits.max_decoded_bytes``).
        limits: the other input limits (default ``InputLimits()``).

    Returns:
        (n,) float32 at ``cfg.sample_rate``, ``max|y| <= 1.0``.

    Raises:
        AudioError: a subclass naming the file and the reason (see the module docstring).
    """
    cfg = cfg or AudioConfig()
    limits = limits or InputLimits()
    limit = (min(cfg.max_duration_s, limits.max_seconds) if max_duration_s is None
             else max_duration_s)
    y, sr = decode(path, max_duration_s=limit, limits=limits, mono=True)  # (n, 1)
    n_in = len(y)
    mono = to_mono(y)  # a view
    del y  # each stage's input is released as soon as the next exists (peak: two stages)
    out = resample(mono, sr, cfg.sample_rate, cfg.resample_quality)
    del mono
    out = peak_safe(out)
    if out.size == 0:
        raise AudioZeroLengthError(path, f"{n_in} frame(s) at {sr} Hz resample to nothing")
    return np.ascontiguousarray(out)


@dataclass
class LoadResult:
    """One item of :func:`load_batch`: exactly one of ``audio`` (n,) float32 and ``error``."""

    path: str
    audio: Optional[np.ndarray]
    error: Optional[AudioError]

    @property
    def ok(self) -> bool:
        return self.error is None


def load_batch(paths: Iterable[PathLike], cfg: Optional[AudioConfig] = None, *,
               progress: bool = True, workers: int = 1) -> List[LoadResult]:
    """Load many files with :func:`load_audio`, one :class:`LoadResult` per path, in order.

    An ``AudioError`` of one file is captured in its result and loading goes on; any other
    exception is a bug and propagates.

    Args:
        paths: audio files.
        cfg: as for :func:`load_audio`.
        progress: show a tqdm progress bar.
        workers: threads decoding in parallel (libsndfile and soxr release the GIL).

    Returns:
        list of ``LoadResult`` (``audio`` (n,) float32 or ``error``), same order as ``paths``.
    """
    from tqdm import tqdm

    paths = [os.fspath(p) for p in paths]
    cfg = cfg or AudioConfig()
    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")

    def one(p: str) -> LoadResult:
        try:
            return LoadResult(p, load_audio(p, cfg), None)
        except AudioError as exc:
            return LoadResult(p, None, exc)

    results = []
    with tqdm(total=len(paths), disable=not progress, unit="file", desc="audio") as bar, \
            ThreadPoolExecutor(max_workers=workers) as pool:
        for r in (pool.map(one, paths) if workers > 1 else map(one, paths)):
            results.append(r)
            bar.update(1)
    return results
