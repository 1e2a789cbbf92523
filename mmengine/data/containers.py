"""What an audio file's bytes say it is, and what is wrong with it: the format sniffed from
its first bytes (``_sniff``), the STREAMINFO of a FLAC file, and structure walkers for WAV/RIFF,
Ogg, FLAC and MPEG (``_structure_error``) that name the problem of a file libsndfile refused or
decoded short (truncated, corrupt, unsupported) without decoding it. ``mmengine.data.audio``
uses them to turn a decoder's failure into a typed ``AudioError``; they read at most a few
kilobytes, or walk a file's frame headers, and never allocate by a size the file declares.
"""
from __future__ import annotations

import mmap
import os
import struct
from pathlib import Path
from typing import Optional, Tuple, Type

from ..errors import (AudioCorruptError, AudioError, AudioTruncatedError,
                      AudioUnsupportedFormatError, AudioZeroLengthError)

def _sf_reason(exc: Exception) -> str:
    return str(getattr(exc, "error_string", "") or exc)


#: extensions of formats libsndfile 1.2.2 decodes; an unreadable file with one of them is corrupt
KNOWN_EXTENSIONS = frozenset({
    ".wav", ".wave", ".flac", ".ogg", ".oga", ".opus", ".mp3", ".aif", ".aiff", ".aifc",
    ".au", ".snd", ".caf", ".w64", ".rf64",
})


#: (name, offset, magic) of containers libsndfile cannot decode
_FOREIGN = (
    ("MP4/M4A/AAC", 4, b"ftyp"),
    ("WMA/ASF", 0, b"\x30\x26\xb2\x75\x8e\x66\xcf\x11"),
    ("Matroska/WebM", 0, b"\x1a\x45\xdf\xa3"),
    ("Monkey's Audio", 0, b"MAC "),
    ("WavPack", 0, b"wvpk"),
    ("AMR", 0, b"#!AMR"),
    ("MIDI (not audio)", 0, b"MThd"),
)


def _streaminfo_rate_total(si: bytes) -> Tuple[int, int]:
    """(sample rate, total samples; 0 = unknown) from a FLAC STREAMINFO body (>= 18 bytes)."""
    return (si[10] << 12) | (si[11] << 4) | (si[12] >> 4), \
        int.from_bytes(si[13:18], "big") & ((1 << 36) - 1)


def _head(path: str, n: int = 16) -> bytes:
    with open(path, "rb") as fh:
        return fh.read(n)


def _sniff(path: str) -> Optional[str]:
    """'wav', 'ogg', 'flac', 'mp3' from the first bytes, else None."""
    h = _head(path)
    if h[:4] in (b"RIFF", b"RIFX", b"RF64") and h[8:12] == b"WAVE":
        return "wav"
    if h[:4] == b"OggS":
        return "ogg"
    if h[:4] == b"fLaC":
        return "flac"
    if h[:3] == b"ID3" or (len(h) >= 4 and _mpeg_header(h, 0) is not None):
        return "mp3"
    return None


def _classify_unopenable(path: str, kind: Optional[str], exc: Exception) -> AudioError:
    """Error for a non-empty file that libsndfile refused to open."""
    reason = _sf_reason(exc)
    if kind is not None:
        structure = _structure_error(path, kind)
        if structure is not None:
            return structure
        return AudioCorruptError(path, f"{kind.upper()} header but undecodable: {reason}")
    head = _head(path)
    for name, offset, magic in _FOREIGN:
        if head[offset:offset + len(magic)] == magic:
            return AudioUnsupportedFormatError(path, f"content is {name}, which libsndfile "
                                                     "cannot decode")
    ext = Path(path).suffix.lower()
    if ext in KNOWN_EXTENSIONS:
        return AudioCorruptError(path, f"not decodable as {ext[1:].upper()}: {reason}")
    return AudioUnsupportedFormatError(
        path, f"extension {ext or '(none)'!r} and content not recognised by libsndfile")


