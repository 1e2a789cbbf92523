"""Training loop: learns structured data, bit-exact resume after an interruption, early
stopping, data errors; evaluation reports and the multi-seed comparison."""
from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import torch

from mmengine.checkpoint import load_checkpoint, read_tensors
from mmengine.config import ModelConfig, TrainConfig
from mmengine.config import first_design
from mmengine.errors import CheckpointError, DataError
from mmengine.evaluation import evaluate_run, run_experiment
from mmengine.features.dataset import FeatureSet
from mmengine.models import batch_from_arrays
from mmengine.training import decide, predict_logits, train

TINY = first_design(hidden_size=16, num_layers=1, stem_stages=1, mfcc_channels=8,
                   mel_channels=8, symbolic_channels=4, text_dim=4, cnn_channels=(4, 8),
                   cnn_stride=(1, 2))
FAST = TrainConfig(batch_size=16, max_epochs=4, patience=100, lr=3e-3, schedule="constant",
                   stage1_frac=0.0)


def feature_set(N=60, T=32, C=3, seed=0, text=True):
    """Structured synthetic clips: class k has a pulse every (3 + 2k) frames in the log-Mel,
    an MFCC-0 offset, a class word in the text (80% have text) and a symbolic level."""
    rng = np.random.default_rng(seed)
    y = np.arange(N) % C
    mel = rng.standard_normal((N, 10, T)).astype(np.float32)
    for i, k in enumerate(y):
        mel[i, :, :: 3 + 2 * k] += 3.0
    mfcc = rng.standard_normal((N, 5, T)).astype(np.float32)
    mfcc[:, 0] += 1.5 * y[:, None]
    tx = rng.random((N, 7)).astype(np.float32) * 0.2
    tx[np.arange(N), y] += 1.0
    tm = rng.random(N) < 0.8
    tx[~tm] = 0
    sym = rng.standard_normal((N, 2, T)).astype(np.float32) + y[:, None, None]
    split = np.array((["train"] * 6 + ["val"] * 2 + ["test"] * 2) * (N // 10))
    return FeatureSet(ids=[f"c{i}" for i in range(N)], mfcc=mfcc, logmel=mel,
                      labels=y.astype(np.int64), label_names=[f"k{i}" for i in range(C)],
                      split=split, text=tx if text else None, text_mask=tm if text else None,
                      symbolic=sym, symbolic_mask=np.ones(N, bool))


def test_learns_structured_data(tmp_path):
    fs = feature_set()
    res = train(fs, TINY, dataclasses.replace(FAST, max_epochs=10, lr=1e-2), tmp_path,
                progress=False)
    tr = fs.subset("train")
    pred = decide(predict_logits(res.model, batch_from_arrays(tr)), False)
    acc = (pred == tr.labels).mean()
    assert acc > 0.8, f"training accuracy {acc:.2f} (chance 0.33)"
    assert res.history[-1]["train_loss"] < res.history[0]["train_loss"]
    assert (tmp_path / "checkpoint.safetensors").exists()
    assert json.loads((tmp_path / "history.json").read_text()) == res.history
    model, meta = load_checkpoint(tmp_path)
    assert meta["metrics"]["best_epoch"] == res.best_epoch
    assert meta["metrics"]["best_val_macro_f1"] == pytest.approx(res.best_val_f1)


def _weights(path):
    tensors, _ = read_tensors(path)
    return tensors


@pytest.mark.parametrize("cfg", [TINY, dataclasses.replace(TINY, arch="cnn")],
                         ids=["fusion", "cnn"])
def test_resume_after_interrupt_is_bit_exact(tmp_path, cfg):
    fs = feature_set()
    full = train(fs, cfg, FAST, tmp_path / "full", progress=False)

    def stop_after_2(epoch, record):
        if epoch == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train(fs, cfg, FAST, tmp_path / "cut", progress=False, callback=stop_after_2)
    # the interrupted run left a usable checkpoint
    _, meta = load_checkpoint(tmp_path / "cut")
    assert meta["metrics"]["interrupted"] is True and meta["metrics"]["epochs_run"] == 2
    epochs = []
    resumed = train(fs, cfg, FAST, tmp_path / "cut", progress=False, resume=True,
                    callback=lambda e, r: epochs.append(e))
    assert epochs == [3, 4]  # continued, not restarted
    assert resumed.epochs_run == full.epochs_run == 4
    assert [h["train_loss"] for h in resumed.history] == [h["train_loss"] for h in full.history]
    last_full, last_cut = (_weights(tmp_path / d / "last.safetensors") for d in ("full", "cut"))
    assert last_full.keys() == last_cut.keys()
    for k in last_full:
        assert torch.equal(last_full[k], last_cut[k]), k
    for a, b in zip(full.model.state_dict().values(), resumed.model.state_dict().values()):
        assert torch.equal(a, b)


def test_same_seed_same_weights_other_seed_differs(tmp_path):
    fs = feature_set()
    cfg = dataclasses.replace(FAST, max_epochs=1)
    a = train(fs, TINY, cfg, tmp_path / "a", progress=False).model.state_dict()
    b = train(fs, TINY, cfg, tmp_path / "b", progress=False).model.state_dict()
    c = train(fs, TINY, dataclasses.replace(cfg, seed=1), tmp_path / "c",
              progress=False).model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not all(torch.equal(a[k], c[k]) for k in a)


def test_early_stopping_and_finished_resume(tmp_path):
    fs = feature_set()
    cfg = dataclasses.replace(FAST, lr=0.0, patience=2, max_epochs=50)
    res = train(fs, TINY, cfg, tmp_path, progress=False)
    assert res.stopped_early and res.epochs_run == 3 and res.best_epoch == 1
    epochs = []
    again = train(fs, TINY, cfg, tmp_path, progress=False, resume=True,
                  callback=lambda e, r: epochs.append(e))
    assert again.epochs_run == 3 and epochs == []  # nothing left to do


def test_resume_refuses_other_settings(tmp_path):
    fs = feature_set()
    train(fs, TINY, dataclasses.replace(FAST, max_epochs=1), tmp_path, progress=False)
    with pytest.raises(CheckpointError, match="model_config"):
        train(fs, dataclasses.replace(TINY, hidden_size=8), FAST, tmp_path, progress=False,
              resume=True)
    (tmp_path / "last.safetensors").write_bytes(b"garbage")
    with pytest.raises(CheckpointError, match="safetensors"):
        train(fs, TINY, FAST, tmp_path, progress=False, resume=True)


def _modified(fs, **changes):
    return dataclasses.replace(fs, **changes)


@pytest.mark.parametrize("change,match", [
    (lambda fs: _modified(fs, ids=[], mfcc=fs.mfcc[:0], logmel=fs.logmel[:0], labels=fs.labels[:0],
                          split=fs.split[:0], text=None, text_mask=None, symbolic=None,
                          symbolic_mask=None), "empty"),
    (lambda fs: _modified(fs, labels=np.zeros_like(fs.labels)), "only one class"),
    (lambda fs: _modified(fs, split=np.where(fs.split == "val", "test", fs.split)),
     "'val' split is empty"),
    (lambda fs: _modified(fs, labels=np.where(np.arange(len(fs.labels)) == 3, 7, fs.labels)),
     "unknown label"),
    (lambda fs: _modified(fs, logmel=np.where(np.arange(32) == 5, np.nan, fs.logmel)), "NaN"),
    (lambda fs: _modified(fs, label_names=["only"], labels=np.zeros_like(fs.labels)),
     "at least 2 classes"),
    (lambda fs: _modified(fs, mfcc=fs.mfcc[:, :, :20]), "frames"),
])
def test_bad_data_is_refused(tmp_path, change, match):
    with pytest.raises(DataError, match=match):
        train(change(feature_set()), TINY, FAST, tmp_path, progress=False)


def test_evaluate_run_writes_report_and_scores_test_once(tmp_path):
    fs = feature_set()
    train(fs, TINY, dataclasses.replace(FAST, max_epochs=3), tmp_path, progress=False)
    rep = evaluate_run(tmp_path, fs)
    for f in ("report.json", "report.md", "confusion.png", "learning_curves.png",
              "modality_contributions.png", "test_metrics.json"):
        assert (tmp_path / f).stat().st_size > 0, f
    assert set(rep["modality_contributions"]) == {"mfcc", "mel", "text", "symbolic"}
    assert rep["test"]["n"] == int((fs.split == "test").sum())
    # stored test metrics are reused: later calls do not score the test split again
    flipped = dataclasses.replace(fs, labels=(fs.labels + 1) % 3)
    assert evaluate_run(tmp_path, flipped)["test"] == rep["test"]
    assert evaluate_run(tmp_path)["test"] == rep["test"]


def test_evaluate_refuses_unknown_labels(tmp_path):
    fs = feature_set()
    train(fs, TINY, dataclasses.replace(FAST, max_epochs=1), tmp_path, progress=False)
    other = dataclasses.replace(fs, label_names=["k0", "k1", "zz"])
    with pytest.raises(DataError, match="zz"):
        evaluate_run(tmp_path, other)
    with pytest.raises(DataError, match="no stored test metrics"):
        evaluate_run(tmp_path)


def test_run_experiment_table(tmp_path):
    fs = feature_set(text=False)
    grid_fast = dataclasses.replace(FAST, max_epochs=2)
    comp = run_experiment(fs, tmp_path, seeds=(0, 1), models=("fusion", "rf", "only_mel",
                                                              "only_text"),
                          model_cfg=TINY, train_cfg=grid_fast, progress=False,
                          baseline_grids={"rf": {"n_estimators": (30,), "max_depth": (None, 4)}})
    assert set(comp["models"]) == {"fusion", "rf", "only_mel"}
    assert "only_text" in comp["skipped"]
    for name, r in comp["models"].items():
        assert len(r["runs"]) == 2
        vals = [run["test"]["macro_f1"] for run in r["runs"]]
        assert r["mean"]["macro_f1"] == pytest.approx(np.mean(vals))
        assert r["std"]["macro_f1"] == pytest.approx(np.std(vals, ddof=1))
    assert comp["models"]["rf"]["runs"][0]["test"]["accuracy"] > 0.5
    md = (tmp_path / "comparison.md").read_text()
    assert "| fusion |" in md and "±" in md
    assert (tmp_path / "comparison.png").stat().st_size > 0
    assert "Modality contributions" in md and "| fusion | mel |" in md
    # report only: seed 2 was never run; nothing is trained, the finished seeds are summarised
    rep = run_experiment(fs, tmp_path, seeds=(0, 1, 2), models=("fusion", "rf", "cnn"),
                         model_cfg=TINY, train_cfg=grid_fast, progress=False,
                         train_missing=False)
    assert rep["incomplete"] == {"fusion": [2], "rf": [2], "cnn": [0, 1, 2]}
    assert rep["skipped"]["cnn"] == "no finished run yet"
    assert len(rep["models"]["fusion"]["runs"]) == 2
    assert not (tmp_path / "fusion" / "seed2").exists() and not (tmp_path / "cnn").exists()
    assert rep["models"]["fusion"]["mean"] == comp["models"]["fusion"]["mean"]
    assert "Not finished" in (tmp_path / "comparison.md").read_text()
    with pytest.raises(ValueError, match="unknown model"):
        run_experiment(fs, tmp_path, models=("transformer",))


def test_experiment_variant_changes_only_its_setting(tmp_path):
    """``fusion_mean`` = the base configuration turned into the first design, with mean
    pooling, trained as the first design was; nothing else differs."""
    from mmengine.evaluation import PAPER_MODEL, PAPER_TRAIN

    fs = feature_set(text=False)
    run_experiment(fs, tmp_path, seeds=(0,), models=("fusion_mean",), model_cfg=TINY,
                   train_cfg=dataclasses.replace(FAST, max_epochs=1), progress=False)
    saved = json.loads((tmp_path / "fusion_mean" / "seed0" / "checkpoint.json").read_text())
    expected = dataclasses.asdict(dataclasses.replace(TINY, **{**PAPER_MODEL, "pooling": "mean"}))
    got = saved["model_config"]
    assert got["pooling"] == "mean" != TINY.pooling
    train_cfg = saved["train_config"]
    assert {k: train_cfg[k] for k in PAPER_TRAIN if k != "max_epochs"} == {
        k: v for k, v in PAPER_TRAIN.items() if k != "max_epochs"}
    assert {k: v for k, v in got.items() if k != "modalities"} == {
        k: (list(v) if isinstance(v, tuple) else v) for k, v in expected.items()
        if k != "modalities"}


def test_paired_bootstrap_over_groups():
    from mmengine.evaluation import paired_bootstrap

    rng = np.random.default_rng(0)
    ids = [f"c{i}" for i in range(60)]
    true = [str(x) for x in rng.integers(0, 3, 60)]
    groups = {i: f"g{k // 2}" for k, i in enumerate(ids)}  # two clips per group
    perfect = {"ids": ids, "true": true, "pred": list(true)}
    noisy = {"ids": ids, "true": true, "pred": [str(x) for x in rng.integers(0, 3, 60)]}
    same = paired_bootstrap([perfect], [perfect], groups, n=200)
    assert same["diff"] == same["low"] == same["high"] == 0.0 and same["n_groups"] == 30
    better = paired_bootstrap([perfect, perfect], [noisy], groups, n=200)
    assert better["low"] > 0.3 and better["low"] <= better["diff"] <= better["high"]
    with pytest.raises(ValueError):
        paired_bootstrap([perfect], [dict(noisy, ids=ids[::-1])], groups, n=10)


DILATED = ModelConfig(hidden_size=16, num_layers=1, mfcc_channels=8, mel_channels=8,
                      symbolic_channels=4, text_dim=4, dilations=(1, 2), flux_bands=2,
                      spec_mask_bands=2)
AUX = dataclasses.replace(FAST, aux_weight=1.0, crop_seconds=0.0, ema_decay=0.9)


def test_aux_losses_and_weight_average_resume_and_stay_out_of_the_model(tmp_path):
    """Per-stream auxiliary heads and the weight average: the run resumes bit-exactly (heads,
    their optimiser state and the average travel in last.safetensors), and the checkpoint
    holds exactly the tensors of a model trained without heads (engines never see them)."""
    fs = feature_set()
    full = train(fs, DILATED, AUX, tmp_path / "full", progress=False)
    plain = train(fs, DILATED, dataclasses.replace(AUX, aux_weight=0.0), tmp_path / "plain",
                  progress=False)
    last = _weights(tmp_path / "full" / "last.safetensors")
    assert any(k.startswith("aux.mel.") for k in last) and any(k.startswith("aux.text.")
                                                              for k in last)
    assert "ema.n_averaged" in last and int(last["ema.n_averaged"]) == 4 * 3  # 36 clips / 16
    # the average is not the raw weights, and the checkpoint is the model that was scored
    assert not all(torch.equal(last["model." + k[len("ema.module."):]], v)
                   for k, v in last.items() if k.startswith("ema.module.") and v.is_floating_point())
    from mmengine.metrics import classification_metrics
    model, _ = load_checkpoint(tmp_path / "full")
    va = fs.subset("val")
    f1 = classification_metrics(va.labels, decide(predict_logits(model, batch_from_arrays(va)),
                                                  False), 3)["macro_f1"]
    assert f1 == pytest.approx(full.best_val_f1)
    ckpt, plain_ckpt = (_weights(tmp_path / d / "checkpoint.safetensors")
                        for d in ("full", "plain"))
    assert ckpt.keys() == plain_ckpt.keys()
    # the auxiliary losses change the training (same seed, other weights)
    assert not all(torch.equal(ckpt[k], plain_ckpt[k]) for k in ckpt)

    def stop_after_2(epoch, record):
        if epoch == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train(fs, DILATED, AUX, tmp_path / "cut", progress=False, callback=stop_after_2)
    resumed = train(fs, DILATED, AUX, tmp_path / "cut", progress=False, resume=True)
    assert [h["train_loss"] for h in resumed.history] == [h["train_loss"] for h in full.history]
    cut = _weights(tmp_path / "cut" / "last.safetensors")
    for k in last:
        assert torch.equal(last[k], cut[k]), k


@torch.no_grad()
def test_aux_loss_reads_only_clips_that_have_the_stream():
    from mmengine.models import build_model
    from mmengine.training import aux_heads, aux_loss

    fs = feature_set(N=10)
    dims = dict(n_mfcc=5, n_mels=10, text_dim=7, symbolic_dim=2, n_classes=3, multilabel=False)
    model = build_model(DILATED, dims).eval()
    batch = batch_from_arrays(fs)
    batch["text_mask"] = torch.tensor([True] * 5 + [False] * 5)
    parts = {}
    model.encode(batch, parts=parts)
    assert set(parts) == set(model.stream_dims()) == {"mfcc", "mel", "symbolic", "text",
                                                      "audio_meter"}
    for name, (summary, mask) in parts.items():
        assert summary.shape == (10, model.stream_dims()[name])
    assert parts["text"][1].tolist() == [1.0] * 5 + [0.0] * 5
    heads = aux_heads(model, 3).eval()
    y = torch.as_tensor(fs.labels)
    w = torch.tensor([1.0, 2.0, 0.5])
    base = aux_loss(heads, parts, y, False, w)
    # a clip without text cannot move the text head's loss
    text, mask = parts["text"]
    moved = dict(parts, text=(text + 100.0 * (1 - mask)[:, None], mask))
    assert torch.allclose(aux_loss(heads, moved, y, False, w), base)
    # a stream that no clip has is skipped, not averaged in as 0
    only_text = {"text": parts["text"]}
    gone = {"text": (text, torch.zeros(10))}
    assert float(aux_loss(heads, gone, y, False, w)) == 0.0
    assert float(aux_loss(heads, dict(only_text, mel=(parts["mel"][0], torch.zeros(10))),
                          y, False, w)) == pytest.approx(float(aux_loss(heads, only_text, y,
                                                                        False, w)))
    # weighted mean as nn.CrossEntropyLoss computes it, on the clips with text
    keep = mask.bool()
    ref = torch.nn.functional.cross_entropy(heads["text"](text[keep]), y[keep], weight=w)
    assert float(aux_loss(heads, only_text, y, False, w)) == pytest.approx(float(ref), rel=1e-5)


@pytest.mark.parametrize("cell", ["lstm", "none"])
@torch.no_grad()
def test_close_streams_keeps_the_outputs_of_the_notes_alone(cell):
    """After ``close_streams(("symbolic",))`` the model gives, with every modality present,
    exactly what it gave on the notes alone (late text, key scores and meter profile in)."""
    from mmengine.features.symbolic import SYMBOLIC_DIM
    from mmengine.models import build_model
    from mmengine.training import stage_batch

    torch.manual_seed(0)
    cfg = dataclasses.replace(DILATED, cell=cell, pitch_templates=4, meter_profile=True)
    dims = dict(n_mfcc=5, n_mels=10, text_dim=7, symbolic_dim=SYMBOLIC_DIM, n_classes=3,
                multilabel=False)
    model = build_model(cfg, dims).eval()
    assert model.pitch is not None and model.meter_rows > 0 and model.late_text
    B, T = 6, 24
    batch = {"mfcc": torch.randn(B, 5, T), "logmel": torch.randn(B, 10, T),
             "text": torch.rand(B, 7), "text_mask": torch.ones(B, dtype=torch.bool),
             "symbolic": torch.rand(B, SYMBOLIC_DIM, T),
             "symbolic_mask": torch.ones(B, dtype=torch.bool)}
    notes = model(stage_batch(batch, ("symbolic",)))
    assert not torch.allclose(model(batch), notes)  # every stream counts before ...
    model.close_streams(("symbolic",))
    assert torch.equal(model(batch), notes)          # ... and none but the notes after
    assert torch.equal(model(stage_batch(batch, ("symbolic",))), notes)


STAGED = dataclasses.replace(FAST, max_epochs=5, stage1_frac=0.4, crop_seconds=0.0)


def test_two_stage_training_selects_among_full_models_and_resumes_exactly(tmp_path):
    """Stage 1 trains on the notes alone (the audio and text stems are not touched), the
    switch keeps the outputs, only stage-2 epochs are candidates for the best epoch, and an
    interruption on either side of the switch resumes bit for bit."""
    fs = feature_set()
    res = train(fs, DILATED, STAGED, tmp_path / "full", progress=False)
    assert [h["stage"] for h in res.history] == [1, 2, 2, 2, 2]
    assert res.best_epoch >= 2
    last = _weights(tmp_path / "full" / "last.safetensors")
    # the audio stems moved only in stage 2: a run stopped in stage 1 left them at their init
    def stop_after(n):
        def cb(epoch, record):
            if epoch == n:
                raise KeyboardInterrupt
        return cb

    with pytest.raises(KeyboardInterrupt):
        train(fs, DILATED, STAGED, tmp_path / "s1", progress=False, callback=stop_after(1))
    torch.manual_seed(STAGED.seed)
    from mmengine.models import build_model, dims_of
    fresh = build_model(DILATED, dims_of(fs)).state_dict()
    s1 = _weights(tmp_path / "s1" / "last.safetensors")
    assert all(torch.equal(s1["model." + k], v) for k, v in fresh.items()
               if k.startswith("stems.mel.") or k.startswith("stems.text."))
    assert not all(torch.equal(s1["model." + k], v) for k, v in fresh.items()
                   if k.startswith("stems.symbolic."))
    for n in (1, 2):
        out = tmp_path / f"cut{n}"
        with pytest.raises(KeyboardInterrupt):
            train(fs, DILATED, STAGED, out, progress=False, callback=stop_after(n))
        resumed = train(fs, DILATED, STAGED, out, progress=False, resume=True)
        assert [h["train_loss"] for h in resumed.history] == \
            [h["train_loss"] for h in res.history]
        cut = _weights(out / "last.safetensors")
        for k in last:
            assert torch.equal(last[k], cut[k]), (n, k)


def test_two_stage_settings_are_checked_and_skipped_where_moot(tmp_path):
    fs = feature_set()
    with pytest.raises(ValueError, match="stage1_frac"):
        train(fs, DILATED, dataclasses.replace(STAGED, stage1_frac=1.0), tmp_path,
              progress=False)
    with pytest.raises(ValueError, match="stage1_modalities"):
        train(fs, DILATED, dataclasses.replace(STAGED, stage1_modalities=("notes",)), tmp_path,
              progress=False)
    with pytest.raises(ValueError, match="ema_decay"):
        train(fs, DILATED, dataclasses.replace(STAGED, ema_decay=0.9), tmp_path,
              progress=False)
    # a model of the notes alone has nothing to add in stage 2: one stage
    alone = train(fs, dataclasses.replace(DILATED, modalities=("symbolic",)), STAGED,
                  tmp_path / "alone", progress=False)
    assert all("stage" not in h for h in alone.history)



def test_two_stage_resume_refuses_another_switch_epoch(tmp_path):
    """max_epochs may change on resumption as long as the switch stays at the same epoch."""
    fs = feature_set()
    train(fs, DILATED, STAGED, tmp_path, progress=False)  # 5 epochs, switch after 2
    with pytest.raises(CheckpointError, match="stage1_epochs"):
        train(fs, DILATED, dataclasses.replace(STAGED, max_epochs=10), tmp_path,
              progress=False, resume=True)
    more = train(fs, DILATED, dataclasses.replace(STAGED, max_epochs=6), tmp_path,
                 progress=False, resume=True)  # round(0.4 * 6) = 2: the same switch
    assert more.epochs_run == 6 and more.history[-1]["stage"] == 2


@pytest.mark.parametrize("w", [0.0, 0.5, 1.0])
def test_selection_weighs_the_validation_score_without_the_notes(tmp_path, w):
    """Stage-2 epochs record the validation macro-F1 with every modality and without the
    notes; the best epoch maximises ``(1 - w)·all + w·without`` (``select_without_notes``), and
    the run reports the every-modality F1 of that epoch as its validation macro-F1."""
    fs = feature_set()
    res = train(fs, DILATED, dataclasses.replace(STAGED, select_without_notes=w),
                tmp_path / "run", progress=False)
    stage2 = [h for h in res.history if h["stage"] == 2]
    assert all("val_macro_f1_without_notes" in h for h in stage2)
    assert not any("val_macro_f1_without_notes" in h for h in res.history if h["stage"] == 1)
    score = [(1 - w) * h["val_macro_f1"] + w * h["val_macro_f1_without_notes"] for h in stage2]
    best = stage2[int(np.argmax(score))]  # the first of equal scores, as the loop keeps it
    assert res.best_epoch == best["epoch"]
    assert res.best_val_f1 == best["val_macro_f1"]
    assert res.val_metrics["macro_f1_without_notes"] == best["val_macro_f1_without_notes"]
    alone = train(fs, dataclasses.replace(DILATED, modalities=("mfcc", "mel")),
                  dataclasses.replace(FAST, select_without_notes=w), tmp_path / "audio",
                  progress=False)
    assert not any("val_macro_f1_without_notes" in h for h in alone.history)


def test_weight_average_copies_integer_buffers():
    """The EMA update averages floating tensors and copies the rest: torch's own update
    would write ``0.9·a + 0.1·a`` into an integer buffer and round it down (a head's constant
    lag table drifted that way until the average scored another model than the one saved)."""
    from mmengine.training import ema_update_fn

    ema_w, cur_w = torch.zeros(3), torch.ones(3)
    idx = torch.arange(0, 400, dtype=torch.int64)
    ema_idx, cur_idx = idx.clone(), idx.clone()
    update = ema_update_fn(0.9)
    for _ in range(50):
        update([ema_w, ema_idx], [cur_w, cur_idx], torch.tensor(1))
    assert torch.equal(ema_idx, idx)
    torch.testing.assert_close(ema_w, torch.full((3,), 1 - 0.9 ** 50))
