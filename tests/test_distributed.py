"""Data-parallel training on 2 local CPU processes (real torchrun, DDP over gloo): the loss
trajectory of one process at the same global batch, the same weights on every rank, a
checkpoint that loads and classifies, resumption after a rank is killed, and
``mmengine train --nproc 2`` on real audio through to an engine that classifies it.

Why the comparison with one process can be tight: every rank draws the same global batches
and crops from the shared shuffle generator, a rank's loss is its part of the global
batch's loss, and BatchNorm statistics are the global batch's (mmengine.distributed). The
random draws of the global torch RNG are per rank, so the settings below turn them off
(dropout, modality dropout, SpecAugment, transposition; the auxiliary heads' fixed dropout
through the worker's ``aux_dropout``). What remains differs only in float32 summation order.
"""
from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from mmengine import training
from mmengine.checkpoint import load_checkpoint, read_tensors
from mmengine.config import ModelConfig, TrainConfig
from mmengine.metrics import classification_metrics
from mmengine.models import batch_from_arrays

from test_train import feature_set

pytestmark = pytest.mark.skipif(not torch.distributed.is_available(),
                                reason="this torch build has no torch.distributed")

WORKER = Path(__file__).resolve().parent / "ddp_worker.py"
# the model of the two-stage tests in test_train without any draw from the global RNG; no
# pitch head or meter profile (their 2-D BatchNorm cannot train on the last batch of one
# clip that batch_size 5 leaves, which exercises a rank with no clip in a global batch)
SETTINGS = {
    "model": dict(hidden_size=16, num_layers=1, mfcc_channels=8, mel_channels=8,
                  symbolic_channels=4, text_dim=4, dilations=[1, 2], flux_bands=2,
                  pitch_templates=0, meter_profile=False, dropout=0.0, rnn_dropout=0.0,
                  modality_dropout=0.0, text_dropout=0.0, symbolic_dropout=0.0,
                  spec_mask_bands=0, pitch_rotation=False),
    # two stages (unused stems in stage 1, the switch), class weights, random crops, the
    # auxiliary losses (normalisers summed over ranks), 36 clips in global batches of 5
    "train": dict(batch_size=5, max_epochs=5, patience=100, lr=3e-3, stage1_frac=0.4,
                  crop_seconds=0.5, aux_weight=1.0, num_threads=1),
    "aux_dropout": 0.0,
}
# float32 sums in another order (per-rank partial sums, BatchNorm statistics as sum / count):
# ~1e-7 relative per step, seen at 2e-8 on the training loss after 40 steps here
TRAIN_LOSS_RTOL = 1e-5
# evaluation uses the BatchNorm running means, which follow the convolution biases in front
# of each BatchNorm: their gradient is zero up to rounding and Adam turns that noise into
# lr-sized steps, so they (and the running means) drift apart between the two runs; the
# training outputs cancel them, the validation outputs move by ~1e-4 (seen: 1e-5 to 4e-5)
VAL_LOSS_RTOL = 1e-3


def _cfgs(settings):
    tup = lambda d: {k: tuple(v) if isinstance(v, list) else v for k, v in d.items()}
    return (dataclasses.replace(ModelConfig(), **tup(settings["model"])),
            dataclasses.replace(TrainConfig(), **tup(settings["train"])))


def _torchrun(tmp: Path, out: Path, report: Path, *extra, settings=SETTINGS, nproc=2):
    path = tmp / f"settings-{report.name}.json"
    path.write_text(json.dumps(settings))
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone",
           "--nproc-per-node", str(nproc), str(WORKER), str(path), str(out), str(report),
           *extra]
    env = dict(os.environ, PYTHONPATH=str(WORKER.parent) + os.pathsep +
               os.environ.get("PYTHONPATH", ""))
    return subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)


def _ok(proc):
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """One process in this process, and the same run on 2 torchrun processes."""
    tmp = tmp_path_factory.mktemp("ddp")
    model_cfg, train_cfg = _cfgs(SETTINGS)
    heads = training.aux_heads
    training.aux_heads = lambda model, n: heads(model, n, dropout=SETTINGS["aux_dropout"])
    try:
        single = training.train(feature_set(), model_cfg, train_cfg, tmp / "single",
                                progress=False)
    finally:
        training.aux_heads = heads
    _ok(_torchrun(tmp, tmp / "ddp", tmp / "report"))
    return tmp, single


def _report(report: Path, rank: int) -> dict:
    return json.loads((report / f"rank{rank}.json").read_text())


def test_two_processes_follow_one_process_at_the_same_global_batch(runs):
    tmp, single = runs
    ranks = [_report(tmp / "report", r) for r in (0, 1)]
    ddp = ranks[0]["history"]
    assert ranks[0]["world_size"] == 2
    assert [h["stage"] for h in ddp] == [h["stage"] for h in single.history] == [1, 2, 2, 2, 2]
    for one, two in zip(single.history, ddp):
        assert two["train_loss"] == pytest.approx(one["train_loss"], rel=TRAIN_LOSS_RTOL), \
            (one, two)
        assert two["val_loss"] == pytest.approx(one["val_loss"], rel=VAL_LOSS_RTOL), (one, two)
    # the losses did move: the comparison is not between two constant curves
    losses = [h["train_loss"] for h in ddp]
    assert max(losses) - min(losses) > 1e-2
    # every rank scored the same metrics and took the same decisions
    strip = lambda hist: [{k: v for k, v in h.items() if k != "seconds"} for h in hist]
    assert strip(ranks[1]["history"]) == strip(ddp)
    assert ranks[1]["checkpoint"] is None and ranks[0]["checkpoint"]
    # and holds the same weights at the end (rank 0's last state vs rank 1's model)
    last, _ = read_tensors(tmp / "ddp" / "last.safetensors")
    other, _ = read_tensors(tmp / "report" / "rank1.safetensors")
    assert other.keys() == {k[len("model."):] for k in last if k.startswith("model.")}
    for k, v in other.items():
        assert torch.equal(last["model." + k], v), k
    # each rank's own RNG stream is saved for resumption; rank 0's is the single-process one
    assert "rng.torch.rank1" in last and not torch.equal(last["rng.torch"],
                                                         last["rng.torch.rank1"])
    assert json.loads((tmp / "ddp" / "last.json").read_text())["world_size"] == 2


