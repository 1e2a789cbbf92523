"""Reference front end against librosa (every parameter pinned) and by properties."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import scipy.fft

from mmengine.config import FrontendConfig
from mmengine.features import reference as ref

librosa = pytest.importorskip("librosa")

SR = 22050


def _signals(rng):
    t = np.arange(2 * SR) / SR
    return {
        "noise": 0.1 * rng.standard_normal(t.size),
        "tone": 0.5 * np.sin(2 * np.pi * 440.0 * t),
        "chirp": 0.3 * np.sin(2 * np.pi * (100.0 + 2000.0 * t) * t),
        "mix": 0.2 * np.sin(2 * np.pi * 220.0 * t) + 0.05 * rng.standard_normal(t.size)
        + 0.1 * np.sign(np.sin(2 * np.pi * 3.0 * t)),
    }


def _librosa(y, cfg: FrontendConfig):
    S = librosa.feature.melspectrogram(
        y=y, sr=cfg.sample_rate, n_fft=cfg.n_fft, hop_length=cfg.hop_length,
        win_length=cfg.n_fft, window="hann", center=cfg.center, pad_mode=cfg.pad_mode,
        power=cfg.power, n_mels=cfg.n_mels, fmin=cfg.fmin, fmax=cfg.fmax,
        htk=cfg.mel_scale == "htk", norm=cfg.mel_norm)
    lm = 10.0 * np.log10(np.maximum(S, cfg.amin))
    return lm, scipy.fft.dct(lm, type=2, norm="ortho", axis=-2)[: cfg.n_mfcc]


@pytest.mark.parametrize("variant", [
    {}, {"mel_scale": "htk"}, {"mel_norm": None}, {"n_mels": 40, "n_mfcc": 13, "fmin": 30.0, "fmax": 8000.0},
])
def test_float64_matches_librosa(rng, variant):
    cfg = dataclasses.replace(FrontendConfig(), **variant)
    for name, y in _signals(rng).items():
        ours = ref.compute_features(y, cfg, dtype=np.float64)
        lm, mf = _librosa(y, cfg)
        assert ours["logmel"].shape == lm.shape == (cfg.n_mels, cfg.n_frames(y.size))
        d_lm = np.abs(ours["logmel"] - lm).max()
        d_mf = np.abs(ours["mfcc"] - mf).max()
        # measured: <= 3e-7 dB (log-Mel) and <= 3e-7 (MFCC), edge frames included
        assert d_lm <= 1e-3, f"{name}: log-Mel max |diff| {d_lm:.3g} dB > 1e-3"
        assert d_mf <= 1e-3, f"{name}: MFCC max |diff| {d_mf:.3g} > 1e-3"


def test_float32_matches_librosa_where_above_float32_noise(rng):
    """float32 FFT rounding noise sits ~140 dB below a signal's peak; compare bins above it."""
    cfg = FrontendConfig()
    for name, y in _signals(rng).items():
        ours = ref.compute_features(y.astype(np.float32), cfg)["logmel"]
        lm, _ = _librosa(y, cfg)
        above = lm > lm.max() - 100.0
        d = np.abs(ours - lm)[above].max()
        assert d <= 0.05, f"{name}: float32 log-Mel max |diff| {d:.3g} dB within 100 dB of peak"


def test_filterbank_matches_librosa():
    for scale, norm in [("slaney", "slaney"), ("htk", None), ("htk", "slaney")]:
        ours = ref.mel_filterbank(sr=SR, n_fft=2048, n_mels=128, scale=scale, norm=norm)
        theirs = librosa.filters.mel(sr=SR, n_fft=2048, n_mels=128, htk=scale == "htk", norm=norm)
        assert np.abs(ours - theirs).max() <= 1e-6 * np.abs(theirs).max()


@pytest.mark.parametrize("freq", [110.0, 440.0, 1000.0, 3520.0, 8000.0])
def test_pure_tone_lands_in_nearest_band(freq):
    cfg = FrontendConfig()
    t = np.arange(SR) / SR
    lm = ref.compute_features(0.5 * np.sin(2 * np.pi * freq * t), cfg, dtype=np.float64)["logmel"]
    band = int(np.argmax(lm[:, lm.shape[1] // 2]))
    mel_pts = np.linspace(ref.hz_to_mel(0.0), ref.hz_to_mel(SR / 2), cfg.n_mels + 2)
    centres = ref.mel_to_hz(mel_pts[1:-1])
    expected = int(np.argmin(np.abs(centres - freq)))
    assert abs(band - expected) <= 1, f"{freq} Hz peaked in band {band}, nearest centre {expected}"


def test_batched_equals_per_item(rng):
    cfg = FrontendConfig(n_mels=64)
    batch = rng.standard_normal((3, SR)).astype(np.float32) * 0.1
    whole = ref.compute_features(batch, cfg)
    for i in range(3):
        one = ref.compute_features(batch[i], cfg)
        np.testing.assert_allclose(whole["logmel"][i], one["logmel"], atol=1e-5)
        np.testing.assert_allclose(whole["mfcc"][i], one["mfcc"], atol=1e-4)


def test_silence_is_finite_at_the_floor():
    cfg = FrontendConfig()
    f = ref.compute_features(np.zeros(SR, np.float32), cfg)
    assert np.isfinite(f["logmel"]).all() and np.isfinite(f["mfcc"]).all()
    assert np.all(f["logmel"] == pytest.approx(10 * np.log10(cfg.amin)))


@pytest.mark.parametrize("n", [2048, 2049, 22050, 30 * SR])
def test_frame_count(n):
    cfg = FrontendConfig()
    f = ref.compute_features(np.ones(n, np.float32) * 0.01, cfg)
    assert f["logmel"].shape[-1] == cfg.n_frames(n)
    if n == 30 * SR:
        assert cfg.n_frames(n) == 1292


def test_torch_module_matches_numpy(rng):
    torch = pytest.importorskip("torch")
    cfg = FrontendConfig()
    y = (0.1 * rng.standard_normal((2, SR))).astype(np.float64)
    lm, mf = ref.LogMelMFCC(cfg).double()(torch.from_numpy(y))
    want = ref.compute_features(y, cfg, dtype=np.float64)
    # buffers are built in float32 (filterbank rounding ~1e-7 relative)
    assert np.abs(lm.numpy() - want["logmel"]).max() <= 1e-4
    assert np.abs(mf.numpy() - want["mfcc"]).max() <= 1e-4
