"""The readers under both decoding paths of ``mmengine.data.audio``, and the checks they share.

:func:`mmengine.data.audio.decode` (a whole file) and :class:`mmengine.data.audio_stream.WindowStream`
(block by block) open, limit and check a file with the same functions, kept here once:

- ``_checked_file``, ``_frame_limit``, ``_check_frames``: the limits of ``InputLimits`` decided
  from the file's size and header before anything is decoded;
- ``_open``: the C++ FLAC decoder when it takes the file, else a ``soundfile.SoundFile``; a file
  neither opens is the typed error of what its first bytes say it is;
- ``_read_known_length``, ``_read_unknown_length``, ``_mix``: libsndfile reads of a whole file
  (a header with and without a length), the channels mixed block by block;
- ``_decode_flac_native``, ``_flac_streaminfo_checked``, ``_flac_limit_error``: the C++ FLAC
  decoder (``mmengine._C``) of a whole file, the STREAMINFO checks it shares with the streamed
  decoder, and the error of a stream that passes the limit;
- ``_check_decoded``: the checks of a finished libsndfile decode (the decoder's failure, the
  container's structure, an MP3 under-read, fewer frames than announced, no frames).

The errors and why each check exists: ``mmengine.data.audio``'s docstring; container sniffing
and structure walkers: ``mmengine.data.containers``.
"""
from __future__ import annotations

import math
import os
import stat
from typing import Any, Callable, Optional, Tuple, Union

import numpy as np
import soundfile as sf

from ..config import InputLimits
from ..errors import (
    AudioEmptyError,
    AudioError,
    AudioLimitError,
    AudioMissingError,
    AudioTooLongError,
    AudioTruncatedError,
    AudioUnsupportedFormatError,
    AudioZeroLengthError,
)
from .containers import (
    _MPEG_SLACK_FRAMES, _classify_unopenable, _head, _mpeg_scan, _sf_reason, _sniff,
    _streaminfo_rate_total, _structure_error)

PathLike = Union[str, os.PathLike]


#: frames decoded per read call (bounded so a mid-stream failure can say where it happened)
_BLOCK_FRAMES = 1 << 18
#: libsndfile reports SF_COUNT_MAX frames when a header gives no length
_UNKNOWN_FRAMES = 1 << 62


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
    from .._ext import native_extension

    limits = limits or InputLimits()
    max_duration_s = math.inf if max_duration_s is None else max_duration_s
    C = native_extension()
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
