"""Hostile and broken input files, built small in the test's own folder (issue 15).

Each builder writes a file whose header or structure asks the reader for far more than the file
holds (hours of audio, gigabytes of samples, billions of MIDI ticks, a huge model), or which
never ends (a FIFO, ``/dev/zero``). ``measure`` runs one refusal in a fresh Python process and
reports the error type, the seconds it took and the process's peak RSS.
"""
from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import soundfile as sf

ROOT = Path(__file__).resolve().parents[1]


def flac_zero_total(path, *, seconds: float = 7200.0, sr: int = 48000) -> Path:
    """The issue's crafted FLAC: ``seconds`` of int16 silence at ``sr`` written by soundfile
    (in blocks: the test never holds the whole signal), then STREAMINFO's 36-bit total-samples
    field set to 0 ("unknown", which the format allows). ~1.1 MB for 2 h."""
    path = Path(path)
    block = np.zeros(sr * 60, np.int16)
    with sf.SoundFile(str(path), "w", samplerate=sr, channels=1, format="FLAC",
                      subtype="PCM_16") as f:
        for _ in range(int(seconds // 60)):
            f.write(block)
    return _patch_streaminfo(path, total=0)


def _patch_streaminfo(path: Path, *, total=None, rate=None, channels=None) -> Path:
    b = bytearray(path.read_bytes())
    assert b[:4] == b"fLaC" and b[4] & 0x7F == 0, "STREAMINFO must be the first block"
    si = 8  # marker (4) + block header (4)
    if total is not None:
        b[si + 13] = (b[si + 13] & 0xF0) | ((total >> 32) & 0x0F)
        b[si + 14:si + 18] = (total & 0xFFFFFFFF).to_bytes(4, "big")
    if rate is not None:
        b[si + 10] = (rate >> 12) & 0xFF
        b[si + 11] = (rate >> 4) & 0xFF
        b[si + 12] = ((rate & 0x0F) << 4) | (b[si + 12] & 0x0F)
    if channels is not None:
        b[si + 12] = (b[si + 12] & 0xF1) | (((channels - 1) & 7) << 1)
    path.write_bytes(bytes(b))
    return path


def flac_with(path, *, total=None, rate=None, channels=None, seconds: float = 1.0) -> Path:
    """A real 1 s mono 16-bit FLAC at 22050 Hz with STREAMINFO fields overwritten."""
    path = Path(path)
    sf.write(str(path), np.zeros(int(22050 * seconds), np.int16), 22050, subtype="PCM_16")
    return _patch_streaminfo(path, total=total, rate=rate, channels=channels)


def wav_with(path, *, rate=None, channels=None, data_bytes=None) -> Path:
    """A real 1 s mono 16-bit WAV at 22050 Hz with its fmt/data fields overwritten (block
    align and byte rate follow the channel count and rate)."""
    path = Path(path)
    sf.write(str(path), np.zeros(22050, np.int16), 22050, subtype="PCM_16")
    b = bytearray(path.read_bytes())
    assert b[12:16] == b"fmt " and b[36:40] == b"data"
    ch = channels if channels is not None else struct.unpack("<H", b[22:24])[0]
    sr = rate if rate is not None else struct.unpack("<I", b[24:28])[0]
    b[22:24] = struct.pack("<H", ch)
    b[24:28] = struct.pack("<I", sr & 0xFFFFFFFF)
    b[28:32] = struct.pack("<I", (sr * 2 * ch) & 0xFFFFFFFF)
    b[32:34] = struct.pack("<H", (2 * ch) & 0xFFFF)
    if data_bytes is not None:
        b[40:44] = struct.pack("<I", data_bytes)
    path.write_bytes(bytes(b))
    return path


def _vlq(v: int) -> bytes:
    out = [v & 0x7F]
    v >>= 7
    while v:
        out.append(0x80 | (v & 0x7F))
        v >>= 7
    return bytes(reversed(out))


def midi_huge_ticks(path, *, resolution: int = 96, deltas: int = 8) -> Path:
    """A 100-byte MIDI file: one note, then ``deltas`` events each 2^28 - 1 ticks later (the
    largest delta a 4-byte variable-length quantity holds): ~2^31 ticks, 22 million beats,
    which pretty_midi would turn into a per-tick table of 17 GB."""
    events = b"\x00\x90\x3c\x50" + b"".join(_vlq(0x0FFFFFFF) + b"\x80\x3c\x00"
                                            for _ in range(deltas)) + b"\x00\xff\x2f\x00"
    data = (b"MThd" + struct.pack(">IHHH", 6, 0, 1, resolution) +
            b"MTrk" + struct.pack(">I", len(events)) + events)
    Path(path).write_bytes(data)
    return Path(path)


def rewrite_engine(src, dst, edit) -> Path:
    """Copy the engine file ``src`` to ``dst`` with ``edit(header)`` applied to its header
    (the payload and its checksum are kept, so only the header is hostile)."""
    from mmengine.runtime import engine_file as ef

    f = ef.read_engine_file(src)
    header = json.loads(json.dumps(f.header))
    edit(header)
    return ef.write_engine_file(dst, header, f.payload)


def engine_with_raw_header(src, dst, blob: bytes) -> Path:
    """``src``'s payload behind the raw header bytes ``blob`` (e.g. deeply nested JSON)."""
    from mmengine.runtime import engine_file as ef

    payload = ef.read_engine_file(src).payload
    Path(dst).write_bytes(struct.pack("<8sIQ", ef.MAGIC, ef.FORMAT_VERSION, len(blob)) + blob
                          + payload)
    return Path(dst)


#: run ``ACTION`` (a Python statement, ``args`` in scope) in a fresh process after ``SETUP``
_PROBE = r"""
import json, sys, time
args = json.loads(sys.argv[1])
exec(args["setup"])
t0 = time.perf_counter()
error = None
try:
    exec(args["action"])
except Exception as exc:
    error = [type(exc).__name__, [c.__name__ for c in type(exc).__mro__], str(exc)]
seconds = time.perf_counter() - t0
# VmHWM: this process's own peak (ru_maxrss would carry the parent's peak across exec)
hwm = next(int(line.split()[1]) for line in open("/proc/self/status")
           if line.startswith("VmHWM:"))
print(json.dumps({"error": error, "seconds": seconds, "peak_rss_mb": hwm / 1024}))
"""


def measure(action: str, setup: str = "", timeout: float = 120.0, **args) -> dict:
    """Run ``action`` in a fresh interpreter (``setup`` first, untimed: imports, loading an
    engine); returns ``{"error": [type, mro names, message] or None, "seconds": s,
    "peak_rss_mb": peak RSS of the whole process (VmHWM)}``. ``args`` are in scope as ``args``."""
    payload = json.dumps({"setup": setup, "action": action, **args})
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.run([sys.executable, "-c", _PROBE, payload], capture_output=True,
                          text=True, timeout=timeout, cwd=str(ROOT), env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])
