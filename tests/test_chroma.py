"""The chroma pitch stream (``FrontendConfig.chroma_bins``) through every front end that
computes it, against librosa with every parameter pinned; the audio pitch head of the fusion
model (``chroma_profile`` + ``PitchClassHead``); the feature cache; and the configs stored
before the stream existed.

librosa's call (the ``FrontendConfig`` docstring)::

    C = librosa.feature.chroma_stft(S=abs(librosa.stft(y, n_fft=chroma_n_fft,
            hop_length=hop_length, window="hann", center=True, pad_mode=pad_mode))
            ** chroma_power, sr=sample_rate, n_chroma=12, tuning=0.0, norm=None,
            ctroct=chroma_ctroct, octwidth=chroma_octwidth, base_c=True)
    chroma = 10 * log10(maximum(C, amin))
"""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from mmengine.config import FrontendConfig, ModelConfig, from_dict, to_dict, uses_chroma
from mmengine.features import reference as ref
from mmengine.features.frontend import auto_frontend, get_frontend, REGISTRY
from mmengine.models import build_model
from mmengine.models.streams import KK_MAJOR, chroma_profile

librosa = pytest.importorskip("librosa")

SR = 22050
VARIANTS = {
    "default": {},
    "power": {"chroma_power": 2.0},
    "flat-octaves": {"chroma_octwidth": None},
    "nfft4096-reflect": {"chroma_n_fft": 4096, "pad_mode": "reflect", "chroma_ctroct": 4.0,
                         "chroma_octwidth": 1.5},
    "hop300-dbref": {"hop_length": 300, "db_ref": 10.0},
}


def _librosa(y, cfg: FrontendConfig) -> np.ndarray:
    S = np.abs(librosa.stft(y, n_fft=cfg.chroma_n_fft, hop_length=cfg.hop_length,
                            window="hann", center=True, pad_mode=cfg.pad_mode))
    C = librosa.feature.chroma_stft(S=S ** cfg.chroma_power, sr=cfg.sample_rate, n_chroma=12,
                                    tuning=0.0, norm=None, ctroct=cfg.chroma_ctroct,
                                    octwidth=cfg.chroma_octwidth, base_c=True)
    return librosa.power_to_db(C, ref=cfg.db_ref, amin=cfg.amin, top_db=None)


def _signals(rng, seconds=1.5):
    t = np.arange(int(seconds * SR)) / SR
    chord = sum(0.2 * np.sin(2 * np.pi * f * t) for f in (130.81, 164.81, 196.0))  # C3 E3 G3
    return {"noise": 0.1 * rng.standard_normal(t.size), "chord": chord,
            "chord+noise": chord + 0.01 * rng.standard_normal(t.size)}


