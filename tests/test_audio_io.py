"""Audio input: real WAV/FLAC/OGG/MP3 files written to tmp_path, and broken files on purpose.

Measured with libsndfile 1.2.2 + soxr (what the tolerances rest on): decoded lengths are exact
for all four formats, lossy ones included (libsndfile applies the Vorbis granule positions and
the LAME gapless delay/padding), and a lossy decode is aligned with its source (best lag 0), so
lengths are checked to ±1 sample everywhere; lossy formats get looser level and waveform checks.
"""
from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.signal
import soundfile as sf
from audio_fixtures import (
    tone,
    write_audio,
    write_garbage,
    write_noise,
    write_nonfinite_wav,
    write_tone,
    write_truncated,
)

from mmengine.config import AudioConfig
from mmengine.data.audio import (
    LoadResult,
    decode,
    load_audio,
    load_batch,
    loop_to_length,
    peak_safe,
    resample,
    to_mono,
    windows,
)
from mmengine.data.containers import _mpeg_header  # to strip an MP3's first frame
from mmengine.errors import (
    AudioCorruptError,
    AudioEmptyError,
    AudioError,
    AudioMissingError,
    AudioNonFiniteError,
    AudioTooLongError,
    AudioTruncatedError,
    AudioUnsupportedFormatError,
    AudioZeroLengthError,
)

FORMATS = ["wav", "flac", "ogg", "mp3"]
LOSSY = {"ogg", "mp3"}
TARGET = AudioConfig().sample_rate


def dominant_hz(y: np.ndarray, sr: int) -> float:
    spec = np.abs(np.fft.rfft(y * np.hanning(len(y))))
    return float(np.argmax(spec)) * sr / len(y)


# ------------------------------------------------------------------------------ decoding


@pytest.mark.parametrize("ext", FORMATS)
@pytest.mark.parametrize("sr,channels,seconds", [
    (44100, 2, 0.6), (44100, 1, 1.37), (22050, 1, 0.6), (22050, 2, 1.01), (16000, 1, 0.93),
    (16000, 2, 0.6),
])
def test_load_length_frequency_level(tmp_path, ext, sr, channels, seconds):
    path = write_tone(tmp_path / f"t.{ext}", freq=1000.0, sr=sr, seconds=seconds,
                      channels=channels, amplitude=0.5)
    y = load_audio(path)
    assert y.dtype == np.float32 and y.ndim == 1 and y.flags.c_contiguous
    assert abs(len(y) - round(seconds * TARGET)) <= 1, len(y)
    assert abs(dominant_hz(y, TARGET) - 1000.0) <= 2.0
    peak = float(np.abs(y).max())
    if ext in LOSSY:
        assert 0.45 <= peak <= 0.6, peak
    else:
        assert abs(peak - 0.5) < 0.01, peak


@pytest.mark.parametrize("ext", FORMATS)
def test_decode_keeps_native_rate_and_channels(tmp_path, ext):
    path = write_tone(tmp_path / f"t.{ext}", sr=16000, seconds=0.5, channels=2)
    y, sr = decode(path)
    assert sr == 16000 and y.shape == (8000, 2) and y.dtype == np.float32


