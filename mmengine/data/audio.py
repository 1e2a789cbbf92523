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
"""
from __future__ import annotations

import math
import mmap
import os
import stat
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Iterator, List, Optional, Tuple, Union

import numpy as np
import soundfile as sf
import soxr

from ..config import AudioConfig, InputLimits
from ..errors import (
    AudioEmptyError,
    AudioError,
    AudioLimitError,
    AudioMissingError,
    AudioNonFiniteError,
    AudioTooLongError,
    AudioTruncatedError,
    AudioUnsupportedFormatError,
    AudioZeroLengthError,
)

from .containers import (  # noqa: F401 (KNOWN_EXTENSIONS and _structure_error: API, tests)
    KNOWN_EXTENSIONS, _MPEG_SLACK_FRAMES, _classify_unopenable, _head, _mpeg_scan, _sf_reason,
    _sniff, _streaminfo_rate_total, _structure_error)

PathLike = Union[str, os.PathLike]


#: frames decoded per read call (bounded so a mid-stream failure can say where it happened)
_BLOCK_FRAMES = 1 << 18
#: libsndfile reports SF_COUNT_MAX frames when a header gives no length
_UNKNOWN_FRAMES = 1 << 62


# ----------------------------------------------------------------------------- public API


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


def _checked_file(path: PathLike, limits: InputLimits) -> str:
    """``path`` as a str once it is known to be a regular, non-empty file within
    ``limits.max_file_bytes`` (``AudioMissingError``, ``AudioEmptyError``,
    ``AudioLimitError``)."""
    path_s = os.fspath(path)
    try:
        st = os.stat(path_s)
    except FileNotFoundError:
        raise AudioMissingError(path_s) from None
    except ValueError as exc:  # a NUL byte in the name: no such file can exist
        raise AudioMissingError(path_s, str(exc)) from None
    except OSError as exc:
        raise AudioError(path_s, exc.strerror or str(exc)) from None
    if not stat.S_ISREG(st.st_mode):
        what = "a directory" if stat.S_ISDIR(st.st_mode) else "not a regular file"
        raise AudioMissingError(path_s, f"path is {what}")
    if st.st_size == 0:
        raise AudioEmptyError(path_s)
    if st.st_size > limits.max_file_bytes:
        raise AudioLimitError(path_s, f"{st.st_size} bytes > {limits.max_file_bytes}",
                              "max_file_bytes")
    return path_s


def _check_decoded(path_s: str, kind: Optional[str], fmt: str, sr: int, channels: int,
                   header_frames: Optional[int], n: int, failure: Optional[str]) -> None:
    """The checks of a libsndfile decode of ``n`` frames (``failure``: the reason it stopped
    early, or None), in :func:`decode`'s order: the decoder's failure or the container's
    structure, an MP3 under-read, fewer frames than the header announces, no frames."""
    expected, spf, xing = 0, 1, False
    if kind == "mp3":
        problem, expected, spf, xing = _mpeg_scan(path_s)
        structure = None if problem is None else AudioTruncatedError(path_s, problem)
    else:
        structure = _structure_error(path_s, kind)
    if failure is not None:
        raise structure or AudioTruncatedError(
            path_s, f"{fmt} decoder failed after {n} frames: {failure}")
    if structure is not None:
        raise structure
    if kind == "mp3" and expected - n > _MPEG_SLACK_FRAMES * spf:
        raise AudioUnsupportedFormatError(
            path_s, f"libsndfile decoded {n} of the ~{expected} frames this MPEG stream holds "
            "(it under-reads MP3 streams without an exact Xing/Info frame count, e.g. VBR)")
    exact_header = fmt != "MP3" or xing  # an MP3 length without Xing/Info is an estimate
    if header_frames is not None and n < header_frames and exact_header:
        raise AudioTruncatedError(
            path_s, f"header announces {header_frames} frames, {n} could be decoded")
    if n == 0:
        raise AudioZeroLengthError(path_s, f"{fmt}, {sr} Hz, {channels} channel(s)")


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


# ----------------------------------------------------------------------------- streaming

#: frames decoded per block by :class:`WindowStream` (64 Ki frames: 256 KiB per channel)
_STREAM_FRAMES = 1 << 16
#: bytes of a memory-mapped FLAC file read before the pages behind the decoder are dropped
_RELEASE_BYTES = 1 << 22


class _NativeRefused(Exception):
    """The C++ FLAC decoder refused the stream part-way: decode it again with libsndfile (as
    :func:`decode` does when ``decode_flac`` refuses a file)."""


class WindowStream:
    """The windows of ``windows(load_audio(path, cfg, ...), window)``, decoded block by block.

    Iterating yields ``(index, window)``: ``window`` (``window``,) float32, a new array each
    time. A decoding thread holds one block of the file (``block_frames`` frames of every
    channel, or one FLAC frame), the resampler's state and one window, whatever the file's
    length; a FLAC file is memory-mapped and the pages behind the decoder are dropped every
    few MB.

    Pipeline per block: decode (the C++ FLAC decoder frame by frame, ``mmengine._C.FlacStream``;
    everything else, and any FLAC it refuses, by libsndfile block by block) -> mix the
    channels (the mean, as :func:`to_mono`) -> ``soxr.ResampleStream`` (quality
    ``cfg.resample_quality``; bit-identical to the one-shot :func:`resample`, measured on every
    block size tried) -> cut into windows by the rule of :func:`windows` (hop = ``window``): full
    windows at 0, n, 2n, ...; a tail of at least ``ceil(n / 2)`` samples looped to ``n``; a file
    no longer than one window gives one looped window.

    Restarts: the index goes back to 0 when the windows already yielded are void, and those
    from there on replace them (a consumer keeps ``out[:index]`` and appends):

    - :func:`peak_safe` scales the whole file by ``1 / peak`` when its peak passes 1.0, which
      is known only at its end: the file is then streamed a second time with that scale (a
      float file above full scale, or a full-scale file whose resampling overshoots; the cost
      is decoding and resampling it twice).
    - The C++ FLAC decoder refuses a stream part-way: it is decoded again by libsndfile, whose
      checks name the problem (as :func:`decode` falls back).

    The windows, once iteration ends without an error, are bit-identical to
    ``windows(load_audio(path, cfg, max_duration_s=..., limits=...), window)``. Every limit and
    check of :func:`load_audio` applies with the same ``AudioError`` subclass: those the header
    decides before the first block, the others (a length found while decoding, a decoder's
    failure, a cut container, non-finite samples: no window is yielded after the first of
    them) while or after streaming; windows yielded before an error are void.

    Each iteration streams the file anew. Attributes (after a complete iteration):
        samples: length of the whole resampled waveform (``len(load_audio(...))``).
        sample_rate: the file's own rate.
        passes: times the file was streamed (2 when it was rescaled or re-decoded).
    """

    def __init__(self, path: PathLike, cfg: Optional[AudioConfig] = None,
                 window: Optional[int] = None, *, max_duration_s: Optional[float] = None,
                 limits: Optional[InputLimits] = None, block_frames: int = _STREAM_FRAMES):
        self.cfg = cfg or AudioConfig()
        self.limits = limits or InputLimits()
        self.window = int(round(self.cfg.clip_seconds * self.cfg.sample_rate)
                          if window is None else window)
        if self.window < 1 or block_frames < 1:
            raise ValueError(f"window and block_frames must be >= 1, got {self.window}, "
                             f"{block_frames}")
        self.path = path
        self.max_duration_s = (min(self.cfg.max_duration_s, self.limits.max_seconds)
                               if max_duration_s is None else max_duration_s)
        self.block_frames = int(block_frames)
        self.samples: Optional[int] = None
        self.sample_rate: Optional[int] = None
        self.passes = 0

    def __iter__(self) -> Iterator[Tuple[int, np.ndarray]]:
        native, scale = True, None
        self.passes, self.samples = 0, None
        while True:
            self.passes += 1
            try:
                peak = yield from self._one_pass(native, scale)
            except _NativeRefused:
                native = False
                continue
            if scale is None and peak > 1.0:
                scale = np.float32(1.0 / peak)  # peak_safe's factor
                continue
            return

    def _one_pass(self, native: bool, scale):
        """Yields this pass's ``(index, window)``; returns the resampled waveform's peak."""
        cfg, n = self.cfg, self.window
        sr, blocks = _open_mono_blocks(self.path, self.max_duration_s, self.limits,
                                       self.block_frames, native)
        self.sample_rate = sr
        rs = (None if sr == cfg.sample_rate else
              soxr.ResampleStream(sr, cfg.sample_rate, 1, dtype="float32",
                                  quality=cfg.resample_quality))
        buf = np.empty(n, np.float32)
        state = {"fill": 0, "index": 0, "samples": 0, "peak": 0.0}

        def cut(y: np.ndarray):
            nonlocal buf
            if y.size == 0:
                return
            state["samples"] += len(y)
            state["peak"] = max(state["peak"], float(y.max()), -float(y.min()))
            pos = 0
            while pos < len(y):
                fill = state["fill"]
                k = min(n - fill, len(y) - pos)
                buf[fill:fill + k] = y[pos:pos + k]
                state["fill"] = fill + k
                pos += k
                if state["fill"] == n:
                    out = buf if scale is None else (buf * scale).astype(np.float32, copy=False)
                    buf = np.empty(n, np.float32)
                    state["fill"] = 0
                    state["index"] += 1
                    yield state["index"] - 1, out

        n_in = 0
        for block in blocks:
            n_in += len(block)
            yield from cut(block if rs is None else rs.resample_chunk(block, last=False))
        if rs is not None:
            yield from cut(rs.resample_chunk(np.empty(0, np.float32), last=True))
        m, fill = state["samples"], state["fill"]
        if m == 0:
            raise AudioZeroLengthError(os.fspath(self.path),
                                       f"{n_in} frame(s) at {sr} Hz resample to nothing")
        if fill and (state["index"] == 0 or 2 * fill >= n):  # the rule of windows()
            tail = buf[:fill] if scale is None else (buf[:fill] * scale).astype(np.float32,
                                                                                copy=False)
            yield state["index"], loop_to_length(tail, n)
        self.samples = m
        return state["peak"]


def stream_windows(path: PathLike, cfg: Optional[AudioConfig] = None,
                   window: Optional[int] = None, **kwargs) -> List[np.ndarray]:
    """The final windows of a :class:`WindowStream` as a list (restarts resolved): equal to
    ``windows(load_audio(path, cfg, ...), window)``, decoded with bounded memory while
    decoding (the list itself holds the whole file: for tests and small files)."""
    out: List[np.ndarray] = []
    for i, w in WindowStream(path, cfg, window, **kwargs):
        del out[i:]
        out.append(w)
    return out


def _open_mono_blocks(path: PathLike, max_duration_s: float, limits: InputLimits,
                      block_frames: int, native: bool = True
                      ) -> Tuple[int, Iterator[np.ndarray]]:
    """``(sample rate, blocks)``: the file's mono samples at its own rate as float32 (k,)
    blocks (each valid until the next is taken), with :func:`decode`'s checks: those of the
    file and its header before this returns, the others while or after the blocks are read
    (``AudioNonFiniteError``: after the last block, no block being given after the first
    non-finite sample). ``native``: try the C++ FLAC decoder first (``_NativeRefused`` when
    it refuses the stream part-way)."""
    path_s = _checked_file(path, limits)
    kind, fast, f = _open(path_s, (lambda: _open_flac_native(path_s, max_duration_s, limits,
                                                         block_frames)) if native else None)
    if fast is not None:
        return fast
    try:
        sr, channels = f.samplerate, f.channels
        header_frames = f.frames if 0 <= f.frames < _UNKNOWN_FRAMES else None
        limit = _frame_limit(path_s, sr, channels, max_duration_s, limits)
        if header_frames is not None:
            _check_frames(path_s, header_frames, sr, channels, max_duration_s, limits)
    except BaseException:
        f.close()
        raise
    return sr, _sndfile_blocks(path_s, f, kind, header_frames, limit, max_duration_s,
                               block_frames)


def _sndfile_blocks(path: str, f: sf.SoundFile, kind: Optional[str],
                    header_frames: Optional[int], limit: float, max_duration_s: float,
                    block_frames: int) -> Iterator[np.ndarray]:
    """The blocks of :func:`_open_mono_blocks` read by libsndfile: ``SoundFile.read`` when
    the header gives the length (as ``_read_known_length``), ``sf_readf_float`` with the
    limit checked block by block when it does not (as ``_read_unknown_length``, one pass: no
    output to allocate)."""
    from soundfile import _ffi, _snd

    with f:
        sr, channels, fmt = f.samplerate, f.channels, f.format
        known = header_frames is not None
        rows = min(block_frames, max(header_frames, 1)) if known else block_frames
        block = np.empty((rows, channels), np.float32)
        mono = np.empty((rows, 1), np.float32)
        n, failure = 0, None
        bad, first_bad = 0, -1
        while not known or n < header_frames:
            if known:
                try:
                    got = len(f.read(out=block[:min(rows, header_frames - n)]))
                except sf.LibsndfileError as exc:
                    failure = _sf_reason(exc)
                    break
                if got == 0:
                    break
            else:
                got = _snd.sf_readf_float(f._file, _ffi.cast("float *", block.ctypes.data),
                                          rows)
                err = _snd.sf_error(f._file)
                failure = _ffi.string(_snd.sf_error_number(err)).decode() if err else None
                if n + got > limit:
                    raise AudioTooLongError(path, f"more than {max_duration_s:g} s (no "
                                            "length in header)")
            if channels > 1:
                _mix(mono[:got], block[:got])
                y = mono[:got, 0]
            else:
                y = block[:got, 0]
            finite = np.isfinite(y)
            if not finite.all():
                if bad == 0:
                    first_bad = n + int(np.argmin(finite))
                bad += int(got - finite.sum())
            n += got
            if bad == 0 and got:
                yield y
            if not known and (failure is not None or got < rows):
                break
    _check_decoded(path, kind, fmt, sr, channels, header_frames, n, failure)
    if bad:
        raise AudioNonFiniteError(path, f"{bad} non-finite sample(s), first at frame "
                                  f"{first_bad}")


def _flac_streaminfo_checked(path: str, max_duration_s: float, limits: InputLimits
                             ) -> Optional[Tuple[int, int, int]]:
    """``(sample rate, channels, max frames)`` from a FLAC file's STREAMINFO (the first
    metadata block), its declared length checked against the limits before anything is
    decoded; None when the file does not start with a STREAMINFO block (libsndfile takes
    it)."""
    head = _head(path, 42)  # marker, block header, STREAMINFO
    if len(head) < 42 or (head[4] & 0x7F) != 0:
        return None
    sr, total = _streaminfo_rate_total(head[8:42])
    channels = ((head[8 + 12] >> 1) & 7) + 1
    max_frames = _frame_limit(path, sr, channels, max_duration_s, limits)
    if total:
        _check_frames(path, total, sr, channels, max_duration_s, limits)
    return sr, channels, max_frames


def _open_flac_native(path: str, max_duration_s: float, limits: InputLimits,
                      block_frames: int) -> Optional[Tuple[int, Iterator[np.ndarray]]]:
    """:func:`_open_mono_blocks` by the C++ decoder frame by frame (``mmengine._C.FlacStream``
    on a memory map of the file), with the checks of ``_decode_flac_native``; None where that
    returns None (the caller takes libsndfile)."""
    from .._ext import native

    C = native()
    if C is None or not hasattr(C, "FlacStream"):  # an older build
        return None
    info = _flac_streaminfo_checked(path, max_duration_s, limits)
    if info is None:
        return None
    sr, channels, max_frames = info
    with open(path, "rb") as fh:
        mm = mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ)
    try:
        stream = C.FlacStream(mm, int(max_frames), True)
    except C.FlacLimitError:
        mm.close()
        raise _flac_limit_error(path, max_frames, max_duration_s, sr, channels) from None
    except (RuntimeError, ValueError):
        mm.close()
        return None
    return int(stream.sample_rate), _flac_native_blocks(path, C, mm, stream, max_frames,
                                                        max_duration_s, block_frames)


def _flac_native_blocks(path: str, C, mm: mmap.mmap, stream, max_frames: float,
                        max_duration_s: float, block_frames: int) -> Iterator[np.ndarray]:
    released = 0
    try:
        while True:
            try:
                y = stream.read(block_frames)
            except C.FlacLimitError:
                raise _flac_limit_error(path, max_frames, max_duration_s,
                                        int(stream.sample_rate), int(stream.channels)) from None
            except (RuntimeError, ValueError):
                raise _NativeRefused(path) from None
            if len(y) == 0:
                break
            yield y[:, 0]
            pos = stream.byte_pos
            if pos - released >= _RELEASE_BYTES and hasattr(mm, "madvise"):
                upto = pos - pos % mmap.PAGESIZE  # the decoder never goes back
                mm.madvise(mmap.MADV_DONTNEED, released, upto - released)
                released = upto
        if stream.decoded == 0:
            raise AudioZeroLengthError(path, f"FLAC, {stream.sample_rate} Hz, "
                                       f"{stream.channels} channel(s)")
    finally:
        del stream
        try:
            mm.close()
        except BufferError:  # still exported by a live reference: closed when collected
            pass


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


# ------------------------------------------------------------------- classification helpers

def _open(path_s: str, native_flac: Optional[Callable[[], Any]]):
    """``(kind, native result, None)`` when the file is FLAC and ``native_flac()`` (our
    decoder) takes it, else ``(kind, None, soundfile.SoundFile)``, ``kind`` being what the
    file's first bytes say it is (``_sniff``); a file neither opens is the typed
    ``AudioError`` of that kind (``_classify_unopenable``)."""
    kind = None
    try:
        kind = _sniff(path_s)
        if kind == "flac" and native_flac is not None:
            fast = native_flac()
            if fast is not None:
                return kind, fast, None
        return kind, None, sf.SoundFile(path_s)
    except sf.LibsndfileError as exc:
        raise _classify_unopenable(path_s, kind, exc) from None
    except OSError as exc:
        raise AudioError(path_s, exc.strerror or str(exc)) from None


def _mix(dst: np.ndarray, block: np.ndarray) -> None:
    """``dst`` (k, 1) = the mean of ``block`` (k, channels) over its channels, exactly as
    ``to_mono`` computes it for those rows."""
    np.mean(block, axis=1, dtype=np.float32, out=dst[:, 0])


def _read_known_length(f: sf.SoundFile, frames: int, mono: bool = False
                       ) -> Tuple[np.ndarray, Optional[str]]:
    """Read up to ``frames`` frames in blocks: ((n, channels) float32, or (n, 1) mixed block
    by block when ``mono``; failure reason or None)."""
    mix = mono and f.channels > 1
    y = np.empty((frames, 1 if mix else f.channels), dtype=np.float32)
    block = (np.empty((min(_BLOCK_FRAMES, max(frames, 1)), f.channels), np.float32)
             if mix else None)
    n = 0
    while n < frames:
        try:
            if mix:
                got = len(f.read(out=block[:min(_BLOCK_FRAMES, frames - n)]))
                _mix(y[n:n + got], block[:got])
            else:
                got = len(f.read(out=y[n:n + _BLOCK_FRAMES]))
        except sf.LibsndfileError as exc:
            return y[:n], _sf_reason(exc)
        n += got
        if got == 0:
            break
    return y[:n], None


def _read_unknown_length(path: str, f: sf.SoundFile, limit: float, max_duration_s: float,
                         mono: bool = False) -> Tuple[np.ndarray, Optional[str]]:
    """Read a stream whose header gives no length (libsndfile reports ``SF_COUNT_MAX``).

    Example: a FLAC stream with 0 total samples in STREAMINFO (written by a streaming
    encoder). ``SoundFile.read`` seeks after every block and that seek fails on such streams,
    so the blocks are read with libsndfile's ``sf_readf_float`` through soundfile's handle.
    Two passes: the frames are counted into one reused block (``AudioTooLongError`` as soon
    as they pass ``limit``, nothing kept), then the file is opened again and read into an
    array of exactly that length ((n, 1), mixed block by block, when ``mono``).
    """
    from soundfile import _ffi, _snd

    block = np.empty((_BLOCK_FRAMES, f.channels), dtype=np.float32)

    def read_into(handle, out) -> Tuple[int, Optional[str]]:
        got = _snd.sf_readf_float(handle._file, _ffi.cast("float *", out.ctypes.data),
                                  len(out))
        err = _snd.sf_error(handle._file)
        return got, (_ffi.string(_snd.sf_error_number(err)).decode() if err else None)

    n = 0
    while True:
        got, failure = read_into(f, block)
        n += got
        if n > limit:
            raise AudioTooLongError(path, f"more than {max_duration_s:g} s (no length in "
                                    "header)")
        if failure is not None or got < _BLOCK_FRAMES:
            break
    counted_failure = failure  # the decoder's error after the n-th frame: the file is broken
    mix = mono and f.channels > 1
    y = np.empty((n, 1 if mix else f.channels), dtype=np.float32)
    with sf.SoundFile(path) as again:
        done = 0
        while done < n:
            if mix:
                got, failure = read_into(again, block[:min(_BLOCK_FRAMES, n - done)])
                _mix(y[done:done + got], block[:got])
            else:
                got, failure = read_into(again, y[done:done + _BLOCK_FRAMES])
            done += got
            if failure is not None or got == 0:
                break
    # the second pass stops at the n-th frame, before the error the first one met (found by
    # tests/fuzz/pyfuzz.py: a FLAC that loses sync after 400 frames loaded as a 400-frame file
    # while the streamed reader, which reads on, refused it)
    return y[:done], failure or counted_failure


def _frame_limit(path: str, sr: int, channels: int, max_duration_s: float,
                 limits: InputLimits) -> float:
    """Most frames a file of this rate and channel count may hold; refuses a rate or a
    channel count outside ``limits`` (``AudioLimitError``)."""
    if not limits.min_sample_rate <= sr <= limits.max_sample_rate:
        raise AudioLimitError(path, f"sample rate {sr} Hz outside {limits.min_sample_rate}.."
                              f"{limits.max_sample_rate}", "max_sample_rate"
                              if sr > limits.max_sample_rate else "min_sample_rate")
    if not 1 <= channels <= limits.max_channels:
        raise AudioLimitError(path, f"{channels} channels, limit {limits.max_channels}",
                              "max_channels")
    return min(max_duration_s * sr, limits.max_decoded_bytes // (4 * channels))


def _check_frames(path: str, frames: int, sr: int, channels: int, max_duration_s: float,
                  limits: InputLimits) -> None:
    """Refuse a declared length over the duration or decoded-size limit, before decoding."""
    if frames > max_duration_s * sr:
        raise AudioTooLongError(path, f"{frames / sr:.1f} s > limit {max_duration_s:g} s")
    if frames * channels * 4 > limits.max_decoded_bytes:
        raise AudioLimitError(path, f"{frames} frames x {channels} channels of float32 = "
                              f"{frames * channels * 4} bytes > {limits.max_decoded_bytes}",
                              "max_decoded_bytes")


def _decode_flac_native(path: str, max_duration_s: Optional[float] = None,
                        limits: Optional[InputLimits] = None, mono: bool = False
                        ) -> Optional[Tuple[np.ndarray, int]]:
    """FLAC through our own decoder (``mmengine._C.decode_flac``: frame CRCs checked, frame
    count checked against STREAMINFO, bit-identical to libsndfile's float output, several
    times faster). None when it is not built or refuses the stream: the caller then takes the
    libsndfile path, whose checks name the problem with a typed error.

    The limits come first, from STREAMINFO: rate, channels, declared length; a stream of
    unknown length is counted frame by frame by the decoder against the same limit before its
    output is allocated (``FlacLimitError`` -> ``AudioTooLongError``). ``max_duration_s``
    None: no duration limit; ``limits`` None: ``InputLimits()``."""
    from .._ext import native

    limits = limits or InputLimits()
    max_duration_s = math.inf if max_duration_s is None else max_duration_s
    C = native()
    if C is None or "mono" not in (C.decode_flac.__doc__ or ""):  # an older build
        return None
    info = _flac_streaminfo_checked(path, max_duration_s, limits)
    if info is None:
        return None
    sr, channels, max_frames = info
    buf = np.fromfile(path, dtype=np.uint8)
    try:
        y, rate = C.decode_flac(buf, int(max_frames), mono and channels > 1)
    except C.FlacLimitError:
        raise _flac_limit_error(path, max_frames, max_duration_s, sr, channels) from None
    except (RuntimeError, ValueError):
        return None
    del buf
    if len(y) == 0:
        raise AudioZeroLengthError(path, f"FLAC, {rate} Hz, {channels} channel(s)")
    return y, int(rate)


def _flac_limit_error(path: str, max_frames: float, max_duration_s: float, sr: int,
                      channels: int) -> AudioLimitError:
    """The typed error for a FLAC stream of unknown length that holds more than
    ``max_frames`` samples (the C++ decoder's ``FlacLimitError``)."""
    if max_frames < max_duration_s * sr:
        return AudioLimitError(path, f"more than {int(max_frames)} frames x {channels} "
                               f"channels of float32 (no length in header)",
                               "max_decoded_bytes")
    return AudioTooLongError(path, f"more than {max_duration_s:g} s (no length in header)")