@pytest.mark.parametrize("octwidth", [2.0, None, 0.5])
@pytest.mark.parametrize("n_fft", [512, 2048, 8192])
def test_filterbank_matches_librosa(n_fft, octwidth):
    ours = ref.chroma_filterbank(sr=SR, n_fft=n_fft, ctroct=4.5, octwidth=octwidth)
    theirs = librosa.filters.chroma(sr=SR, n_fft=n_fft, tuning=0.0, ctroct=4.5,
                                    octwidth=octwidth, dtype=np.float64)
    assert ours.shape == (12, n_fft // 2 + 1)
    np.testing.assert_allclose(ours, theirs, rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_float64_chroma_matches_librosa(rng, variant):
    cfg = dataclasses.replace(FrontendConfig(), **VARIANTS[variant])
    for name, y in _signals(rng).items():
        ours = ref.chroma(y, cfg)
        theirs = _librosa(y, cfg)
        assert ours.shape == theirs.shape == (12, cfg.n_frames(y.size)), name
        # measured: <= 1.1e-7 dB (the FFTs differ: scipy here, numpy's pocketfft in librosa)
        np.testing.assert_allclose(ours, theirs, rtol=0, atol=1e-5, err_msg=f"{variant}/{name}")


def test_chord_lands_on_its_pitch_classes_in_every_front_end(rng):
    """A C major triad (C3 E3 G3, the bass register the 8192-point FFT resolves) puts its three
    classes above every other; row 0 is C."""
    cfg = FrontendConfig()
    y = _signals(rng)["chord"].astype(np.float32)
    for name in ("reference", "torch", "native"):
        if REGISTRY[name].probe() is not None:
            continue
        c = get_frontend(name, cfg).compute([y])[0]["chroma"]
        prof = c[:, 10:-10].mean(axis=1)
        top3 = set(np.argsort(prof)[-3:].tolist())
        assert top3 == {0, 4, 7}, (name, np.round(prof, 1))


@pytest.mark.parametrize("name", ["reference", "torch", "native"])
def test_every_front_end_matches_the_float64_reference(rng, name):
    if REGISTRY[name].probe() is not None:
        pytest.skip(REGISTRY[name].probe())
    cfg = FrontendConfig()
    sig = _signals(rng)
    waves = [y.astype(np.float32) for y in sig.values()] + [np.zeros(700, np.float32)]
    outs = get_frontend(name, cfg).compute(waves)
    for label, y, out in zip(list(sig) + ["short silence"], waves, outs):
        want = ref.chroma(y.astype(np.float64), cfg)
        assert out["chroma"].dtype == np.float32 and out["chroma"].shape == want.shape
        assert out["logmel"].shape[-1] == want.shape[-1]
        # float32 FFTs, every bin, seeds 0-2: broadband <= 1.4e-5 dB (native), 5.3e-6
        # (reference), 3.8e-6 (torch); the pure chord, whose quiet classes sum bins near the
        # float32 FFT's noise floor, <= 6.6e-4 dB (torch), 5.7e-4 (native), 8.7e-6 (reference)
        tol = 2e-3 if label == "chord" else 5e-5
        np.testing.assert_allclose(out["chroma"], want, rtol=0, atol=tol,
                                   err_msg=f"{name}/{label}")


def test_native_every_isa_and_threads_agree(rng):
    native = pytest.importorskip("mmengine.features.native_frontend")
    if not native.available():
        pytest.skip("native front end not built")
    from mmengine._ext import native_extension

    C = native_extension()
    y = (_signals(rng, 2.0)["chord+noise"]).astype(np.float32)
    want = ref.chroma(y.astype(np.float64), FrontendConfig())  # broadband: see above
    isas = [i for i in ("scalar", "avx2", "avx512") if i in C.build_info()["isas"]]
    try:
        for isa in isas:
            try:
                C.set_isa(isa)
            except ValueError:
                continue
            for threads in (1, 2):
                fe = native.NativeFrontend(FrontendConfig(), num_threads=threads)
                got = fe.compute([y])[0]["chroma"]
                np.testing.assert_allclose(got, want, rtol=0, atol=5e-5, err_msg=isa)
                np.testing.assert_array_equal(fe.compute_serial([y])[0]["chroma"], got)
    finally:
        C.set_isa("auto")


def test_configs_without_the_stream():
    """chroma_bins=0: no chroma anywhere; stored configs from before the stream read as 0;
    invalid chroma settings are refused with the field named; DALI refuses the stream."""
    off = FrontendConfig(chroma_bins=0)
    y = np.zeros(3000, np.float32)
    for name in ("reference", "torch", "native"):
        if REGISTRY[name].probe() is None:
            assert "chroma" not in get_frontend(name, off).compute([y])[0]
    assert from_dict(FrontendConfig, {"n_fft": 2048}).chroma_bins == 0
    assert from_dict(FrontendConfig, to_dict(FrontendConfig())) == FrontendConfig()
    for bad, field in [({"chroma_bins": 24}, "chroma_bins"), ({"chroma_n_fft": 5000}, "chroma_n_fft"),
                       ({"center": False}, "center"), ({"chroma_power": 3.0}, "chroma_power"),
                       ({"chroma_octwidth": 0.0}, "chroma_octwidth")]:
        with pytest.raises(ValueError, match=field):
            ref.check_config(dataclasses.replace(FrontendConfig(), **bad))
    ref.check_config(FrontendConfig(center=False, chroma_bins=0))
    assert not REGISTRY["dali"].supports(FrontendConfig())
    assert REGISTRY["dali"].supports(off)
    assert auto_frontend(FrontendConfig()) in ("native", "reference")


# ------------------------------------------------------------------------- the model's head
def test_chroma_profile_is_librosas_inf_normalised_chroma_mean(rng):
    cfg = FrontendConfig()
    y = _signals(rng)["chord+noise"]
    c = ref.chroma(y, cfg)
    S = np.abs(librosa.stft(y, n_fft=8192, hop_length=512, center=True, pad_mode="constant"))
    lib = librosa.feature.chroma_stft(S=S, sr=SR, tuning=0.0, norm=np.inf).mean(axis=1)
    lib = (lib - lib.mean()) / np.sqrt(((lib - lib.mean()) ** 2).mean())
    got = chroma_profile(torch.from_numpy(c[None])).numpy()[0]
    np.testing.assert_allclose(got, lib, atol=1e-4)


def test_audio_key_scores_are_transposition_invariant():
    """Rolling the chroma's 12 rows (a transposition) leaves the head's scores unchanged, and a
    chroma shaped like the C major key profile scores highest on the major template."""
    cfg = ModelConfig(modalities=("mel",), audio_pitch_templates=4)
    m = build_model(cfg, dict(n_mfcc=20, n_mels=16, text_dim=0, symbolic_dim=0, n_classes=2,
                              multilabel=False, n_chroma=12)).eval()
    prof = np.array(KK_MAJOR)
    chroma = torch.from_numpy(np.repeat(10 * np.log10(prof)[None, :, None], 30, axis=2)).float()
    with torch.no_grad():
        base = m.audio_pitch.scores(chroma_profile(chroma))
        for k in range(1, 12):
            rolled = torch.roll(chroma, k, dims=1)
            torch.testing.assert_close(m.audio_pitch.scores(chroma_profile(rolled)), base)
    assert base[0, 0] == base.max() and float(base[0, 0]) > 0.99  # the KK major template itself


def test_head_exists_only_with_the_log_mel_and_a_12_bin_chroma():
    dims = dict(n_mfcc=20, n_mels=16, text_dim=0, symbolic_dim=0, n_classes=2,
                multilabel=False, n_chroma=12)
    assert uses_chroma(ModelConfig(), dims)
    assert not uses_chroma(ModelConfig(), {**dims, "n_chroma": 0})
    assert not uses_chroma(ModelConfig(modalities=("mfcc", "symbolic")), dims)
    assert not uses_chroma(ModelConfig(audio_pitch_templates=0, audio_meter_templates=0), dims)
    assert not uses_chroma(ModelConfig(stem="strided"), dims)
    assert build_model(ModelConfig(modalities=("mfcc",)), dims).audio_pitch is None
    old = {k: v for k, v in dims.items() if k != "n_chroma"}  # a checkpoint from before
    assert build_model(ModelConfig(), old).audio_pitch is None


def test_missing_chroma_or_log_mel_zeroes_the_audio_key_scores():
    torch.manual_seed(0)
    cfg = ModelConfig(modalities=("mfcc", "mel"), audio_pitch_templates=3,
                      audio_meter_templates=0)
    m = build_model(cfg, dict(n_mfcc=5, n_mels=8, text_dim=0, symbolic_dim=0, n_classes=3,
                              multilabel=False, n_chroma=12)).eval()
    x = {"mfcc": torch.randn(2, 5, 20), "logmel": torch.randn(2, 8, 20),
         "chroma": torch.randn(2, 12, 20) * 10 - 30}
    _, late = m.encode(x)
    assert late.shape == (2, 3) and late.abs().sum() > 0
    _, late = m.encode({k: v for k, v in x.items() if k != "chroma"})
    assert late.abs().sum() == 0
    _, late = m.encode({**x, "mel_mask": torch.tensor([False, True])})
    assert late[0].abs().sum() == 0 and late[1].abs().sum() > 0


def test_close_streams_keeps_a_notes_only_model_exact_when_the_audio_arrives():
    torch.manual_seed(1)
    m = build_model(ModelConfig(hidden_size=8, mel_channels=8, mfcc_channels=8,
                                symbolic_channels=8, dilations=(1,), audio_pitch_templates=3),
                    dict(n_mfcc=5, n_mels=8, text_dim=0, symbolic_dim=20, n_classes=3,
                         multilabel=False, n_chroma=12)).eval()
    sym = (torch.rand(2, 20, 16) < 0.3).float()
    notes_only = m({"symbolic": sym, "symbolic_mask": torch.ones(2, dtype=torch.bool)})
    m.close_streams(("symbolic",))
    full = m({"symbolic": sym, "symbolic_mask": torch.ones(2, dtype=torch.bool),
              "mfcc": torch.randn(2, 5, 16), "logmel": torch.randn(2, 8, 16),
              "chroma": torch.randn(2, 12, 16) * 10 - 30})
    torch.testing.assert_close(full, notes_only)


def test_pooled_baselines_get_the_same_audio_key_features(rng):
    """``svm_streams`` / ``rf_streams`` pool the chroma as the head reads it: the key columns
    do not change when the chroma is transposed, and the tonic-relative profile of a C-major
    chroma and of its transposition to F# are equal."""
    from mmengine.models.baselines import chroma_key_features

    prof = np.array(KK_MAJOR)
    c = 10 * np.log10(prof)[None, :, None] + rng.normal(0, 0.01, (1, 12, 40))
    a = chroma_key_features(c)
    b = chroma_key_features(np.roll(c, 6, axis=1))
    assert a.shape == (1, 18)
    np.testing.assert_allclose(a, b, atol=1e-9)
    assert a[0, 2] > 0 and a[0, 5] > 0  # major beats minor for both profile pairs
    prof_t = chroma_profile(torch.from_numpy(c)).numpy()
    np.testing.assert_allclose(a[0, 6:], prof_t[0], atol=1e-4)  # C is the tonic: no rotation


def test_spilled_windows_keep_their_chroma(rng):
    """A long file's windows past the batch go to a temporary file: the chroma comes back with
    the log-Mel and MFCC, bit for bit (and a window without one stays without)."""
    from mmengine.runtime.window_store import WindowStore

    wins = [{"mfcc": rng.standard_normal((4, 9)).astype(np.float32),
             "logmel": rng.standard_normal((6, 9)).astype(np.float32),
             "chroma": rng.standard_normal((12, 9)).astype(np.float32)} for _ in range(3)]
    wins.append({k: v for k, v in wins[0].items() if k != "chroma"})
    store = WindowStore(keep=1)
    for w in wins:
        store.append(w)
    assert store.spilled == 3
    for w, got in zip(wins, (store[i] for i in range(4))):
        assert sorted(got) == sorted(w)
        for k in w:
            np.testing.assert_array_equal(got[k], w[k])
    store.close()