def _structure_error(path: str, kind: Optional[str]) -> Optional[AudioError]:
    """The error the file's container structure shows (mostly: where it was cut), or None."""
    found = None
    if kind == "wav":
        found = _riff_problem(path)
    elif kind == "ogg":
        found = _ogg_problem(path)
    elif kind == "flac":
        found = _flac_problem(path)
    elif kind == "mp3":
        problem = _mpeg_scan(path)[0]
        found = None if problem is None else (AudioTruncatedError, problem)
    if found is None:
        return None
    cls, detail = found
    return cls(path, detail)


#: what a structure walker found: (error class, detail), or None
_Found = Optional[Tuple[Type[AudioError], str]]
_CUT = AudioTruncatedError


def _riff_problem(path: str) -> _Found:
    size = os.path.getsize(path)
    with open(path, "rb") as fh:
        head = fh.read(12)
        if len(head) < 12:
            return _CUT, f"RIFF header cut after {len(head)} bytes"
        endian = ">" if head[:4] == b"RIFX" else "<"
        rf64_data = None
        pos = 12
        while True:
            fh.seek(pos)
            ch = fh.read(8)
            if len(ch) < 8:
                return _CUT, f"no 'data' chunk in the file's {size} bytes"
            cid, csize = ch[:4], struct.unpack(endian + "I", ch[4:])[0]
            if cid == b"ds64":
                body = fh.read(16)
                if len(body) == 16:
                    rf64_data = struct.unpack("<Q", body[8:16])[0]
            if cid == b"data":
                declared = rf64_data if (csize == 0xFFFFFFFF and rf64_data) else csize
                present = size - pos - 8
                if declared == 0 and present > 0:
                    return AudioCorruptError, (f"'data' chunk declares 0 bytes but {present} "
                                               "follow (header never finalised)")
                if declared != 0xFFFFFFFF and declared > present:
                    return _CUT, f"'data' chunk declares {declared} bytes, {present} present"
                return None
            pos += 8 + csize + (csize & 1)
            if pos > size:
                return _CUT, f"chunk {cid!r} extends past the end of the file"


def _ogg_problem(path: str) -> _Found:
    size = os.path.getsize(path)
    open_streams, pos = set(), 0
    with open(path, "rb") as fh:
        while pos < size:
            fh.seek(pos)
            hdr = fh.read(27)
            if len(hdr) < 27:
                return _CUT, f"cut inside an Ogg page header at byte {pos}"
            if hdr[:4] != b"OggS":
                break
            lacing = fh.read(hdr[26])
            if len(lacing) < hdr[26]:
                return _CUT, f"cut inside an Ogg page header at byte {pos}"
            end = pos + 27 + hdr[26] + sum(lacing)
            if end > size:
                return _CUT, f"Ogg page at byte {pos} needs {end - size} more bytes"
            serial = hdr[14:18]
            if hdr[5] & 0x04:
                open_streams.discard(serial)
            else:
                open_streams.add(serial)
            pos = end
    if open_streams:
        return _CUT, "Ogg stream ends without its end-of-stream page"
    return None


def _flac_problem(path: str) -> _Found:
    size = os.path.getsize(path)
    total, pos = 0, 4
    with open(path, "rb") as fh:
        while True:
            fh.seek(pos)
            hdr = fh.read(4)
            if len(hdr) < 4:
                return _CUT, "FLAC metadata cut short"
            last, btype = hdr[0] & 0x80, hdr[0] & 0x7F
            length = int.from_bytes(hdr[1:4], "big")
            if pos + 4 + length > size:
                return _CUT, f"FLAC metadata block at byte {pos} runs past the end of the file"
            if btype == 0 and length >= 18:
                total = _streaminfo_rate_total(fh.read(18))[1]
            pos += 4 + length
            if last:
                break
    if pos >= size:
        if total == 0:
            return AudioZeroLengthError, "FLAC stream with 0 samples"
        return _CUT, f"no audio frames after the metadata ({total} announced)"
    return None


