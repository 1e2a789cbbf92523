"""Native FLAC decoder (``mmengine._C.decode_flac``).

Files written by libsndfile's encoder (libFLAC) must decode bit-identically to
``soundfile.read(dtype="float32")``. Features libFLAC does not emit by default (escape codes,
32/20/12/4-bit samples, every channel assignment and header code, LPC that needs 64-bit sums,
unknown length, variable block size) come from a small encoder in this file that writes the
bitstream field by field. Broken input must raise RuntimeError with a reason.
"""
from __future__ import annotations

import glob
import io
import os
import shutil
import subprocess

import numpy as np
import pytest
import soundfile as sf

from mmengine._ext import native_extension

C = native_extension()
if C is None or not hasattr(C, "decode_flac"):
    pytest.skip("mmengine._C built without decode_flac", allow_module_level=True)

SUBTYPES = {8: "PCM_S8", 16: "PCM_16", 24: "PCM_24"}


def _signal(kind: str, n: int, ch: int, rng) -> np.ndarray:
    t = np.arange(n)[:, None] / 22050.0
    if kind == "silence":
        x = np.zeros((n, ch))
    elif kind == "square":
        x = np.where(np.sin(2 * np.pi * 441 * t + np.arange(ch)) >= 0, 1.0, -1.0) * np.ones((1, ch))
    elif kind == "noise":
        x = rng.uniform(-1, 1, (n, ch))
    elif kind == "sine":
        x = 0.8 * np.sin(2 * np.pi * (220 + 110 * np.arange(ch)) * t)
    elif kind == "walk":
        x = np.cumsum(rng.normal(0, 0.01, (n, ch)), axis=0)
        x = x / max(1.0, np.abs(x).max())
    else:
        raise ValueError(kind)
    return np.clip(x, -1.0, 1.0 - 2.0 ** -23)


def _encode_sf(x: np.ndarray, sr: int, bits: int) -> bytes:
    buf = io.BytesIO()
    sf.write(buf, x, sr, format="FLAC", subtype=SUBTYPES[bits])
    return buf.getvalue()


def _check_same(data: bytes):
    got, sr = C.decode_flac(data)
    ref, sr_ref = sf.read(io.BytesIO(data), dtype="float32", always_2d=True)
    assert sr == sr_ref
    assert got.dtype == np.float32 and got.shape == ref.shape
    assert np.array_equal(got, ref)
    return got


@pytest.mark.parametrize("bits", [8, 16, 24])
@pytest.mark.parametrize("ch", [1, 2, 6])
def test_matches_soundfile(bits, ch, rng):
    for kind in ["silence", "square", "noise", "sine", "walk"]:
        for n, sr in [(1, 8000), (4095, 22050), (4096, 44100), (4097, 96000)]:
            _check_same(_encode_sf(_signal(kind, n, ch, rng), sr, bits))


@pytest.mark.parametrize("ch", [1, 2])
def test_long_signals(ch, rng):
    n = 100_000
    for kind, bits in [("walk", 16), ("sine", 24), ("noise", 8), ("square", 16)]:
        _check_same(_encode_sf(_signal(kind, n, ch, rng), 22050, bits))
    # a mixture that switches between the subframe types from block to block
    x = _signal("walk", n, ch, rng)
    x[20_000:30_000] = 0.0
    x[40_000:50_000] = _signal("noise", 10_000, ch, rng)
    _check_same(_encode_sf(x, 44100, 16))


def test_input_types(rng):
    data = _encode_sf(_signal("sine", 5000, 2, rng), 22050, 16)
    a, _ = C.decode_flac(data)
    b, _ = C.decode_flac(bytearray(data))
    c, _ = C.decode_flac(np.frombuffer(data, dtype=np.uint8))
    d, _ = C.decode_flac(memoryview(data))
    assert np.array_equal(a, b) and np.array_equal(a, c) and np.array_equal(a, d)


FOLK = sorted(glob.glob(os.path.expanduser("~/.cache/mmengine/data/folk/audio/*.flac")))


