"""Reference front end: against librosa with every parameter pinned, by properties, and the
torch module and front-end dispatcher against the numpy reference."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import scipy.fft

from mmengine.config import FrontendConfig
from mmengine.errors import OptionalDependencyError, UnknownBackendError
from mmengine.features import reference as ref
from mmengine.features.frontend import available_frontends, get_frontend

librosa = pytest.importorskip("librosa")

SR = 22050
FLOOR_DB = 10 * np.log10(FrontendConfig().amin)
VARIANTS = {
    "slaney-slaney": {},
    "htk-slaney": {"mel_scale": "htk"},
    "slaney-none": {"mel_norm": None},
    "htk-none": {"mel_scale": "htk", "mel_norm": None},
    "narrow-band": {"n_mels": 40, "n_mfcc": 13, "fmin": 30.0, "fmax": 8000.0},
}


def _signals(rng, seconds=2.0):
    t = np.arange(int(seconds * SR)) / SR
    return {
        "noise": 0.1 * rng.standard_normal(t.size),
        "tone": 0.5 * np.sin(2 * np.pi * 440.0 * t),
        "chirp": 0.3 * np.sin(2 * np.pi * (100.0 + 2000.0 * t) * t),
        "mixture": 0.2 * np.sin(2 * np.pi * 220.0 * t) + 0.1 * np.sin(2 * np.pi * 1210.0 * t)
        + 0.05 * rng.standard_normal(t.size) + 0.1 * np.sign(np.sin(2 * np.pi * 3.0 * t)),
    }


def _librosa(y, cfg: FrontendConfig, filter_dtype):
    """librosa with the FrontendConfig docstring's call (``dtype`` is librosa's filterbank dtype)."""
    S = librosa.feature.melspectrogram(
        y=y, sr=cfg.sample_rate, n_fft=cfg.n_fft, hop_length=cfg.hop_length,
        win_length=cfg.n_fft, window="hann", center=cfg.center, pad_mode=cfg.pad_mode,
        power=cfg.power, n_mels=cfg.n_mels, fmin=cfg.fmin, fmax=cfg.fmax,
        htk=cfg.mel_scale == "htk", norm=cfg.mel_norm, dtype=filter_dtype)
    lm = librosa.power_to_db(S, ref=cfg.db_ref, amin=cfg.amin, top_db=None)
    return lm, scipy.fft.dct(lm, type=2, norm="ortho", axis=-2)[: cfg.n_mfcc]


def _edge_frames(cfg: FrontendConfig, n: int) -> np.ndarray:
    """Mask ``(frames,)``: True where the window reaches into the centring padding."""
    starts = np.arange(cfg.n_frames(n)) * cfg.hop_length - cfg.n_fft // 2
    return (starts < 0) | (starts + cfg.n_fft > n)


def _max_diffs(a, b, edge):
    d = np.abs(a - b)
    return d[:, ~edge].max(), d[:, edge].max()


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_float64_matches_librosa_on_interior_and_edge_frames(rng, variant):
    cfg = dataclasses.replace(FrontendConfig(), **VARIANTS[variant])
    for name, y in _signals(rng).items():
        ours = ref.compute_features(y, cfg, dtype=np.float64)
        lm, mf = _librosa(y, cfg, np.float64)
        assert ours["logmel"].dtype == np.float64
        assert ours["logmel"].shape == lm.shape == (cfg.n_mels, cfg.n_frames(y.size))
        assert ours["mfcc"].shape == mf.shape == (cfg.n_mfcc, cfg.n_frames(y.size))
        edge = _edge_frames(cfg, y.size)
        assert edge[:2].all() and edge[-2:].all() and (~edge).sum() > 50
        lm_in, lm_edge = _max_diffs(ours["logmel"], lm, edge)
        mf_in, mf_edge = _max_diffs(ours["mfcc"], mf, edge)
        # measured (every variant, interior and edge frames alike): 7.8e-9 dB log-Mel, 1.4e-9
        # MFCC (tones; 2e-14 dB / 2.3e-13 on broadband signals); bounds about 2x
        assert max(lm_in, lm_edge) <= 2e-8, (
            f"{variant}/{name}: float64 log-Mel max |diff| interior {lm_in:.2g} dB, "
            f"edge {lm_edge:.2g} dB > 2e-8 dB")
        assert max(mf_in, mf_edge) <= 5e-9, (
            f"{variant}/{name}: float64 MFCC max |diff| interior {mf_in:.2g}, edge {mf_edge:.2g}")


def test_float64_matches_librosa_default_float32_filterbank(rng):
    """librosa's default filterbank is float32 even for float64 audio."""
    cfg = FrontendConfig()
    for name, y in _signals(rng).items():
        ours = ref.compute_features(y, cfg, dtype=np.float64)
        lm, mf = _librosa(y, cfg, np.float32)
        d_lm, d_mf = np.abs(ours["logmel"] - lm).max(), np.abs(ours["mfcc"] - mf).max()
        # measured: 2.9e-7 dB log-Mel, 2.2e-7 MFCC (float32 weights, relative rounding 6e-8);
        # bounds about 2x
        assert d_lm <= 1e-6, f"{name}: log-Mel max |diff| {d_lm:.2g} dB > 1e-6 dB"
        assert d_mf <= 5e-7, f"{name}: MFCC max |diff| {d_mf:.2g} > 5e-7"


