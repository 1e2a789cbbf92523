"""Fusion model, CNN and scikit-learn baselines: shapes, masking, modality dropout, pooled
statistics."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from mmengine.config import ModelConfig
from mmengine.config import first_design
from mmengine.features.dataset import FeatureSet
from mmengine.models import (FusionLSTM, MelCNN, PooledFeatures, SklearnBaseline,
                             batch_from_arrays, build_model, compute_norm_stats, dims_of)
from mmengine.models.baselines import autocorrelation, rhythm_features
from mmengine.models.reference import layers_from_torch, lstm_stack_ref, tolerance

SMALL = first_design(hidden_size=12, num_layers=2, stem_stages=1, mfcc_channels=6,
                    mel_channels=8, symbolic_channels=4, text_dim=5, cnn_channels=(4, 8))
DIMS = dict(n_mfcc=7, n_mels=10, text_dim=13, symbolic_dim=3, n_classes=4, multilabel=False)


def make_batch(rng, B=5, T=33, dims=DIMS):
    text_mask = np.array([True, False] * B)[:B]
    text = rng.random((B, dims["text_dim"]), dtype=np.float32) * text_mask[:, None]
    return {
        "mfcc": torch.from_numpy(rng.standard_normal((B, dims["n_mfcc"], T), dtype=np.float32)),
        "logmel": torch.from_numpy(rng.standard_normal((B, dims["n_mels"], T),
                                                       dtype=np.float32)),
        "text": torch.from_numpy(text), "text_mask": torch.from_numpy(text_mask),
        "symbolic": torch.from_numpy(rng.standard_normal((B, dims["symbolic_dim"], T),
                                                         dtype=np.float32)),
        "symbolic_mask": torch.tensor([True, True, False, True, False][:B]),
    }


@pytest.mark.parametrize("stages,T", [(0, 32), (1, 33), (2, 31), (3, 59)])
@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn"])
def test_fusion_shapes(rng, torch_seed, stages, T, cell):
    cfg = dataclasses.replace(SMALL, stem_stages=stages, cell=cell)
    model = build_model(cfg, DIMS).eval()
    batch = make_batch(rng, T=T)
    feats = model.sequence_features(batch)
    expect_T = -(-T // 2 ** stages)
    assert feats.shape == (5, expect_T, model.fused_dim)
    assert model.fused_dim == 6 + 8 + 5 + 4 + 4
    assert type(model.classifier.rnn).__name__ == cell.upper()
    logits = model(batch)
    assert logits.shape == (5, 4)
    torch.testing.assert_close(model.classifier(feats), logits)
    p = model.predict_proba(batch)
    torch.testing.assert_close(p.sum(1), torch.ones(5))


def test_classifier_is_reference_lstm_plus_head(rng, torch_seed):
    """The separable classifier = lstm_stack_ref + pooling + linear head (what engines run)."""
    for pooling in ("last", "mean"):
        model = build_model(dataclasses.replace(SMALL, pooling=pooling), DIMS).eval()
        x = model.sequence_features(make_batch(rng))
        y, _ = lstm_stack_ref(x.double(), [tuple(w.double() for w in lw)
                                           for lw in layers_from_torch(model.classifier.rnn)])
        pooled = y[:, -1] if pooling == "last" else y.mean(1)
        head = model.classifier.head
        ref = pooled @ head.weight.double().T + head.bias.double()
        out = model.classifier(x)
        assert (out.double() - ref).abs().max().item() <= tolerance(ref, out, torch.float32)


def test_masked_modality_values_do_not_change_output(rng, torch_seed):
    model = build_model(SMALL, DIMS).eval()
    batch = make_batch(rng)
    out = model(batch)
    changed = dict(batch)
    changed["text"] = batch["text"] + 5.0 * (~batch["text_mask"])[:, None]  # only masked rows
    sym_off = ~batch["symbolic_mask"]
    changed["symbolic"] = batch["symbolic"] + 3.0 * sym_off[:, None, None]
    torch.testing.assert_close(model(changed), out, rtol=0, atol=0)
    # audio masks: a clip marked without MFCC ignores its MFCC values
    m = dict(batch, mfcc_mask=torch.tensor([False, True, True, True, True]))
    a = model(m)
    m2 = dict(m, mfcc=batch["mfcc"].clone())
    m2["mfcc"][0] = 100.0
    torch.testing.assert_close(model(m2), a, rtol=0, atol=0)
    # and a changed value of a *present* modality does change the output
    present = dict(batch, symbolic=batch["symbolic"] + 3.0)
    assert not torch.allclose(model(present)[batch["symbolic_mask"]], out[batch["symbolic_mask"]])


def test_missing_is_signalled_not_a_silent_zero(rng, torch_seed):
    model = build_model(SMALL, DIMS).eval()
    batch = make_batch(rng)
    feats = model.sequence_features(batch)
    order = model.modalities
    col = 0
    for m in order:
        col += model.block_widths[m]
        flag = feats[:, :, col]
        if m == "text":
            torch.testing.assert_close(flag, batch["text_mask"].float()[:, None].expand_as(flag))
        col += 1
    # no text key at all == every clip's text masked
    no_text = {k: v for k, v in batch.items() if k not in ("text", "text_mask")}
    all_masked = dict(batch, text_mask=torch.zeros(5, dtype=torch.bool))
    torch.testing.assert_close(model(no_text), model(all_masked), rtol=0, atol=0)
    # a zero text vector flagged as present is not the same input as a missing text
    zero_present = dict(all_masked, text=torch.zeros_like(batch["text"]),
                        text_mask=torch.ones(5, dtype=torch.bool))
    assert not torch.equal(model.sequence_features(zero_present),
                           model.sequence_features(all_masked))


def test_modality_dropout_never_drops_all(torch_seed):
    cfg = dataclasses.replace(SMALL, modality_dropout=0.6)
    model = build_model(cfg, DIMS)
    masks = torch.ones(4000, 4)
    masks[:1000, 1:] = 0  # only mfcc present: must be kept
    masks[1000:2000, 2] = 0
    kept = model.drop_modalities(masks)
    assert (kept <= masks).all()
    assert (kept.sum(1) >= 1).all()
    assert (kept[:1000, 0] == 1).all()
    rate = 1 - kept[2000:].mean().item()
    assert 0.45 < rate < 0.6  # ≈ 0.6 minus the rescued clips (0.6^4 ≈ 13%, 1 of 4 kept)


def test_modality_subsets_and_errors():
    m = build_model(dataclasses.replace(SMALL, modalities=("text",)), DIMS)
    assert m.modalities == ("text",) and m.fused_dim == 5 + 1
    m = build_model(SMALL, dict(DIMS, text_dim=0, symbolic_dim=0))
    assert m.modalities == ("mfcc", "mel")
    with pytest.raises(ValueError, match="unknown modalities"):
        build_model(dataclasses.replace(SMALL, modalities=("video",)), DIMS)
    with pytest.raises(ValueError, match="none of the modalities"):
        build_model(dataclasses.replace(SMALL, modalities=("text",)), dict(DIMS, text_dim=0))
    with pytest.raises(ValueError, match="cell"):
        build_model(dataclasses.replace(SMALL, cell="transformer"), DIMS)
    with pytest.raises(ValueError, match="arch"):
        build_model(dataclasses.replace(SMALL, arch="mlp"), DIMS)


def test_multilabel_sigmoid(rng, torch_seed):
    model = build_model(SMALL, dict(DIMS, multilabel=True))
    p = model.predict_proba(make_batch(rng))
    assert p.shape == (5, 4) and ((p > 0) & (p < 1)).all()
    assert not torch.allclose(p.sum(1), torch.ones(5))


def test_cnn_shapes(rng, torch_seed):
    model = build_model(dataclasses.replace(SMALL, arch="cnn"), DIMS)
    assert isinstance(model, MelCNN)
    batch = make_batch(rng, T=37)
    assert model(batch).shape == (5, 4)
    model.eval()
    only_mel = {"logmel": batch["logmel"]}
    torch.testing.assert_close(model(only_mel), model(batch))


def _feature_set(rng, N=90, T=64, C=3, text=True, symbolic=True):
    """Structured synthetic clips: class k pulses every (4 + 2k) frames in the log-Mel, shifts
    MFCC 0, has its own words in the text and its own symbolic level."""
    y = np.arange(N) % C
    mel = rng.standard_normal((N, 12, T)).astype(np.float32)
    for i, k in enumerate(y):
        mel[i, :, :: 4 + 2 * k] += 4.0
    mfcc = rng.standard_normal((N, 6, T)).astype(np.float32)
    mfcc[:, 0] += y[:, None]
    tx = rng.random((N, 9)).astype(np.float32) * 0.2
    tx[np.arange(N), y] += 1.0
    tm = rng.random(N) < 0.8
    tx[~tm] = 0
    sym = rng.standard_normal((N, 2, T)).astype(np.float32) + y[:, None, None] * 0.7
    split = np.array((["train"] * 6 + ["val"] * 2 + ["test"] * 2) * (N // 10))
    return FeatureSet(ids=[f"c{i}" for i in range(N)], mfcc=mfcc, logmel=mel,
                      labels=y.astype(np.int64), label_names=[f"k{i}" for i in range(C)],
                      split=split, text=tx if text else None, text_mask=tm if text else None,
                      symbolic=sym if symbolic else None,
                      symbolic_mask=np.ones(N, bool) if symbolic else None)


def test_norm_stats_standardise_train_split(rng):
    fs = _feature_set(rng)
    stats = compute_norm_stats(fs.subset("train"))
    model = build_model(SMALL, dims_of(fs))
    model.set_normalization(stats)
    x = model.norm("mel", batch_from_arrays(fs.subset("train"))["logmel"])
    np.testing.assert_allclose(x.mean((0, 2)).numpy(), 0, atol=1e-4)
    np.testing.assert_allclose(x.std((0, 2), unbiased=False).numpy(), 1, atol=1e-4)
    with pytest.raises(ValueError, match="shape"):
        model.set_normalization(dict(stats, mfcc_mean=np.zeros(3)))


def test_autocorrelation_and_beat_lag(rng):
    T, period = 600, 20
    env = np.zeros((1, T))
    env[0, ::period] = 1.0
    ac = autocorrelation(env, 100)
    assert ac[0, 0] == pytest.approx(1.0)
    assert int(np.argmax(ac[0, 5:])) + 5 == period
    mel = np.zeros((2, 4, T + 1))
    mel[0, :, 1::period] = 1.0  # onsets every 20 frames
    mel[1, :, 1::30] = 1.0
    f = rhythm_features(mel, frame_rate=43.0)
    n_bins = int(round(3.0 * 43.0)) // 2
    beat_s = f[:, n_bins]
    assert beat_s[0] == pytest.approx(period / 43.0)
    assert beat_s[1] == pytest.approx(30 / 43.0)


@pytest.mark.parametrize("kind", ["svm", "rf"])
def test_sklearn_baselines_select_on_validation(rng, kind):
    fs = _feature_set(rng, N=120)
    grid = ({"C": (0.1, 10.0), "gamma_scale": (1.0,), "class_weight": (None,)} if kind == "svm"
            else {"n_estimators": (30,), "max_depth": (None, 3), "max_features": ("sqrt",),
                  "class_weight": (None,)})
    base = SklearnBaseline(kind, seed=0, grid=grid, frame_rate=43.0, n_jobs=1)
    base.fit(fs.subset("train"), fs.subset("val"))
    assert len(base.search) == 2
    assert base.best_params == max(base.search, key=lambda s: s[1])[0]
    test = fs.subset("test")
    acc = (base.predict(test) == test.labels).mean()
    assert acc > 0.6, f"{kind} test accuracy {acc} on separable data"


def test_pooled_features_modalities(rng):
    fs = _feature_set(rng, text=False)
    pf = PooledFeatures(("mfcc", "text"), frame_rate=43.0).fit(fs.subset("train"))
    x = pf.transform(fs)
    assert x.shape == (len(fs.ids), 3 * 6)  # text absent from the data: ignored
    with pytest.raises(ValueError, match="no features"):
        PooledFeatures(("text",)).fit(fs.subset("train"))
    tr = PooledFeatures(("mfcc", "mel", "symbolic"), frame_rate=43.0).fit(fs.subset("train"))
    z = tr.transform(fs.subset("train"))
    np.testing.assert_allclose(z.mean(0), 0, atol=1e-8)


def test_fusion_is_a_fusion_lstm():
    assert isinstance(build_model(SMALL, DIMS), FusionLSTM)


def test_stored_configs_without_the_new_fields_rebuild_the_first_design():
    """A checkpoint or engine header written before the dilated design stores no ``stem``,
    ``flux_bands``, ...: it must rebuild the design that wrote it, not today's default."""
    import json

    from mmengine.config import ModelConfig, first_design, model_config_from_stored, to_dict

    old = {k: v for k, v in json.loads(json.dumps(to_dict(first_design()))).items()
           if k not in ("stem", "pool_stride", "flux_bands", "text_fusion", "pitch_templates",
                        "text_dropout", "spec_mask_bands", "pitch_rotation",
                        "symbolic_dropout")}
    old["pooling"] = "mean"  # a stored value wins over the legacy default
    cfg = model_config_from_stored(old)
    assert cfg.stem == "strided" and cfg.text_fusion == "early" and cfg.flux_bands == 0
    assert cfg.pitch_templates == 0 and cfg.pooling == "mean"
    assert cfg.text_dropout == cfg.symbolic_dropout == cfg.modality_dropout
    assert model_config_from_stored(to_dict(ModelConfig())) == ModelConfig()


def test_feature_matched_cnn_and_text_alone_variants():
    from mmengine.config import ModelConfig
    from mmengine.evaluation import TORCH_VARIANTS

    base = ModelConfig(hidden_size=6, mfcc_channels=4, mel_channels=4, symbolic_channels=4,
                       text_dim=3, dilations=(1, 2), flux_bands=2, pitch_templates=2)
    dims = dict(n_mfcc=7, n_mels=12, text_dim=9, symbolic_dim=18, n_classes=4,
                multilabel=False)
    rng = np.random.default_rng(0)
    batch = make_batch(rng, T=20, dims=dims)
    tcn = build_model(dataclasses.replace(base, **TORCH_VARIANTS["tcn"]), dims).eval()
    assert not any(isinstance(m, torch.nn.LSTM) for m in tcn.modules())
    assert tcn(batch).shape == (5, 4)
    text = build_model(dataclasses.replace(base, **TORCH_VARIANTS["only_text"]), dims).eval()
    assert text.sequence_modalities == ("text",) and text(batch).shape == (5, 4)
    with pytest.raises(ValueError, match="no time series"):
        build_model(dataclasses.replace(base, modalities=("text",)), dims)
