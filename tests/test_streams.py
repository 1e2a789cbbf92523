"""The model's rhythm and pitch streams: spectral flux against librosa's onset strength, the
dilated stem's receptive field, and the pitch-class head's transposition invariance."""
import dataclasses

import numpy as np
import pytest
import torch

from mmengine.config import ModelConfig
from mmengine.models import build_model
from mmengine.models.streams import (KK_MAJOR, KK_MINOR, DilatedStem, PitchClassHead,
                                     SpectralFlux, band_edges, pitch_class_profile,
                                     receptive_field)

librosa = pytest.importorskip("librosa")


@pytest.mark.parametrize("n_mels,bands,T", [(128, 8, 200), (40, 3, 17), (7, 7, 2)])
def test_flux_matches_librosa_onset_strength(n_mels, bands, T):
    rng = np.random.default_rng(n_mels + T)
    S = (rng.standard_normal((n_mels, T)) * 20 - 40).astype(np.float64)
    ref = librosa.onset.onset_strength_multi(
        S=S, lag=1, max_size=1, detrend=False, center=False, aggregate=np.mean,
        channels=band_edges(n_mels, bands))
    got = SpectralFlux(n_mels, bands).double()(torch.from_numpy(S)[None])[0].numpy()
    assert got.shape == ref.shape == (bands, T)
    # measured 0 (bit-identical); 1e-12 leaves room for another summation order of the mean
    np.testing.assert_allclose(got, ref, rtol=0, atol=1e-12)


def test_flux_float32_matches_librosa_on_real_logmel():
    # a real log-Mel (reference front end) of a tone burst train, float32 as the model runs
    from mmengine.config import FrontendConfig
    from mmengine.features.reference import compute_features

    sr = 22050
    t = np.arange(sr * 3) / sr
    y = (np.sin(2 * np.pi * 440 * t) * (np.sin(2 * np.pi * 4 * t) > 0.5)).astype(np.float32)
    logmel = compute_features(y[None], FrontendConfig())["logmel"][0]
    ref = librosa.onset.onset_strength_multi(
        S=logmel.astype(np.float64), lag=1, max_size=1, detrend=False, center=False,
        aggregate=np.mean, channels=band_edges(128, 8))
    got = SpectralFlux(128, 8)(torch.from_numpy(logmel.astype(np.float32))[None])[0].numpy()
    # float32 differences of dB values up to ~100: a few ulps of 100 (measured 1.5e-5; about 2x)
    np.testing.assert_allclose(got, ref, rtol=0, atol=5e-5)
    assert ref.max() > 1.0  # the bursts are there


def test_band_edges_cover_all_bands():
    e = band_edges(128, 8)
    assert e[0] == 0 and e[-1] == 128 and all(b > a for a, b in zip(e, e[1:]))
    with pytest.raises(ValueError):
        band_edges(8, 9)


def test_dilated_stem_receptive_field_is_measured():
    torch.manual_seed(0)
    dil = (1, 2, 4, 8, 16, 32)
    stem = DilatedStem(3, 8, dil).eval()
    T, centre = 400, 200
    x = torch.zeros(1, 3, T, requires_grad=True)
    stem(x)[0, :, centre].sum().backward()
    touched = np.flatnonzero(x.grad.abs().sum(1)[0].numpy() > 0)
    assert touched.min() == centre - (receptive_field(dil) - 1) // 2
    assert touched.max() == centre + (receptive_field(dil) - 1) // 2
    assert receptive_field(dil) == 129  # ≈ 3.0 s at 43.07 frames/s


def test_pitch_head_is_transposition_invariant_and_starts_as_key_finding():
    torch.manual_seed(0)
    head = PitchClassHead(6)
    sym = (torch.rand(5, 15, 50) > 0.7).float()
    base = head(sym)
    for shift in range(1, 12):
        rolled = torch.cat([torch.roll(sym[:, :12], shift, dims=1), sym[:, 12:]], dim=1)
        # measured 2.4e-7 (float32 sums in another order); bound about 2x
        torch.testing.assert_close(head(rolled), base, rtol=0, atol=5e-7)
    # a C-major scale weighted like a tonic triad scores higher on the major template,
    # an A-minor-like profile (rotated to any key) on the minor one
    def clip(profile):
        p = torch.tensor(profile, dtype=torch.float32)
        T = 120
        roll = (torch.arange(T)[None, :] % 10 < (p[:, None] * 10 / p.max())).float()
        return torch.cat([roll, torch.zeros(3, T)])[None]
    major, minor = head(clip(KK_MAJOR))[0], head(clip(KK_MINOR))[0]
    assert major[0] - major[1] > 0 > minor[0] - minor[1]


def test_pitch_class_profile_of_silence_is_zero():
    z = pitch_class_profile(torch.zeros(2, 15, 30))
    assert torch.equal(z, torch.zeros(2, 12))


def _batch(B=3, T=64, V=10):
    g = torch.Generator().manual_seed(1)
    return {"mfcc": torch.randn(B, 20, T, generator=g),
            "logmel": torch.randn(B, 16, T, generator=g) * 10 - 40,
            "text": torch.rand(B, V, generator=g), "text_mask": torch.ones(B, dtype=torch.bool),
            "symbolic": (torch.rand(B, 15, T, generator=g) > 0.7).float(),
            "symbolic_mask": torch.ones(B, dtype=torch.bool)}