@pytest.mark.parametrize("variant", ["slaney-slaney", "htk-none"])
def test_float32_error_is_within_librosas_own_float32_error(rng, variant):
    """Against float64 librosa, our float32 error <= 2 x librosa's float32 error + 1e-3."""
    cfg = dataclasses.replace(FrontendConfig(), **VARIANTS[variant])
    for name, y in _signals(rng).items():
        exact_lm, exact_mf = _librosa(y, cfg, np.float64)
        ours = ref.compute_features(y.astype(np.float32), cfg)
        assert ours["logmel"].dtype == np.float32 and ours["mfcc"].dtype == np.float32
        theirs_lm, theirs_mf = _librosa(y.astype(np.float32), cfg, np.float32)
        edge = _edge_frames(cfg, y.size)
        for what, mine, theirs, exact in [("log-Mel", ours["logmel"], theirs_lm, exact_lm),
                                          ("MFCC", ours["mfcc"], theirs_mf, exact_mf)]:
            for part, cols in [("interior", ~edge), ("edge", edge)]:
                e_ours = np.abs(mine - exact)[:, cols].max()
                e_lib = np.abs(theirs - exact)[:, cols].max()
                # measured: up to 0.07 dB log-Mel / 0.013 MFCC (chirp, htk-none) in quiet
                # bins, the same as librosa's own float32 error; noise: 5e-6 dB. Our error is at
                # most 1.06x librosa's (log-Mel) and 2x librosa's + 7.6e-4 (MFCC), so the 1e-3
                # term carries the MFCC (a relative bound: float32 rounding, not a margin)
                assert e_ours <= 2 * e_lib + 1e-3, (
                    f"{variant}/{name} {what} {part}: float32 max |err| {e_ours:.3g} vs "
                    f"librosa float32 {e_lib:.3g} (allowed 2x + 1e-3)")
        d_lm = np.abs(ours["logmel"] - theirs_lm).max()
        d_mf = np.abs(ours["mfcc"] - theirs_mf).max()
        # measured against librosa float32: 1.5e-5 dB log-Mel, 1.6e-3 MFCC; bounds about 2x
        assert d_lm <= 5e-5, f"{variant}/{name}: float32 log-Mel vs librosa float32 {d_lm:.2g} dB"
        assert d_mf <= 5e-3, f"{variant}/{name}: float32 MFCC vs librosa float32 {d_mf:.2g}"
        bright = exact_lm > exact_lm.max() - 100.0  # bins within 100 dB of the peak
        d = np.abs(ours["logmel"] - exact_lm)[bright].max()
        # measured 6.8e-4 dB
        assert d <= 2e-3, f"{variant}/{name}: float32 log-Mel within 100 dB of peak: {d:.3g} dB"


@pytest.mark.parametrize("scale,norm,fmin,fmax", [
    ("slaney", "slaney", 0.0, None), ("htk", "slaney", 0.0, None), ("slaney", None, 0.0, None),
    ("htk", None, 30.0, 8000.0), ("slaney", "slaney", 300.0, 5000.0)])
def test_filterbank_matches_librosa(scale, norm, fmin, fmax):
    ours = ref.mel_filterbank(sr=SR, n_fft=2048, n_mels=96, fmin=fmin, fmax=fmax, scale=scale,
                              norm=norm)
    theirs = librosa.filters.mel(sr=SR, n_fft=2048, n_mels=96, fmin=fmin, fmax=fmax,
                                 htk=scale == "htk", norm=norm, dtype=np.float64)
    d = np.abs(ours - theirs).max() / np.abs(theirs).max()
    assert ours.shape == (96, 1025)
    # measured 0 (the same float64 arithmetic); 1e-12 leaves room for another libm's exp/log
    assert d <= 1e-12, f"{scale}/{norm}: filterbank max relative |diff| {d:.2g}"