# MPEG audio frame headers: bitrates (kbit/s) by (version is MPEG-1, layer), sample rates
_MPEG_BITRATES = {
    (True, 1): (0, 32, 64, 96, 128, 160, 192, 224, 256, 288, 320, 352, 384, 416, 448),
    (True, 2): (0, 32, 48, 56, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320, 384),
    (True, 3): (0, 32, 40, 48, 56, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320),
    (False, 1): (0, 32, 48, 56, 64, 80, 96, 112, 128, 144, 160, 176, 192, 224, 256),
    (False, 2): (0, 8, 16, 24, 32, 40, 48, 56, 64, 80, 96, 112, 128, 144, 160),
}
_MPEG_RATES = {3: (44100, 48000, 32000), 2: (22050, 24000, 16000), 0: (11025, 12000, 8000)}
#: decoded frames fall short of the MPEG frame count by the Info frame + encoder delay + padding
#: (measured with libsndfile/LAME: < 4 frames of 576 samples, < 3 of 1152); more = data lost
_MPEG_SLACK_FRAMES = 6


def _mpeg_header(buf, pos: int) -> Optional[Tuple[int, int]]:
    """(frame bytes, samples per frame) of a valid MPEG audio header at ``pos``, else None."""
    if pos + 4 > len(buf):
        return None
    h = int.from_bytes(buf[pos:pos + 4], "big")
    version, layer = (h >> 19) & 3, 4 - ((h >> 17) & 3)
    br_idx, sr_idx, pad = (h >> 12) & 15, (h >> 10) & 3, (h >> 9) & 1
    if h >> 21 != 0x7FF or version == 1 or layer == 4 or br_idx in (0, 15) or sr_idx == 3:
        return None
    mpeg1 = version == 3
    kbps = _MPEG_BITRATES[(mpeg1, 1 if layer == 1 else (3 if mpeg1 and layer == 3 else 2))]
    bitrate, rate = kbps[br_idx] * 1000, _MPEG_RATES[version][sr_idx]
    if layer == 1:
        return (12 * bitrate // rate + pad) * 4, 384
    if layer == 3 and not mpeg1:
        return 72 * bitrate // rate + pad, 576
    return 144 * bitrate // rate + pad, 1152


def _mpeg_start(buf) -> int:
    """Offset of the first MPEG frame (after an ID3v2 tag), or -1."""
    pos = 0
    if buf[:3] == b"ID3" and len(buf) >= 10:
        tag = buf[6:10]
        pos = 10 + ((tag[0] << 21) | (tag[1] << 14) | (tag[2] << 7) | tag[3])
        pos += 10 if buf[5] & 0x10 else 0
    limit = min(len(buf) - 4, pos + 65536)
    while pos <= limit:
        hdr = _mpeg_header(buf, pos)
        if hdr is not None and (pos + hdr[0] >= len(buf) or _mpeg_header(buf, pos + hdr[0])):
            return pos
        pos = buf.find(b"\xff", pos + 1)
        if pos < 0:
            break
    return -1


def _mpeg_scan(path: str) -> Tuple[Optional[str], int, int, bool]:
    """Walk the MPEG frames: (truncation problem or None, samples the frames hold, samples per
    frame, whether the first frame is a Xing/Info header giving the exact length)."""
    with open(path, "rb") as fh, mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as buf:
        pos = _mpeg_start(buf)
        if pos < 0:
            return None, 0, 1152, False
        xing = any(tag in buf[pos:pos + 64] for tag in (b"Xing", b"Info"))
        samples, spf, size = 0, 1152, len(buf)
        while True:
            hdr = _mpeg_header(buf, pos)
            if hdr is None:
                cut = 0 < size - pos < 4 and buf[pos] == 0xFF
                problem = f"MPEG frame header at byte {pos} cut short" if cut else None
                return problem, samples, spf, xing
            length, spf = hdr
            if pos + length > size:
                return (f"MPEG frame at byte {pos} needs {pos + length - size} more bytes",
                        samples, spf, xing)
            samples += spf
            pos += length