@pytest.mark.parametrize("ext", sorted(LOSSY))
@pytest.mark.parametrize("sr", [16000, 44100])
def test_lossy_decode_is_aligned_with_source(tmp_path, ext, sr):
    ref = np.random.default_rng(3).uniform(-0.3, 0.3, sr // 2)
    path = write_audio(tmp_path / f"n.{ext}", ref, sr)
    y = decode(path)[0][:, 0]
    assert len(y) == len(ref)
    corr = scipy.signal.correlate(y, ref, mode="full", method="fft")
    lags = scipy.signal.correlation_lags(len(y), len(ref), mode="full")
    window = np.abs(lags) <= 1500
    assert lags[window][np.argmax(corr[window])] == 0
    assert np.corrcoef(y, ref)[0, 1] > 0.6


def test_wav_with_unknown_extension_is_read_by_content(tmp_path):
    path = write_tone(tmp_path / "tone.bin", fmt="WAV", seconds=0.3)
    assert len(load_audio(path)) == round(0.3 * TARGET)


def test_resample_quality_and_identity(rng):
    y = rng.standard_normal(4410).astype(np.float32)
    same = resample(y, 22050, 22050)
    assert same.dtype == np.float32 and np.array_equal(same, y)
    for q in ("QQ", "HQ", "VHQ"):
        assert abs(len(resample(y, 44100, 22050, q)) - 2205) <= 1
    with pytest.raises(ValueError):
        resample(y, 0, 22050)


# --------------------------------------------------------------------- mixing and levels


@pytest.mark.parametrize("ext", ["wav", "flac"])
def test_opposite_channels_mix_to_silence(tmp_path, ext):
    x = tone(440.0, 44100, 0.5, 0.5)
    path = write_audio(tmp_path / f"s.{ext}", np.stack([x, -x], axis=1), 44100)
    assert float(np.abs(load_audio(path)).max()) < 1e-4


def test_to_mono_is_channel_mean(rng):
    y = rng.uniform(-1, 1, (1000, 3)).astype(np.float32)
    np.testing.assert_allclose(to_mono(y), y.mean(axis=1), atol=1e-7)
    assert to_mono(y[:, :1]).shape == (1000,)
    assert to_mono(y[:, 0].astype(np.float64)).dtype == np.float32
    with pytest.raises(ValueError):
        to_mono(np.zeros((2, 2, 2)))


def test_one_silent_channel_halves_the_level(tmp_path):
    x = tone(440.0, 22050, 0.5, 0.8)
    path = write_audio(tmp_path / "half.wav", np.stack([x, np.zeros_like(x)], axis=1), 22050)
    np.testing.assert_allclose(load_audio(path), 0.4 * np.sin(2 * np.pi * 440 * np.arange(
        len(x)) / 22050), atol=1e-4)


def test_overshoot_after_resampling_is_scaled_not_clipped(tmp_path):
    sr = 44100
    square = np.sign(np.sin(2 * np.pi * 1000.0 * np.arange(sr // 2) / sr + 0.1))
    path = write_audio(tmp_path / "square.wav", square.astype(np.float32), sr, subtype="FLOAT")
    raw = resample(square.astype(np.float32), sr, TARGET)
    overshoot = float(np.abs(raw).max())
    assert overshoot > 1.01, "fixture must overshoot after resampling"
    y = load_audio(path)
    assert float(np.abs(y).max()) == pytest.approx(1.0, abs=1e-6)
    np.testing.assert_allclose(y, raw / overshoot, atol=1e-6)
    assert np.sum(np.abs(y) >= 0.999) < 0.01 * len(y), "looks clipped"


def test_float_file_above_full_scale_is_scaled(tmp_path):
    x = tone(440.0, 22050, 0.5, 2.0).astype(np.float32)
    y = load_audio(write_audio(tmp_path / "loud.wav", x, 22050, subtype="FLOAT"))
    np.testing.assert_allclose(y, x / np.abs(x).max(), atol=1e-6)


def test_quiet_levels_are_unchanged():
    y = np.array([0.1, -0.25, 0.3], np.float32)
    assert peak_safe(y) is y
    np.testing.assert_allclose(peak_safe(np.array([2.0, -4.0], np.float32)), [0.5, -1.0])


# -------------------------------------------------------------------------------- errors


def _raises(exc_type, path, **kw):
    with pytest.raises(exc_type) as info:
        load_audio(path, **kw)
    assert str(path) in str(info.value)
    assert info.value.path == str(path)
    return info.value


def test_missing_and_directory(tmp_path):
    err = _raises(AudioMissingError, tmp_path / "nope.wav")
    assert isinstance(err, FileNotFoundError)
    (tmp_path / "d.wav").mkdir()
    _raises(AudioMissingError, tmp_path / "d.wav")


def test_empty_file(tmp_path):
    (tmp_path / "e.flac").write_bytes(b"")
    _raises(AudioEmptyError, tmp_path / "e.flac")


@pytest.mark.parametrize("ext", FORMATS)
@pytest.mark.parametrize("fraction", [0.03, 0.5, 0.93])
def test_truncated(tmp_path, ext, fraction):
    src = write_noise(tmp_path / f"full.{ext}", sr=44100, seconds=1.0, channels=2)
    assert len(load_audio(src)) == TARGET
    _raises(AudioTruncatedError, write_truncated(src, tmp_path / f"cut.{ext}", fraction))


def test_truncated_wav_header(tmp_path):
    src = write_tone(tmp_path / "full.wav", seconds=0.2)
    _raises(AudioTruncatedError, write_truncated(src, tmp_path / "cut.wav", 20 / 8864))


def test_ogg_without_end_of_stream_page(tmp_path):
    src = write_noise(tmp_path / "full.ogg", seconds=1.0)
    data = bytearray(src.read_bytes())
    last = data.rfind(b"OggS")
    cut = tmp_path / "cut.ogg"
    cut.write_bytes(bytes(data[:last]))
    err = _raises(AudioTruncatedError, cut)
    assert "end-of-stream" in str(err)


def _cbr_mp3(path):
    """1 s CBR MP3 at 48 kHz: every frame has the same length (no padding at 48 kHz)."""
    y = np.random.default_rng(1).uniform(-0.5, 0.5, 48000)
    sf.write(str(path), y, 48000, bitrate_mode="CONSTANT", compression_level=0.5)
    data = path.read_bytes()
    frame = data.find(data[:3], 1)
    assert frame > 0 and all(data[k * frame:k * frame + 3] == data[:3]
                             for k in range(len(data) // frame))
    return data, frame


def test_mp3_cut_at_a_frame_boundary_is_truncated(tmp_path):
    data, frame = _cbr_mp3(tmp_path / "cbr.mp3")
    cut = tmp_path / "cut.mp3"
    cut.write_bytes(data[:frame * (len(data) // frame // 2)])
    err = _raises(AudioTruncatedError, cut)
    assert "header announces 48000 frames" in str(err)


def test_mp3_cut_inside_a_frame_header(tmp_path):
    data, frame = _cbr_mp3(tmp_path / "cbr.mp3")
    cut = tmp_path / "cut.mp3"
    cut.write_bytes(data[:frame * 10 + 2])
    err = _raises(AudioTruncatedError, cut)
    assert "MPEG frame header" in str(err) and "cut short" in str(err)


def _flac_metadata_end(data: bytes) -> int:
    pos = 4
    while True:
        last, length = data[pos] & 0x80, int.from_bytes(data[pos + 1:pos + 4], "big")
        pos += 4 + length
        if last:
            return pos


def test_flac_cut_in_or_right_after_metadata(tmp_path):
    data = write_noise(tmp_path / "full.flac", seconds=0.5).read_bytes()
    end = _flac_metadata_end(data)
    (tmp_path / "meta.flac").write_bytes(data[:30])
    assert "metadata" in str(_raises(AudioTruncatedError, tmp_path / "meta.flac"))
    (tmp_path / "noframes.flac").write_bytes(data[:end])
    assert "no audio frames" in str(_raises(AudioTruncatedError, tmp_path / "noframes.flac"))


def test_flac_without_total_sample_count_decodes_fully(tmp_path):
    src = write_noise(tmp_path / "full.flac", seconds=0.5, channels=2)
    data = bytearray(src.read_bytes())
    data[8 + 13] &= 0xF0
    data[8 + 14:8 + 18] = bytes(4)
    (tmp_path / "stream.flac").write_bytes(bytes(data))
    assert sf.info(str(tmp_path / "stream.flac")).frames > 2**62, "libsndfile: unknown length"
    y, sr = decode(tmp_path / "stream.flac")
    np.testing.assert_array_equal(y, decode(src)[0])
    _raises(AudioTooLongError, tmp_path / "stream.flac", max_duration_s=0.25)


def test_wav_header_sizes(tmp_path):
    data = bytearray(write_noise(tmp_path / "n.wav", seconds=0.5).read_bytes())
    at = data.find(b"data")
    data[4:8] = data[at + 4:at + 8] = b"\xff\xff\xff\xff"
    (tmp_path / "streamed.wav").write_bytes(bytes(data))
    assert len(load_audio(tmp_path / "streamed.wav")) == round(0.5 * TARGET)
    data[at + 4:at + 8] = bytes(4)
    (tmp_path / "unfinished.wav").write_bytes(bytes(data))
    assert "never finalised" in str(_raises(AudioCorruptError, tmp_path / "unfinished.wav"))


def test_flac_with_zero_samples(tmp_path):
    data = bytearray(write_noise(tmp_path / "full.flac", seconds=0.5).read_bytes())
    assert data[4] & 0x7F == 0, "STREAMINFO comes first"
    data[8 + 13] &= 0xF0
    data[8 + 14:8 + 18] = bytes(4)
    (tmp_path / "zero.flac").write_bytes(bytes(data[:_flac_metadata_end(bytes(data))]))
    _raises(AudioZeroLengthError, tmp_path / "zero.flac")


def test_mp3_without_info_frame(tmp_path):
    data, frame = _cbr_mp3(tmp_path / "cbr.mp3")
    cbr = tmp_path / "cbr_noinfo.mp3"
    cbr.write_bytes(data[frame:])
    n_frames = len(data) // frame - 1
    assert len(decode(cbr)[0]) == n_frames * 1152, "CBR without Info: every frame decoded"

    vbr_src = write_noise(tmp_path / "vbr.mp3", sr=44100, seconds=1.0)
    vbr_data = vbr_src.read_bytes()
    vbr = tmp_path / "vbr_noinfo.mp3"
    vbr.write_bytes(vbr_data[_mpeg_header(vbr_data, 0)[0]:])
    err = _raises(AudioUnsupportedFormatError, vbr)
    assert "Xing/Info" in str(err)


@pytest.mark.parametrize("ext", FORMATS)
def test_garbage_with_audio_extension_is_corrupt(tmp_path, ext):
    _raises(AudioCorruptError, write_garbage(tmp_path / f"g.{ext}"))


def test_text_with_audio_extension_is_corrupt(tmp_path):
    (tmp_path / "notes.wav").write_text("not audio\n" * 100)
    _raises(AudioCorruptError, tmp_path / "notes.wav")


@pytest.mark.parametrize("name", ["song.m4a", "song.xyz", "noext"])
def test_unknown_extension_is_unsupported(tmp_path, name):
    (tmp_path / name).write_text("hello\n" * 100)
    _raises(AudioUnsupportedFormatError, tmp_path / name)
    _raises(AudioUnsupportedFormatError, write_garbage(tmp_path / f"g_{name}"))


def test_foreign_container_is_unsupported_whatever_its_name(tmp_path):
    mp4 = b"\x00\x00\x00\x20ftypM4A \x00\x00\x02\x00" + bytes(2000)
    (tmp_path / "song.mp3").write_bytes(mp4)
    err = _raises(AudioUnsupportedFormatError, tmp_path / "song.mp3")
    assert "MP4" in str(err)


@pytest.mark.parametrize("ext", ["wav", "ogg"])
def test_zero_frames(tmp_path, ext):
    path = tmp_path / f"z.{ext}"
    sf.write(str(path), np.zeros(0, np.float32), 22050)
    _raises(AudioZeroLengthError, path)


@pytest.mark.parametrize("value", [float("nan"), float("inf"), -float("inf")])
def test_non_finite_samples(tmp_path, value):
    err = _raises(AudioNonFiniteError, write_nonfinite_wav(tmp_path / "nan.wav", value=value))
    assert "frame 100" in str(err)


def test_too_long(tmp_path):
    path = write_tone(tmp_path / "long.wav", seconds=2.0)
    _raises(AudioTooLongError, path, max_duration_s=1.5)
    _raises(AudioTooLongError, path, cfg=AudioConfig(max_duration_s=1.0))
    assert len(load_audio(path, max_duration_s=math.inf)) == 2 * TARGET


def test_too_long_is_decided_from_the_header(tmp_path):
    src = write_noise(tmp_path / "full.flac", seconds=2.0)
    cut = write_truncated(src, tmp_path / "cut.flac", 0.2)
    _raises(AudioTruncatedError, cut)
    _raises(AudioTooLongError, cut, max_duration_s=1.0)


def test_every_error_is_an_audio_error():
    for cls in (AudioMissingError, AudioEmptyError, AudioTruncatedError, AudioCorruptError,
                AudioUnsupportedFormatError, AudioZeroLengthError, AudioNonFiniteError,
                AudioTooLongError):
        assert issubclass(cls, AudioError)


# --------------------------------------------------------------------------------- batch


@pytest.mark.parametrize("workers", [1, 3])
def test_batch_keeps_order_and_goes_on(tmp_path, workers, capsys):
    good = write_tone(tmp_path / "a.flac", seconds=0.5)
    stereo = write_tone(tmp_path / "b.mp3", sr=44100, seconds=0.4, channels=2)
    cut = write_truncated(write_noise(tmp_path / "c.wav", seconds=0.5), tmp_path / "cut.wav")
    paths = [good, tmp_path / "missing.ogg", write_garbage(tmp_path / "g.wav"), stereo, cut]
    results = load_batch(paths, progress=True, workers=workers)
    assert [r.path for r in results] == [str(p) for p in paths]
    assert [r.ok for r in results] == [True, False, False, True, False]
    assert [type(r.error) for r in results] == [
        type(None), AudioMissingError, AudioCorruptError, type(None), AudioTruncatedError]
    assert all(isinstance(r, LoadResult) for r in results)
    assert len(results[0].audio) == round(0.5 * TARGET) and results[0].error is None
    assert results[3].audio.shape == (round(0.4 * TARGET),) and results[1].audio is None
    assert "5/5" in capsys.readouterr().err


def test_batch_without_progress_is_quiet(tmp_path, capsys):
    results = load_batch([write_tone(tmp_path / "a.wav", seconds=0.2)], progress=False)
    assert results[0].ok
    assert capsys.readouterr().err == ""


@pytest.mark.parametrize("workers", [1, 2])
def test_batch_lets_bugs_propagate(tmp_path, workers):
    paths = [write_tone(tmp_path / "a.wav", sr=44100, seconds=0.2)] * 2
    with pytest.raises(ValueError):
        load_batch(paths, AudioConfig(resample_quality="no-such-quality"), progress=False,
                   workers=workers)


# ------------------------------------------------------------------------ fixed lengths


def test_loop_to_length():
    y = np.arange(5, dtype=np.float32)
    out = loop_to_length(y, 13)
    assert out.shape == (13,) and out.dtype == np.float32
    np.testing.assert_array_equal(out, np.arange(13) % 5)
    np.testing.assert_array_equal(loop_to_length(y, 3), [0, 1, 2])
    np.testing.assert_array_equal(loop_to_length(y, 5), y)
    assert loop_to_length(y, 0).shape == (0,)
    two = loop_to_length(np.stack([y, -y], axis=1), 7)
    np.testing.assert_array_equal(two[:, 1], -(np.arange(7) % 5))
    with pytest.raises(ValueError):
        loop_to_length(np.zeros(0), 10)
    with pytest.raises(ValueError):
        loop_to_length(y, -1)


def test_windows_rule():
    y = np.arange(25, dtype=np.float32)
    exact = windows(y[:20], 10)
    assert len(exact) == 2 and np.shares_memory(exact[0], y)
    kept = windows(y, 10)
    assert len(kept) == 3
    np.testing.assert_array_equal(kept[2], [20, 21, 22, 23, 24, 20, 21, 22, 23, 24])
    dropped = windows(y[:24], 10)
    assert len(dropped) == 2
    short = windows(y[:4], 10)
    assert len(short) == 1
    np.testing.assert_array_equal(short[0], np.arange(10) % 4)
    overlap = windows(y[:20], 10, hop=5)
    assert [w[0] for w in overlap] == [0, 5, 10]
    overlap_tail = windows(y[:23], 10, hop=5)
    assert [w[0] for w in overlap_tail] == [0, 5, 10, 15]
    np.testing.assert_array_equal(overlap_tail[3], [15, 16, 17, 18, 19, 20, 21, 22, 15, 16])
    assert all(w.shape == (10,) for w in kept + dropped + short + overlap)
    with pytest.raises(ValueError):
        windows(np.zeros(0), 10)
    with pytest.raises(ValueError):
        windows(y, 0)


def test_windows_of_loaded_audio(tmp_path):
    cfg = AudioConfig(clip_seconds=0.25)
    y = load_audio(write_noise(tmp_path / "n.flac", seconds=1.2), cfg)
    n = int(cfg.clip_seconds * cfg.sample_rate)
    ws = windows(y, n)
    assert len(ws) == 5 and all(len(w) == n for w in ws)
    np.testing.assert_array_equal(np.concatenate(ws[:4]), y[:4 * n])


def test_flac_native_decoder_equals_libsndfile_path(tmp_path, monkeypatch):
    """FLAC goes through mmengine._C.decode_flac when built; the result is bit-identical to
    the libsndfile path, and a stream it refuses still gets libsndfile's typed error."""
    from mmengine._ext import native_extension
    from mmengine.data import audio as audio_io

    if native_extension() is None or not hasattr(native_extension(), "decode_flac"):
        pytest.skip("mmengine._C built without the FLAC decoder")
    rng = np.random.default_rng(0)
    p = tmp_path / "x.flac"
    sf.write(p, (0.3 * rng.standard_normal((30000, 2))).astype(np.float32), 44100,
             subtype="PCM_24")
    calls = []
    real = audio_io._decode_flac_native
    monkeypatch.setattr(audio_io, "_decode_flac_native",
                        lambda *a, **k: calls.append(1) or real(*a, **k))
    fast = audio_io.load_audio(p, AudioConfig())
    assert calls and audio_io._decode_flac_native(str(p), None) is not None
    monkeypatch.setattr(audio_io, "_decode_flac_native", lambda *a, **k: None)
    np.testing.assert_array_equal(fast, audio_io.load_audio(p, AudioConfig()))
    monkeypatch.setattr(audio_io, "_decode_flac_native", real)
    cut = tmp_path / "cut.flac"
    cut.write_bytes(p.read_bytes()[: len(p.read_bytes()) // 2])
    with pytest.raises(AudioTruncatedError):
        audio_io.load_audio(cut, AudioConfig())


def test_nul_byte_in_the_path_is_a_missing_file():
    """os.stat raises ValueError on such a name; an engine item must get a typed error."""
    with pytest.raises(AudioMissingError, match="null byte"):
        load_audio("a\x00b.wav")