@pytest.mark.parametrize("scale", ["slaney", "htk"])
def test_mel_scale_matches_librosa_and_round_trips(scale):
    f = np.array([0.0, 20.0, 440.0, 999.9, 1000.0, 1000.1, 4000.0, 11025.0])
    # measured 0 (as the filter bank: 1e-12 for another libm)
    np.testing.assert_allclose(ref.hz_to_mel(f, scale=scale),
                               librosa.hz_to_mel(f, htk=scale == "htk"), rtol=1e-12)
    # measured: relative 3.6e-15 (htk, 11,025 Hz), exact at 0 Hz; bound about 2x (atol for 0 Hz)
    np.testing.assert_allclose(ref.mel_to_hz(ref.hz_to_mel(f, scale=scale), scale=scale), f,
                               rtol=1e-14, atol=1e-12)


def test_dct_matrix_is_scipys_orthonormal_dct():
    basis = ref.dct_matrix(20, 128)
    # measured 8.6e-16 and 1.5e-15 (float64 rounding); bounds about 2x
    np.testing.assert_allclose(basis, scipy.fft.dct(np.eye(128), type=2, norm="ortho",
                                                    axis=0)[:20], atol=2e-15)
    np.testing.assert_allclose(basis @ basis.T, np.eye(20), atol=5e-15)