def test_the_checkpoint_of_rank_0_loads_and_classifies(runs):
    tmp, single = runs
    model, meta = load_checkpoint(tmp / "ddp")
    assert meta["metrics"]["interrupted"] is False and meta["metrics"]["epochs_run"] == 5
    history = _report(tmp / "report", 0)["history"]
    f1s = {h["epoch"]: h["val_macro_f1"] for h in history if h["stage"] == 2}
    assert meta["metrics"]["best_epoch"] == max(f1s, key=f1s.get)
    # the checkpoint is the model that was scored: its validation score is reproduced
    fs = feature_set()
    va = fs.subset("val")
    pred = training.decide(training.predict_logits(model, batch_from_arrays(va)), False)
    f1 = classification_metrics(va.labels, pred, 3)["macro_f1"]
    assert f1 == pytest.approx(meta["metrics"]["best_val_macro_f1"])
    # and classifies the held-out clips like the single-process model of the same epoch
    te = fs.subset("test")
    one, _ = load_checkpoint(single.out_dir)
    p2 = model.predict_proba(batch_from_arrays(te)).numpy()
    assert p2.shape == (len(te.ids), 3) and np.allclose(p2.sum(1), 1.0, atol=1e-5)
    if single.best_epoch == meta["metrics"]["best_epoch"]:
        p1 = one.predict_proba(batch_from_arrays(te)).numpy()
        assert np.abs(p1 - p2).max() < 1e-2


def test_resume_after_a_rank_is_killed_ends_like_the_uninterrupted_run(runs):
    """Rank 1 SIGKILLs itself after epoch 2 (as a crashed node would); torchrun stops the
    group; ``resume`` on 2 processes finishes with the uninterrupted run's losses and, bit
    for bit, its final training state."""
    tmp, _ = runs
    killed = dict(SETTINGS, kill_rank_after_epoch=[1, 2])
    proc = _torchrun(tmp, tmp / "cut", tmp / "cut-report", settings=killed)
    assert proc.returncode != 0
    done = json.loads((tmp / "cut" / "last.json").read_text())["epoch"]
    assert 1 <= done <= 2  # rank 0 may have been stopped while it wrote epoch 2 (atomically)
    assert not (tmp / "cut-report" / "rank1.json").exists()
    _ok(_torchrun(tmp, tmp / "cut", tmp / "cut-report", "--resume"))
    full, cut = (_report(tmp / d, 0)["history"] for d in ("report", "cut-report"))
    strip = lambda hist: [{k: v for k, v in h.items() if k != "seconds"} for h in hist]
    assert strip(cut) == strip(full)
    a, _ = read_tensors(tmp / "ddp" / "last.safetensors")
    b, _ = read_tensors(tmp / "cut" / "last.safetensors")
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


def _tones(root: Path) -> Path:
    from audio_fixtures import write_tone

    for label, base in (("low", 220.0), ("high", 1760.0)):
        (root / label).mkdir(parents=True)
        for i in range(10):
            write_tone(root / label / f"{label}{i}.wav", freq=base * (1 + 0.03 * i),
                       seconds=1.0)
    return root


def test_cli_nproc_trains_on_real_audio_and_the_engine_classifies(tmp_path, capsys):
    """``mmengine train --nproc 2`` (torchrun underneath) on a folder of real audio files:
    features extracted once (rank 0 first), a checkpoint from rank 0, an engine built from it
    that classifies the files."""
    from mmengine.cli import main

    data = _tones(tmp_path / "tones")
    run = tmp_path / "run"
    assert main(["train", "--data", str(data), "--out", str(run), "--nproc", "2",
                 "--max-epochs", "2", "--set", "stage1_frac=0", "-q"]) == 0
    meta = json.loads((run / "checkpoint.json").read_text())
    assert meta["metrics"]["epochs_run"] == 2
    assert json.loads((run / "last.json").read_text())["world_size"] == 2
    assert main(["build", str(run), "-o", str(tmp_path / "t.mme")]) == 0
    capsys.readouterr()
    clips = [str(data / "low" / "low0.wav"), str(data / "high" / "high9.wav")]
    assert main(["classify", str(tmp_path / "t.mme"), *clips, "--json"]) == 0
    res = json.loads(capsys.readouterr().out)
    assert [r["label"] in ("low", "high") for r in res] == [True, True]


def test_nproc_rebuilds_the_train_command(capsys):
    from mmengine.cli import _train_argv, build_parser, main

    assert main(["train", "--nproc", "0"]) == 1
    assert "--nproc must be at least 1" in capsys.readouterr().err

    args = build_parser().parse_args(["-v", "train", "--data", "d", "--max-epochs", "3",
                                      "--set", "lr=0.01", "--set", "aux_weight=1", "--resume",
                                      "--nproc", "2", "-q"])
    assert _train_argv(args) == ["-v", "train", "--data", "d", "--max-epochs", "3", "--set",
                                 "lr=0.01", "--set", "aux_weight=1", "--resume", "--quiet"]
    from mmengine.distributed import torchrun_command

    cmd = torchrun_command(2, ["train", "--data", "d"])
    assert cmd[1:] == ["-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
                       "-m", "mmengine", "train", "--data", "d"]