@pytest.mark.skipif(not FOLK, reason="no folk clips in ~/.cache/mmengine/data/folk/audio")
def test_real_clips():
    for path in FOLK[:: max(1, len(FOLK) // 4)][:4]:
        with open(path, "rb") as f:
            _check_same(f.read())


@pytest.mark.skipif(shutil.which("flac") is None, reason="no flac CLI")
def test_external_encoder(tmp_path, rng):
    x = _signal("walk", 30_000, 2, rng)
    sf.write(tmp_path / "a.wav", x, 44100, subtype="PCM_16")
    subprocess.run(["flac", "-s", "-8", "-f", "-o", str(tmp_path / "a.flac"), str(tmp_path / "a.wav")],
                   check=True)
    _check_same((tmp_path / "a.flac").read_bytes())


# ---- errors -------------------------------------------------------------------------------

def test_truncated(rng):
    data = _encode_sf(_signal("walk", 50_000, 2, rng), 22050, 16)
    for cut in [len(data) - 1, len(data) - 2, len(data) - 100, len(data) // 2, 3000, 200, 60]:
        with pytest.raises(RuntimeError, match="truncated"):
            C.decode_flac(data[:cut])


def test_corrupt_byte_fails_crc(rng):
    data = _encode_sf(_signal("walk", 50_000, 1, rng), 22050, 16)
    for pos in [len(data) // 3, len(data) // 2, len(data) - 10]:
        bad = bytearray(data)
        bad[pos] ^= 0x10
        with pytest.raises(RuntimeError):
            C.decode_flac(bytes(bad))


def test_not_flac(tmp_path, rng):
    buf = io.BytesIO()
    sf.write(buf, _signal("sine", 1000, 1, rng), 22050, format="WAV", subtype="PCM_16")
    for data in [buf.getvalue(), b"", b"fLa", b"hello world, not audio at all"]:
        with pytest.raises(RuntimeError, match="not a FLAC stream|truncated"):
            C.decode_flac(data)


def test_rejects_non_byte_buffer():
    with pytest.raises(ValueError):
        C.decode_flac(np.zeros(10, dtype=np.int16))


# ---- a small field-by-field encoder for the features libFLAC leaves out --------------------

def _crc8(b: bytes) -> int:
    c = 0
    for x in b:
        c ^= x
        for _ in range(8):
            c = ((c << 1) ^ 0x07) & 0xFF if c & 0x80 else (c << 1) & 0xFF
    return c


def _crc16(b: bytes) -> int:
    c = 0
    for x in b:
        c ^= x << 8
        for _ in range(8):
            c = ((c << 1) ^ 0x8005) & 0xFFFF if c & 0x8000 else (c << 1) & 0xFFFF
    return c


class _Bits:
    def __init__(self):
        self.acc = 0
        self.n = 0

    def put(self, v: int, n: int):
        if n:
            self.acc = (self.acc << n) | (int(v) & ((1 << n) - 1))
            self.n += n

    def unary(self, q: int):
        self.put(1, q + 1)

    def tobytes(self) -> bytes:
        pad = (-self.n) % 8
        self.put(0, pad)
        return self.acc.to_bytes(self.n // 8, "big") if self.n else b""


def _utf8(v: int) -> bytes:
    if v < 0x80:
        return bytes([v])
    for extra, lead, cap in [(1, 0xC0, 11), (2, 0xE0, 16), (3, 0xF0, 21), (4, 0xF8, 26),
                             (5, 0xFC, 31), (6, 0xFE, 36)]:
        if v < (1 << cap):
            out = []
            for _ in range(extra):
                out.append(0x80 | (v & 0x3F))
                v >>= 6
            return bytes([lead | v] + out[::-1])
    raise ValueError(v)


def _residual(w: _Bits, res: list, bs: int, order: int, porder: int, method: int, escape_every: int):
    w.put(method, 2)
    w.put(porder, 4)
    psize = bs >> porder
    pbits, esc = (5, 31) if method else (4, 15)
    pos = 0
    for p in range(1 << porder):
        cnt = psize - (order if p == 0 else 0)
        part = res[pos:pos + cnt]
        pos += cnt
        if escape_every and p % escape_every == 0:
            nb = max([0] + [int(v).bit_length() + 1 for v in part])
            w.put(esc, pbits)
            w.put(nb, 5)
            for v in part:
                w.put(v, nb)
            continue
        u = [(2 * v) if v >= 0 else (-2 * v - 1) for v in part]
        mean = sum(u) / max(1, len(u))
        k = 0
        while k < esc - 1 and (1 << (k + 1)) <= mean:
            k += 1
        w.put(k, pbits)
        for x in u:
            w.unary(x >> k)
            w.put(x & ((1 << k) - 1), k)


def _subframe(w: _Bits, s: list, bps: int, kind, porder=0, method=0, escape_every=0):
    bs = len(s)
    wasted = 0
    if any(s):
        while all(v % (1 << (wasted + 1)) == 0 for v in s) and wasted + 1 < bps:
            wasted += 1
    s = [v >> wasted for v in s]
    b = bps - wasted
    if kind != "verbatim" and kind != "constant":  # residuals must fit 32 bits, else verbatim
        coefs, shift = ((kind[1], kind[3]) if kind[0] == "lpc" else
                        ({0: [], 1: [1], 2: [2, -1], 3: [3, -3, 1], 4: [4, -6, 4, -1]}[kind[1]], 0))
        res = [s[i] - (sum(c * s[i - 1 - j] for j, c in enumerate(coefs)) >> shift)
               for i in range(len(coefs), bs)]
        if any(abs(r) >= 2 ** 31 for r in res):
            kind = "verbatim"
    def hdr(t):
        w.put(0, 1)
        w.put(t, 6)
        w.put(1 if wasted else 0, 1)
        if wasted:
            w.unary(wasted - 1)
    if kind == "constant":
        assert all(v == s[0] for v in s)
        hdr(0)
        w.put(s[0], b)
    elif kind == "verbatim":
        hdr(1)
        for v in s:
            w.put(v, b)
    elif kind[0] == "fixed":
        order = kind[1]
        coefs = {0: [], 1: [1], 2: [2, -1], 3: [3, -3, 1], 4: [4, -6, 4, -1]}[order]
        hdr(8 + order)
        for v in s[:order]:
            w.put(v, b)
        res = [s[i] - sum(c * s[i - 1 - j] for j, c in enumerate(coefs)) for i in range(order, bs)]
        _residual(w, res, bs, order, porder, method, escape_every)
    elif kind[0] == "lpc":
        _, coefs, precision, shift = kind
        order = len(coefs)
        hdr(31 + order)
        for v in s[:order]:
            w.put(v, b)
        w.put(precision - 1, 4)
        w.put(shift, 5)
        for c in coefs:
            w.put(c, precision)
        res = [s[i] - (sum(c * s[i - 1 - j] for j, c in enumerate(coefs)) >> shift)
               for i in range(order, bs)]
        _residual(w, res, bs, order, porder, method, escape_every)
    else:
        raise ValueError(kind)


_BS_CODES = {192: 1, 576: 2, 1152: 3, 2304: 4, 4608: 5, 256: 8, 512: 9, 1024: 10, 2048: 11,
             4096: 12, 8192: 13, 16384: 14, 32768: 15}
_SR_CODES = {88200: 1, 176400: 2, 192000: 3, 8000: 4, 16000: 5, 22050: 6, 24000: 7, 32000: 8,
             44100: 9, 48000: 10, 96000: 11}
_SS_CODES = {8: 1, 12: 2, 16: 4, 20: 5, 24: 6, 32: 7}


def _encode(x: np.ndarray, bps: int, sr: int, blocks, kind, *, assign=None, sr_mode="table",
            ss_from_info=False, variable=False, unknown_total=False, porder=0, method=0,
            escape_every=0, id3=False) -> bytes:
    """x: (n, ch) int64 samples; blocks: block sizes summing to n."""
    n, ch = x.shape
    assert sum(blocks) == n
    info = _Bits()
    info.put(min(blocks), 16)
    info.put(max(blocks), 16)
    info.put(0, 24)
    info.put(0, 24)
    info.put(sr, 20)
    info.put(ch - 1, 3)
    info.put(bps - 1, 5)
    info.put(0 if unknown_total else n, 36)
    info.put(0, 128)
    si = info.tobytes()
    out = bytearray(b"fLaC") + bytes([0x00, 0, 0, 34]) + si + bytes([0x81, 0, 0, 5]) + b"\0" * 5
    if id3:
        out = bytearray(b"ID3\x03\x00\x00\x00\x00\x00\x07") + b"\0" * 7 + out
    start = 0
    for fi, bs in enumerate(blocks):
        blk = x[start:start + bs]
        hdr = bytearray([0xFF, 0xF9 if variable else 0xF8])
        if bs in _BS_CODES:
            bcode, bextra = _BS_CODES[bs], b""
        elif bs <= 256:
            bcode, bextra = 6, bytes([bs - 1])
        else:
            bcode, bextra = 7, (bs - 1).to_bytes(2, "big")
        if sr_mode == "table":
            scode, sextra = _SR_CODES[sr], b""
        elif sr_mode == "info":
            scode, sextra = 0, b""
        elif sr_mode == "khz":
            scode, sextra = 12, bytes([sr // 1000])
        elif sr_mode == "hz":
            scode, sextra = 13, sr.to_bytes(2, "big")
        else:
            scode, sextra = 14, (sr // 10).to_bytes(2, "big")
        a = assign if assign is not None else ch - 1
        sscode = 0 if ss_from_info or bps not in _SS_CODES else _SS_CODES[bps]
        hdr += bytes([(bcode << 4) | scode, (a << 4) | (sscode << 1)])
        hdr += _utf8(start if variable else fi) + bextra + sextra
        hdr += bytes([_crc8(bytes(hdr))])
        chans = [[int(v) for v in blk[:, c]] for c in range(ch)]
        sides = [False] * ch
        if a == 8:
            chans, sides = [chans[0], [l - r for l, r in zip(*chans)]], [False, True]
        elif a == 9:
            chans, sides = [[l - r for l, r in zip(*chans)], chans[1]], [True, False]
        elif a == 10:
            chans = [[(l + r) >> 1 for l, r in zip(*chans)], [l - r for l, r in zip(*chans)]]
            sides = [False, True]
        w = _Bits()
        for c in range(ch):
            k = kind(c, chans[c]) if callable(kind) else kind
            _subframe(w, chans[c], bps + sides[c], k, porder, method, escape_every)
        frame = bytes(hdr) + w.tobytes()
        out += frame + _crc16(frame).to_bytes(2, "big")
        start += bs
    return bytes(out)


def _expect(x: np.ndarray, bps: int) -> np.ndarray:
    return (x.astype(np.float64) / 2.0 ** (bps - 1)).astype(np.float32)


def _ints(rng, n, ch, bps, smooth=True):
    hi = 2 ** (bps - 1)
    if smooth:
        t = np.arange(n)[:, None]
        x = (0.7 * hi * np.sin(2 * np.pi * t * (0.01 + 0.003 * np.arange(ch)))).astype(np.int64)
        x += rng.integers(-3, 4, (n, ch))
    else:
        x = rng.integers(-hi, hi, (n, ch))
    return np.clip(x, -hi, hi - 1)


def _decode(data):
    got, sr = C.decode_flac(data)
    return got, sr


@pytest.mark.parametrize("bps", [4, 8, 12, 16, 20, 24, 32])
def test_own_encoder_depths_and_assignments(bps, rng):
    n = 700
    for assign in [None, 8, 9, 10]:
        for kind in ["verbatim", ("fixed", 0), ("fixed", 1), ("fixed", 2), ("fixed", 3), ("fixed", 4)]:
            x = _ints(rng, n, 2, bps, smooth=kind != "verbatim")
            data = _encode(x, bps, 48000, [256, 192, 252], kind, assign=assign,
                           ss_from_info=bps == 4, porder=2, method=1 if bps > 16 else 0)
            got, sr = _decode(data)
            assert sr == 48000
            assert np.array_equal(got, _expect(x, bps)), (assign, kind)


@pytest.mark.parametrize("bps", [16, 24, 32])
def test_own_encoder_lpc(bps, rng):
    n = 1000
    x = _ints(rng, n, 1, bps)
    for coefs, prec, shift in [([1], 2, 0), ([2, -1], 3, 0), ([6000, -3000], 15, 12),
                               ([100, -50, 30, -20, 10, -5, 3, -1] * 4, 15, 9),
                               ([16383, -16384] + [7] * 10, 15, 13)]:
        data = _encode(x, bps, 44100, [500, 500], ("lpc", coefs, prec, shift), porder=1,
                       method=1)
        got, _ = _decode(data)
        assert np.array_equal(got, _expect(x, bps)), (coefs, prec, shift)


def test_own_encoder_header_codes_and_escapes(rng):
    x = _ints(rng, 1300, 3, 16)
    for sr, mode in [(44100, "table"), (37000, "hz"), (22000, "khz"), (11020, "tenhz"),
                     (12345, "info")]:
        for variable in [False, True]:
            for blocks in ([576, 576, 148], [1300], [1, 256, 1043]):
                data = _encode(x, 16, sr, blocks,
                               lambda c, s: ("fixed", 2) if len(s) > 2 else "verbatim", sr_mode=mode, variable=variable,
                               escape_every=2, method=0, porder=0, id3=variable)
                got, got_sr = _decode(data)
                assert got_sr == sr
                assert np.array_equal(got, _expect(x, 16))
    # escape with zero bits, wasted bits, constant, 8 channels
    y = np.zeros((512, 8), dtype=np.int64)
    y[:, 1] = 1000
    y[:, 2] = _ints(rng, 512, 1, 16)[:, 0] * 16
    y[:, 3] = -(2 ** 15)
    def kind(c, s):
        return "constant" if len(set(s)) == 1 else ("fixed", 1)
    data = _encode(y, 16, 8000, [512], kind, escape_every=1, porder=3)
    got, _ = _decode(data)
    assert np.array_equal(got, _expect(y, 16))


def test_own_encoder_unknown_total(rng):
    x = _ints(rng, 3000, 2, 24)
    data = _encode(x, 24, 96000, [1024, 1024, 952], ("fixed", 2), assign=10, unknown_total=True)
    got, sr = _decode(data)
    assert sr == 96000 and np.array_equal(got, _expect(x, 24))
    with pytest.raises(RuntimeError):
        _decode(data[:-3])


def test_own_encoder_rejects_invalid(rng):
    x = _ints(rng, 256, 1, 16)
    good = _encode(x, 16, 44100, [256], ("lpc", [2, -1], 3, 0))
    assert np.array_equal(_decode(good)[0], _expect(x, 16))
    # negative LPC shift: patch the shift field and fix the CRC-16
    hdr_len = 6  # sync (2), codes (2), frame number (1), CRC-8 (1)
    fstart = good.index(b"\xff\xf8")
    body = bytearray(good[fstart:-2])
    # subframe header (8 bits) + 2 warm-up samples of 16 bits, then precision (4) and shift (5)
    bitpos = hdr_len * 8 + 8 + 32 + 4
    byte, bit = divmod(bitpos, 8)
    val = int.from_bytes(body[byte:byte + 2], "big")
    val |= 1 << (15 - bit)  # sign bit of the shift
    body[byte:byte + 2] = val.to_bytes(2, "big")
    bad = bytes(good[:fstart]) + bytes(body) + _crc16(bytes(body)).to_bytes(2, "big")
    with pytest.raises(RuntimeError, match="negative LPC shift"):
        _decode(bad)
    # bad CRC-8
    hb = bytearray(good)
    hb[fstart + 5] ^= 1
    with pytest.raises(RuntimeError, match="CRC-8"):
        _decode(bytes(hb))
    # fewer samples than STREAMINFO declares
    short = _encode(x, 16, 44100, [256], "verbatim")
    si = bytearray(short)
    si[8 + 17] += 1  # total samples low byte: 256 -> 257
    with pytest.raises(RuntimeError, match="truncated"):
        _decode(bytes(si))
    # more samples than STREAMINFO declares
    si[8 + 16], si[8 + 17] = 0, 255  # 256 -> 255
    with pytest.raises(RuntimeError, match="more samples than STREAMINFO declares"):
        _decode(bytes(si))


# ---- frame by frame (FlacStream) ------------------------------------------------------------

def _streamed(data, want: int, mono: bool = False, max_frames=None) -> np.ndarray:
    s = C.FlacStream(np.frombuffer(data, np.uint8), max_frames, mono)
    parts = []
    while True:
        y = s.read(want)
        if len(y) == 0:
            break
        assert len(y) >= want or s.finished or s.decoded == s.total_samples
        parts.append(y)
    assert s.finished and s.byte_pos <= len(data)
    return np.concatenate(parts)


@pytest.mark.parametrize("ch", [1, 2, 3, 8])
def test_stream_equals_whole_decode(ch, rng):
    """Any read size gives the samples of decode_flac, channels mixed as decode_flac(mono)."""
    data = _encode_sf(_signal("walk", 50_001, ch, rng), 44100, 24)
    for mono in (False, True):
        whole, _ = C.decode_flac(data, None, mono)
        for want in (1, 1000, 4096, 65536, 1 << 20):
            got = _streamed(data, want, mono)
            assert got.shape == whole.shape and np.array_equal(got, whole), (mono, want)


def test_stream_unknown_total_limit_and_errors(rng):
    x = _ints(rng, 3000, 2, 24)
    data = _encode(x, 24, 96000, [1024, 1024, 952], ("fixed", 2), assign=10, unknown_total=True)
    assert np.array_equal(_streamed(data, 100), _expect(x, 24))
    assert np.array_equal(_streamed(data, 100, max_frames=3000), _expect(x, 24))
    s = C.FlacStream(data, 2500)  # counted frame by frame: refused at the frame that passes it
    assert len(s.read(1000)) == 1024
    with pytest.raises(C.FlacLimitError):
        s.read(2000)
    known = _encode_sf(_signal("sine", 5000, 1, rng), 22050, 16)
    with pytest.raises(C.FlacLimitError):  # a declared total over the limit: at construction
        C.FlacStream(known, 4999)
    with pytest.raises(RuntimeError, match="truncated"):
        _streamed(known[:len(known) // 2], 512)
    bad = bytearray(known)
    bad[len(known) // 2] ^= 0x10
    with pytest.raises(RuntimeError):
        _streamed(bytes(bad), 512)
    with pytest.raises(RuntimeError, match="not a FLAC stream"):
        C.FlacStream(b"RIFF0000WAVEfmt ")