@pytest.mark.parametrize("variant", ["slaney-slaney", "htk-slaney", "slaney-none", "narrow-band"])
def test_pure_tone_lands_in_the_band_with_the_nearest_centre(variant):
    cfg = dataclasses.replace(FrontendConfig(), **VARIANTS[variant])
    fmax = cfg.fmax or SR / 2
    centres = ref.mel_band_edges(n_mels=cfg.n_mels, fmin=cfg.fmin, fmax=fmax,
                                 scale=cfg.mel_scale)[1:-1]
    t = np.arange(SR // 2) / SR
    for m in np.linspace(2, cfg.n_mels - 3, 9).astype(int):
        for offset in (0.0, 0.25, -0.25):  # fraction of the distance to the neighbour centre
            neighbour = centres[m + 1] if offset > 0 else centres[m - 1]
            freq = centres[m] + abs(offset) * (neighbour - centres[m])
            lm = ref.compute_features(0.5 * np.sin(2 * np.pi * freq * t), cfg,
                                      dtype=np.float64)["logmel"]
            band = int(np.argmax(lm[:, lm.shape[1] // 2]))
            expected = int(np.argmin(np.abs(centres - freq)))
            assert band == expected == m, (
                f"{variant}: {freq:.1f} Hz peaked in band {band}, nearest centre is band {expected}")


# measured: bit-identical (0) here in both dtypes; the bounds leave room for a BLAS whose blocking
# changes with the batch's size on another CPU (a few ulps of the power: ~1e-6 dB in float32)
@pytest.mark.parametrize("dtype,atol", [(np.float32, 1e-5), (np.float64, 1e-12)])
def test_batched_equals_per_item(rng, dtype, atol):
    cfg = FrontendConfig(n_mels=64)
    batch = (0.1 * rng.standard_normal((2, 3, 5001))).astype(dtype)
    whole = ref.compute_features(batch, cfg, dtype=dtype)
    assert whole["logmel"].shape == (2, 3, 64, cfg.n_frames(5001))
    assert whole["mfcc"].shape == (2, 3, cfg.n_mfcc, cfg.n_frames(5001))
    for i in range(2):
        for j in range(3):
            one = ref.compute_features(batch[i, j], cfg, dtype=dtype)
            np.testing.assert_allclose(whole["logmel"][i, j], one["logmel"], rtol=0, atol=atol)
            np.testing.assert_allclose(whole["mfcc"][i, j], one["mfcc"], rtol=0, atol=10 * atol)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_silence_is_finite_and_sits_on_the_floor(dtype):
    cfg = FrontendConfig()
    f = ref.compute_features(np.zeros((2, SR), dtype), cfg, dtype=dtype)
    assert np.isfinite(f["logmel"]).all() and np.isfinite(f["mfcc"]).all()
    # float64: exactly the floor; float32: the floor after float32 rounding of log10 (measured
    # 7.6e-6 dB; bound about 2x)
    tol = 0.0 if dtype == np.float64 else 2e-5
    assert np.abs(f["logmel"] - FLOOR_DB).max() <= tol
    # the DCT of a constant: only c0 is non-zero, = floor * sqrt(n_mels) (measured float32:
    # relative 1.1e-6 on c0, 1.5e-5 on the rest; float64 2e-16 and 3e-13; bounds about 2x)
    np.testing.assert_allclose(f["mfcc"][:, 0], FLOOR_DB * np.sqrt(cfg.n_mels), rtol=5e-6)
    np.testing.assert_allclose(f["mfcc"][:, 1:], 0.0, atol=5e-5)


def test_db_reference_shifts_every_value_and_the_floor():
    y = 0.1 * np.random.default_rng(0).standard_normal(SR)
    base = ref.compute_features(y, FrontendConfig(), dtype=np.float64)["logmel"]
    shifted = ref.compute_features(y, FrontendConfig(db_ref=10.0), dtype=np.float64)["logmel"]
    # measured 0 (exact here); 1e-12 leaves a few ulps of ~100 dB to another libm's log10
    np.testing.assert_allclose(shifted, base - 10.0, atol=1e-12)


@pytest.mark.parametrize("n", [1, 100, 1023, 2048, 2049, 22050 + 7, 30 * SR])
@pytest.mark.parametrize("center", [True, False])
def test_frame_count_matches_config(n, center):
    cfg = FrontendConfig(center=center, chroma_bins=12 if center else 0)  # chroma: centred only
    y = np.full(n, 0.01, np.float32)
    if not center and n < cfg.n_fft:
        with pytest.raises(ValueError, match="shorter than n_fft"):
            ref.compute_features(y, cfg)
        return
    f = ref.compute_features(y, cfg)
    assert f["logmel"].shape == (cfg.n_mels, cfg.n_frames(n))
    assert f["mfcc"].shape == (cfg.n_mfcc, cfg.n_frames(n))
    if center:
        assert f["chroma"].shape == (12, cfg.n_frames(n))
    if center and n == 30 * SR:
        assert cfg.n_frames(n) == 1292


@pytest.mark.parametrize("bad", [
    {"mel_scale": "mel"}, {"mel_norm": "l2"}, {"window": "hamming"}, {"pad_mode": "edge"},
    {"n_mfcc": 200}, {"fmax": 20000.0}, {"fmin": 5000.0, "fmax": 4000.0}, {"amin": 0.0}])
def test_invalid_config_is_refused_with_the_field_named(bad):
    cfg = dataclasses.replace(FrontendConfig(), **bad)
    field = next(iter(bad))
    with pytest.raises(ValueError, match=field):
        ref.compute_features(np.zeros(4096, np.float32), cfg)


# ---------------------------------------------------------------------- torch module
@pytest.mark.parametrize("variant", ["slaney-slaney", "htk-none"])
def test_torch_module_matches_numpy_reference(rng, variant):
    torch = pytest.importorskip("torch")
    cfg = dataclasses.replace(FrontendConfig(), **VARIANTS[variant])
    y = 0.1 * rng.standard_normal((3, SR + 11))
    want = ref.compute_features(y, cfg, dtype=np.float64)
    lm64, mf64 = ref.LogMelMFCC(cfg, dtype=torch.float64)(torch.from_numpy(y))
    assert lm64.dtype == torch.float64 and lm64.shape == want["logmel"].shape
    d64 = max(np.abs(lm64.numpy() - want["logmel"]).max(), np.abs(mf64.numpy() - want["mfcc"]).max())
    # measured 8.5e-14 (the same with ATEN_CPU_CAPABILITY=avx2 MKL_ENABLE_INSTRUCTIONS=AVX2)
    assert d64 <= 2e-13, f"float64 torch module vs reference: max |diff| {d64:.2g}"
    module = ref.LogMelMFCC(cfg)
    assert isinstance(module, ref.LogMelMFCC) and module.fb.dtype == torch.float32
    with torch.no_grad():
        lm32, mf32 = module(torch.from_numpy(y.astype(np.float32)))
    d_lm = np.abs(lm32.numpy() - want["logmel"]).max()
    d_mf = np.abs(mf32.numpy() - want["mfcc"]).max()
    # measured on noise: 3.7e-6 dB log-Mel, 8.3e-5 MFCC (the same with torch and MKL held to
    # AVX2); bounds about 2x
    assert d_lm <= 1e-5 and d_mf <= 2e-4, f"float32 torch module: {d_lm:.2g} dB, MFCC {d_mf:.2g}"
    one_lm, _ = module(torch.from_numpy(y[0].astype(np.float32)))  # (n,) input
    # measured 0 (bit-identical); room for a batch-size-dependent BLAS/FFT path elsewhere
    np.testing.assert_allclose(one_lm.numpy(), lm32[0].numpy(), atol=1e-5)


def test_torch_module_silence_and_short_input():
    torch = pytest.importorskip("torch")
    cfg = FrontendConfig()
    lm, mf = ref.LogMelMFCC(cfg)(torch.zeros(2, 300))
    assert lm.shape == (2, cfg.n_mels, cfg.n_frames(300))
    # measured 0; 2e-5 dB as for the numpy float32 floor (float32 rounding of log10)
    assert torch.isfinite(mf).all() and (lm - FLOOR_DB).abs().max() <= 2e-5


# ---------------------------------------------------------------------- dispatcher
@pytest.mark.parametrize("name", ["reference", "auto", "torch"])
def test_dispatcher_frontends_match_reference_on_lists_of_any_length(rng, name):
    if name == "torch":
        pytest.importorskip("torch")
    cfg = FrontendConfig(n_mels=64)
    waves = [(0.1 * rng.standard_normal(n)).astype(np.float32) for n in (SR, 5000, SR, 777)]
    fe = get_frontend(name, cfg)
    from mmengine.features.frontend import auto_frontend

    assert fe.name == (auto_frontend() if name == "auto" else name)
    outs = fe.compute(waves)
    assert len(outs) == len(waves)
    for y, out in zip(waves, outs):
        want = ref.compute_features(y, cfg)
        assert out["logmel"].shape == (64, cfg.n_frames(y.size)) and out["logmel"].dtype == np.float32
        assert out["mfcc"].shape == (cfg.n_mfcc, cfg.n_frames(y.size))
        # against the float32 reference; measured: reference 0, native (auto) 2.9e-6 dB / MFCC
        # 7.6e-6, torch 2.4e-6 dB / 7.6e-6; bounds about 2x
        assert np.abs(out["logmel"] - want["logmel"]).max() <= 1e-5
        assert np.abs(out["mfcc"] - want["mfcc"]).max() <= 2e-5
    assert fe.compute([]) == []


def test_dispatcher_reference_float64_keeps_float64_input():
    y = np.random.default_rng(0).standard_normal(3000) * 0.1
    out = get_frontend("reference", FrontendConfig(), dtype=np.float64).compute([y])[0]
    assert out["logmel"].dtype == np.float64
    np.testing.assert_array_equal(out["logmel"], ref.compute_features(y, dtype=np.float64)["logmel"])


def test_dispatcher_names_and_errors():
    assert {"reference", "torch"} <= set(available_frontends())
    with pytest.raises(UnknownBackendError, match="reference"):
        get_frontend("librosa", FrontendConfig())
    with pytest.raises(ValueError, match="1-D"):
        get_frontend("reference", FrontendConfig()).compute([np.zeros((2, 100), np.float32)])
    with pytest.raises(ValueError, match="finite"):
        get_frontend("reference", FrontendConfig()).compute([np.full(100, np.nan, np.float32)])
    from mmengine._ext import has

    if not has("dali"):
        with pytest.raises(OptionalDependencyError, match="dali"):
            get_frontend("dali", FrontendConfig())


def test_registry_entries_declare_what_their_classes_do():
    """Every entry of the front-end registry builds a ``Frontend`` of its own name whose
    capability flags (what the engine reads) match the methods the class has."""
    from mmengine.features.base import Frontend
    from mmengine.features.frontend import FRONTENDS, REGISTRY, auto_frontend

    assert FRONTENDS == tuple(REGISTRY) == ("native", "reference", "torch", "dali")
    for name, info in REGISTRY.items():
        cls = info.load_class()
        assert info.name == cls.name == name and issubclass(cls, Frontend)
        assert cls.padded_tensors == hasattr(cls, "from_arrays_padded"), name
        assert cls.serial_compute == hasattr(cls, "compute_serial"), name
    from mmengine._ext import has
    from mmengine.features.frontend import has_torch
    from mmengine.features.native_frontend import available

    assert available_frontends() == [n for n, ok in (("native", available()), ("reference", True),
                                                     ("torch", has_torch()),
                                                     ("dali", has("dali"))) if ok]
    assert auto_frontend(FrontendConfig(n_fft=1000)) == "reference"