def test_default_model_shapes_and_late_streams():
    cfg = ModelConfig(hidden_size=8, mel_channels=8, mfcc_channels=4, symbolic_channels=4,
                      dilations=(1, 2), flux_bands=4, pitch_templates=3, text_dim=5,
                      audio_meter_templates=0)
    dims = dict(n_mfcc=20, n_mels=16, text_dim=10, symbolic_dim=15, n_classes=3,
                multilabel=False)
    model = build_model(cfg, dims).eval()
    seq, late = model.encode(_batch())
    assert seq.shape == (3, 32, model.fused_dim) and model.out_frames(64) == 32
    assert late.shape == (3, 5 + 1 + 3) == (3, model.classifier.late_dim)
    assert model.sequence_modalities == ("mfcc", "mel", "symbolic")
    # a transposed piece gets the same late pitch features
    b = _batch()
    b2 = dict(b, symbolic=torch.cat([torch.roll(b["symbolic"][:, :12], 5, 1),
                                     b["symbolic"][:, 12:]], 1))
    torch.testing.assert_close(model.encode(b)[1][:, -3:], model.encode(b2)[1][:, -3:])
    # missing text: its late block and mask are zero, and its values cannot matter
    nt = dict(b, text_mask=torch.zeros(3, dtype=torch.bool))
    out1 = model(nt)
    out2 = model(dict(nt, text=torch.rand(3, 10)))
    torch.testing.assert_close(out1, out2)
    assert torch.all(model.encode(nt)[1][:, :6] == 0)


def test_training_augmentation_only_in_train_mode():
    cfg = ModelConfig(hidden_size=8, mel_channels=8, mfcc_channels=4, symbolic_channels=4,
                      dilations=(1,), flux_bands=2, pitch_templates=2, text_dim=4,
                      modality_dropout=0.0, text_dropout=0.0)
    dims = dict(n_mfcc=20, n_mels=16, text_dim=10, symbolic_dim=15, n_classes=3,
                multilabel=False)
    model = build_model(cfg, dims)
    x = torch.randn(4, 16, 20)
    torch.manual_seed(3)
    masked = model._augment_mel(x)
    zero_bands = (masked == 0).all(dim=2)
    assert zero_bands.sum() > 0 and (zero_bands.sum(1) <= cfg.spec_mask_bands).all()
    sym = (torch.rand(4, 15, 20) > 0.5).float()
    rolled = model._augment_symbolic(sym)
    torch.testing.assert_close(rolled[:, 12:], sym[:, 12:])
    torch.testing.assert_close(rolled[:, :12].sum(1), sym[:, :12].sum(1))
    model.eval()
    b = _batch(T=20)
    torch.testing.assert_close(model(b), model(b))


def test_meter_profile_joins_late_and_stays_out_of_the_stem():
    """With the 66 symbolic rows, the meter rows (18–65, constant over time) reach the head
    as their standardised mean: the symbolic stem reads rows 0–17 only, and a clip without
    notes gets zeros there whatever its rows hold."""
    from mmengine.features.symbolic import METER_START, SYMBOLIC_DIM

    cfg = ModelConfig(hidden_size=8, mel_channels=8, mfcc_channels=4, symbolic_channels=4,
                      dilations=(1, 2), flux_bands=4, pitch_templates=3, text_dim=5,
                      audio_meter_templates=0)
    dims = dict(n_mfcc=20, n_mels=16, text_dim=10, symbolic_dim=SYMBOLIC_DIM, n_classes=3,
                multilabel=False)
    model = build_model(cfg, dims).eval()
    meter = SYMBOLIC_DIM - METER_START
    assert model.meter_rows == meter and model.stream_dims()["meter"] == meter
    assert model.stems["symbolic"].inp[0].in_channels == METER_START
    g = torch.Generator().manual_seed(1)
    b = _batch()
    prof = torch.rand(3, meter, 1, generator=g).expand(-1, -1, 64)
    b["symbolic"] = torch.cat([(torch.rand(3, METER_START, 64, generator=g) > 0.7).float(),
                               prof], 1)
    seq, late = model.encode(b)
    assert late.shape == (3, 5 + 1 + 3 + meter) == (3, model.classifier.late_dim)
    bn = model.meter_norm
    want = (prof[:, :, 0] - bn.running_mean) / torch.sqrt(bn.running_var + bn.eps)
    torch.testing.assert_close(late[:, -meter:], want * bn.weight + bn.bias)
    # other meter rows: same sequence, other late features and logits
    b2 = dict(b, symbolic=torch.cat([b["symbolic"][:, :METER_START],
                                     torch.rand(3, meter, 1, generator=g).expand(-1, -1, 64)], 1))
    seq2, late2 = model.encode(b2)
    torch.testing.assert_close(seq, seq2)
    assert not torch.allclose(late[:, -meter:], late2[:, -meter:])
    # no notes: zero key scores and meter features
    nm = dict(b, symbolic_mask=torch.tensor([True, False, True]))
    assert torch.all(model.encode(nm)[1][1, 6:] == 0)
    no_sym = {k: v for k, v in b.items() if not k.startswith("symbolic")}
    assert torch.all(model.encode(no_sym)[1][:, 6:] == 0)
    # a model stored before the meter rows existed reads its 18 rows in the stem as before
    old = build_model(dataclasses.replace(cfg, meter_profile=False), dims)
    assert old.meter_rows == 0 and old.classifier.late_dim == 5 + 1 + 3
