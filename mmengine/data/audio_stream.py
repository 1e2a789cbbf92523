"""Streamed decoding: :class:`WindowStream` and :func:`stream_windows`.

The windows of ``windows(load_audio(path, cfg), window)`` decoded block by block (what
``Engine.classify`` uses for files): a decoding thread holds one block, the resampler's state
and one window instead of the whole file. The block readers here (libsndfile block by block,
``mmengine._C.FlacStream`` on a memory map) apply the checks of the whole-file
:func:`mmengine.data.audio.decode` (shared in ``audio_decoders.py``) and cut windows by the rule
of :func:`mmengine.data.waveform.windows`. Kept apart from ``audio.py`` because it is a second
decoding path with its own restarts and memory rules; ``mmengine.data.audio`` re-exports both
public names.
"""
from __future__ import annotations

import mmap
import os
from typing import Iterator, List, Optional, Tuple

import numpy as np
import soundfile as sf
import soxr

from ..config import AudioConfig, InputLimits
from ..errors import AudioNonFiniteError, AudioTooLongError, AudioZeroLengthError
from .audio_decoders import (
    _UNKNOWN_FRAMES, PathLike, _check_decoded, _check_frames, _checked_file,
    _flac_limit_error, _flac_streaminfo_checked, _frame_limit, _mix, _open)
from .containers import _sf_reason
from .waveform import loop_to_length

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


def _open_flac_native(path: str, max_duration_s: float, limits: InputLimits,
                      block_frames: int) -> Optional[Tuple[int, Iterator[np.ndarray]]]:
    """:func:`_open_mono_blocks` by the C++ decoder frame by frame (``mmengine._C.FlacStream``
    on a memory map of the file), with the checks of ``_decode_flac_native``; None where that
    returns None (the caller takes libsndfile)."""
    from .._ext import native_extension

    C = native_extension()
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
