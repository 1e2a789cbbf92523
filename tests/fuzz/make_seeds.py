"""Write the seed corpora of the libFuzzer harnesses (tests/fuzz/corpus/), deterministically.

    python tests/fuzz/make_seeds.py [--out tests/fuzz/corpus]

flac/: small valid FLAC streams written by soundfile (libFLAC) covering the decoder's paths
(mono / stereo / 6 / 8 channels, 8 / 16 / 24 bits, noise -> VERBATIM and LPC subframes, tones ->
FIXED/LPC, silence -> CONSTANT, stereo decorrelation), the same with STREAMINFO's total set to 0
(unknown length), behind an ID3v2 tag, cut inside a frame, with a flipped byte, claiming 32 bits per sample,
and a hand-written stream of three 65,536-sample frames in 33 bytes (the sample limits).
frontend/: byte strings for FuzzedDataProvider (any bytes are a valid input there).
Every file is under 4 KB; the committed corpus is this script's output.
"""
from __future__ import annotations

import argparse
import io
from pathlib import Path

import numpy as np
import soundfile as sf

HERE = Path(__file__).resolve().parent


def _flac(y: np.ndarray, sr: int, subtype: str) -> bytes:
    buf = io.BytesIO()
    sf.write(buf, y, sr, format="FLAC", subtype=subtype)
    return buf.getvalue()


def _unknown_length(b: bytes) -> bytes:
    """STREAMINFO's 36-bit total-samples field set to 0 (allowed: "unknown")."""
    out = bytearray(b)
    si = 8  # "fLaC" + 4-byte block header
    out[si + 13] &= 0xF0
    out[si + 14:si + 18] = b"\0\0\0\0"
    return bytes(out)


def _crc8(data: bytes) -> int:
    c = 0
    for b in data:
        c ^= b
        for _ in range(8):
            c = ((c << 1) ^ 0x07) & 0xFF if c & 0x80 else (c << 1) & 0xFF
    return c


def _as_32_bit(b: bytes) -> bytes:
    """STREAMINFO and the first frame header say 32 bits per sample (the decoder's int64 path);
    the frame header's CRC-8 is recomputed, the subframes are the 16-bit ones (so the frame's
    CRC-16 and its length no longer match: the fuzzing build reads on)."""
    out = bytearray(b)
    si = 8
    out[si + 12] |= 0x01
    out[si + 13] = (out[si + 13] & 0x0F) | 0xF0
    pos = 4
    while True:  # skip the metadata blocks
        last, length = out[pos] & 0x80, int.from_bytes(out[pos + 1:pos + 4], "big")
        pos += 4 + length
        if last:
            break
    out[pos + 3] = (out[pos + 3] & 0xF1) | (7 << 1)
    end = pos + 4  # frame number (UTF-8 coded), block size / rate extras, then the CRC-8
    first = out[end]
    end += 1 + (0 if first < 0x80 else bin(first).index("0", 2) - 3)
    bs_code, sr_code = out[pos + 2] >> 4, out[pos + 2] & 15
    end += {6: 1, 7: 2}.get(bs_code, 0) + {12: 1, 13: 2, 14: 2}.get(sr_code, 0)
    out[end] = _crc8(bytes(out[pos:end]))
    return bytes(out)


def _crc16(data: bytes) -> int:
    c = 0
    for b in data:
        c ^= b << 8
        for _ in range(8):
            c = ((c << 1) ^ 0x8005) & 0xFFFF if c & 0x8000 else (c << 1) & 0xFFFF
    return c


def _long_silence(frames: int = 3, sr: int = 8000) -> bytes:
    """A stream of unknown length (STREAMINFO total 0) of `frames` frames of 65,536 samples,
    each a CONSTANT subframe of 16-bit silence: 11 bytes per frame, written by hand (an
    encoder picks smaller blocks). The decoder's sample limits are reached from a few bytes."""
    bs = 65536
    info = ((bs - 1).to_bytes(2, "big") * 2 + b"\0\0\0" * 2 +
            ((sr << 44) | (0 << 41) | (15 << 36) | 0).to_bytes(8, "big") + b"\0" * 16)
    out = b"fLaC" + bytes([0x80, 0, 0, 34]) + info
    for n in range(frames):
        head = bytes([0xFF, 0xF8, 0x70, 0x08, n]) + (bs - 1).to_bytes(2, "big")
        head += bytes([_crc8(head)])
        frame = head + b"\x00\x00\x00"  # subframe: CONSTANT, value 0 (16 bits)
        out += frame + _crc16(frame).to_bytes(2, "big")
    return out


def flac_seeds() -> dict:
    rng = np.random.default_rng(1234)
    t = np.arange(400) / 8000.0
    tone = 0.5 * np.sin(2 * np.pi * 440 * t)
    seeds = {
        "noise_mono_16.flac": _flac(rng.uniform(-0.5, 0.5, 300), 8000, "PCM_16"),
        "tone_mono_16.flac": _flac(tone, 8000, "PCM_16"),
        "tone_stereo_16.flac": _flac(np.stack([tone, 0.9 * tone], 1), 8000, "PCM_16"),
        "noise_stereo_24.flac": _flac(rng.uniform(-0.3, 0.3, (200, 2)), 16000, "PCM_24"),
        "tone_mono_8.flac": _flac(tone[:300], 8000, "PCM_S8"),
        "silence_mono_16.flac": _flac(np.zeros(500), 8000, "PCM_16"),
        "tone_6ch_16.flac": _flac(np.stack([tone[:120] * (k + 1) / 7 for k in range(6)], 1),
                                  8000, "PCM_16"),
        "tone_8ch_16.flac": _flac(np.stack([tone[:100] * (k + 1) / 9 for k in range(8)], 1),
                                  8000, "PCM_16"),
        "silence_3x65536_unknown_length.flac": _long_silence(),
    }
    tone16 = seeds["tone_mono_16.flac"]
    seeds["tone_mono_16_unknown_length.flac"] = _unknown_length(tone16)
    seeds["tone_stereo_16_unknown_length.flac"] = _unknown_length(seeds["tone_stereo_16.flac"])
    seeds["tone_mono_16_id3.flac"] = b"ID3\x04\x00\x00\x00\x00\x00\x05" + b"\0" * 5 + tone16
    seeds["tone_mono_16_as_32bit.flac"] = _as_32_bit(tone16)
    seeds["tone_stereo_16_as_32bit.flac"] = _as_32_bit(seeds["tone_stereo_16.flac"])
    seeds["tone_mono_16_cut.flac"] = tone16[:len(tone16) - 40]
    flipped = bytearray(seeds["noise_mono_16.flac"])
    flipped[len(flipped) // 2] ^= 0x5A
    seeds["noise_mono_16_flipped.flac"] = bytes(flipped)
    return seeds


def frontend_seeds() -> dict:
    rng = np.random.default_rng(5678)
    return {f"random_{n}.bin": rng.integers(0, 256, n, dtype=np.uint8).tobytes()
            for n in (64, 256, 1024, 3000)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=HERE / "corpus")
    args = ap.parse_args()
    for sub, seeds in (("flac", flac_seeds()), ("frontend", frontend_seeds())):
        d = args.out / sub
        d.mkdir(parents=True, exist_ok=True)
        for name, data in seeds.items():
            assert len(data) < 4096, (name, len(data))
            (d / name).write_bytes(data)
        print(f"{d}: {len(seeds)} seeds, {sum(map(len, seeds.values()))} bytes")


if __name__ == "__main__":
    main()
