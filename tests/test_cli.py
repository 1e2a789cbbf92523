"""The ``mmengine`` command: help texts, version, and the whole chain on a tiny real build."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from mmengine import PROJECT, __version__
from mmengine.cli import EXIT_INPUT_FAILED, build_parser, main

SUBCOMMANDS = [["data"], ["data", "build"], ["data", "list"], ["data", "path"], ["features"],
               ["train"], ["evaluate"], ["experiment"], ["build"], ["classify"], ["bench"]]


@pytest.mark.parametrize("cmd", SUBCOMMANDS, ids=lambda c: " ".join(c))
def test_every_subcommand_has_help(cmd, capsys):
    with pytest.raises(SystemExit) as e:
        build_parser().parse_args(cmd + ["--help"])
    assert e.value.code == 0
    assert "usage: mmengine" in capsys.readouterr().out


def test_version_names_the_project():
    out = subprocess.run([sys.executable, "-m", "mmengine", "--version"], capture_output=True,
                         text=True, check=True).stdout
    assert out.strip() == f"{PROJECT} {__version__}"


def test_unknown_data_is_a_clear_error(capsys, tmp_path):
    assert main(["features", str(tmp_path / "nope.csv")]) == 1
    assert "neither an existing manifest" in capsys.readouterr().err


def test_set_parses_config_fields_by_type():
    from mmengine.cli import _model_cfg, _train_cfg
    from mmengine.errors import MMEngineError

    args = build_parser().parse_args([
        "train", "--set", "modality_dropout=0.5", "--set", "aux-weight=1",
        "--set", "modalities=mel,symbolic", "--set", "meter_profile=false",
        "--set", "dilations=1,2", "--max-epochs", "3"])
    m, t = _model_cfg(args), _train_cfg(args)
    assert (m.modality_dropout, m.modalities, m.meter_profile, m.dilations) == \
        (0.5, ("mel", "symbolic"), False, (1, 2))
    assert (t.aux_weight, t.max_epochs) == (1.0, 3)
    for bad in ("nope=1", "modality_dropout", "meter_profile=maybe", "hidden_size=1.5"):
        with pytest.raises(MMEngineError, match="--set"):
            _model_cfg(build_parser().parse_args(["train", "--set", bad]))


@pytest.fixture(scope="module")
def tiny_folk(tmp_path_factory):
    """A real 16-clip build of the folk task (rendered from the music21 corpus), shared."""
    pytest.importorskip("music21")
    data = tmp_path_factory.mktemp("tinyfolk") / "data"
    old = os.environ.get("MMENGINE_DATA_DIR")
    os.environ["MMENGINE_DATA_DIR"] = str(data)
    try:
        assert main(["data", "build", "folk", "--limit", "16", "--workers", "2", "-q"]) == 0
    finally:
        if old is None:
            os.environ.pop("MMENGINE_DATA_DIR")
        else:
            os.environ["MMENGINE_DATA_DIR"] = old
    return data


def test_whole_chain_on_a_tiny_build(tiny_folk, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("MMENGINE_DATA_DIR", str(tiny_folk))
    monkeypatch.chdir(tmp_path)
    # a second build of the same clips is a no-op (resumable builder)
    assert main(["data", "build", "folk", "--limit", "16", "--workers", "2", "-q"]) == 0
    assert main(["features", "folk", "-q"]) == 0
    assert "16 clips, 1292 frames each" in capsys.readouterr().out
    assert main(["train", "--data", "folk", "--out", "run", "--max-epochs", "2",
                 "--pooling", "mean", "-q"]) == 0
    saved = json.loads((tmp_path / "run" / "checkpoint.json").read_text())
    assert saved["model_config"]["pooling"] == "mean"  # and the engine below serves it
    assert main(["evaluate", "run", "-q"]) == 0
    assert (tmp_path / "run" / "report.md").exists()
    assert (tmp_path / "run" / "confusion.png").stat().st_size > 1000
    assert main(["build", "run", "-o", "run/folk.mme", "--backend", "native"]) == 0
    capsys.readouterr()
    clip = next((tiny_folk / "folk" / "audio").glob("*.flac"))
    assert main(["classify", "run/folk.mme", str(clip), str(tmp_path / "missing.wav"),
                 "--json"]) == EXIT_INPUT_FAILED  # one bad input: a result for the good one
    res = json.loads(capsys.readouterr().out)
    assert res[0]["label"] in {"hornpipe", "jig", "reel", "slip jig"} and "error" in res[1]
    assert main(["bench", "run/folk.mme", "--rounds", "1", "--batches", "1"]) == 0
    assert "| native | 1 |" in capsys.readouterr().out


def test_tiny_real_train_beats_chance_on_its_training_clips(tiny_folk, tmp_path, monkeypatch):
    """Real rendered audio, real features, the fusion LSTM: a small model must fit a
    handful of clips well above the majority-class rate (the loop, masks and features work
    together on real data, not only on synthetic arrays)."""
    import numpy as np

    from mmengine.api import load_features
    from mmengine.config import ModelConfig, TrainConfig
    from mmengine.models import batch_from_arrays
    from mmengine.training import decide, predict_logits, train

    monkeypatch.setenv("MMENGINE_DATA_DIR", str(tiny_folk))
    fs, _ = load_features("folk", progress=False)
    cfg = ModelConfig(hidden_size=32, num_layers=1, mfcc_channels=16, mel_channels=16,
                      symbolic_channels=8, text_dim=8, dropout=0.0, modality_dropout=0.0)
    res = train(fs, cfg, TrainConfig(batch_size=8, max_epochs=40, patience=100, lr=3e-3),
                tmp_path / "run", progress=False)
    tr = fs.subset("train")
    acc = float((decide(predict_logits(res.model, batch_from_arrays(tr)), False)
                 == tr.labels).mean())
    majority = np.bincount(tr.labels).max() / len(tr.labels)
    assert len(tr.labels) >= 8
    assert acc >= min(1.0, majority + 0.3), (acc, majority)


def test_api_names_survive_submodule_imports():
    """``mmengine.train`` / ``mmengine.evaluate`` stay the API functions after the modules
    that implement them are imported (they are named ``training`` / ``evaluation``)."""
    import importlib

    import mmengine

    importlib.import_module("mmengine.training")
    importlib.import_module("mmengine.evaluation")
    for name in ("train", "evaluate", "experiment", "build_engine", "classify", "benchmark"):
        assert getattr(mmengine, name).__module__ == "mmengine.api", name


def test_engines_serve_the_checkpoint_on_real_clips(tiny_folk, tmp_path, monkeypatch):
    """The default (dilated, late text, pitch head) model trained on real clips; every CPU
    engine built from its checkpoint gives the checkpoint's probabilities on the same clips
    from a manifest (fp32 ≤ 1e-4, bf16 ≤ 3e-2), with the text read from the field the model
    was trained on (folk: the title), and the same labels as ``evaluate`` scores."""
    import numpy as np
    import torch

    from mmengine.api import load_features
    from mmengine.checkpoint import load_checkpoint
    from mmengine.config import AudioConfig, FrontendConfig, ModelConfig, TrainConfig
    from mmengine.export import build_engine
    from mmengine.models import batch_from_arrays
    from mmengine.runtime import Engine
    from mmengine.training import train

    monkeypatch.setenv("MMENGINE_DATA_DIR", str(tiny_folk))
    fs, vec = load_features("folk", progress=False)
    assert fs.text_field == "title"
    cfg = ModelConfig(hidden_size=16, mfcc_channels=8, mel_channels=8, symbolic_channels=8,
                      text_dim=8, dilations=(1, 2, 4), flux_bands=4, pitch_templates=4)
    train(fs, cfg, TrainConfig(batch_size=8, max_epochs=3, lr=3e-3), tmp_path / "run",
          progress=False, audio_config=AudioConfig(), frontend_config=FrontendConfig(),
          text_vectorizer=vec)
    model, meta = load_checkpoint(tmp_path / "run")
    assert meta["extra"]["text_field"] == "title"
    assert model.audio_pitch is not None  # the default model reads the chroma pitch stream
    with torch.no_grad():
        ref = model.predict_proba(batch_from_arrays(fs)).double().numpy()
    root = tiny_folk / "folk"
    rows = [json.loads(x) for x in (root / "manifest.jsonl").read_text().splitlines() if x]
    by_id = {r["id"]: r for r in rows}
    manifest = tmp_path / "clips.jsonl"
    manifest.write_text("".join(json.dumps({
        "id": i, "path": str(root / by_id[i]["path"]), "title": by_id[i]["title"],
        "lyrics": "words the model never saw", "midi_path": str(root / by_id[i]["midi_path"])})
        + "\n" for i in fs.ids))
    for backend, dtype, tol, frontend in [
            ("native", "fp32", 1e-4, "reference"), ("onnx", "fp32", 1e-4, "reference"),
            ("torch", "fp32", 1e-4, "reference"), ("native", "bf16", 3e-2, "reference"),
            ("native", "fp32", 1e-4, "native")]:
        path = build_engine(tmp_path / "run", tmp_path / f"{backend}-{dtype}.mme",
                            backend=backend, dtype=dtype)
        eng = Engine.load(path, backend=backend, frontend=frontend)
        assert eng.header["text_field"] == "title"
        assert "chroma" in eng.input_names and eng.frontend_cfg.chroma_bins == 12
        res = eng.classify(manifest, top_k=len(eng.labels))
        got = np.array([[dict(r.top_k)[name] for name in meta["label_names"]] for r in res])
        assert [r.id for r in res] == fs.ids
        err = np.abs(got - ref).max()
        assert err <= tol, (backend, dtype, err)
        if dtype == "fp32":
            assert [r.label for r in res] == [meta["label_names"][i] for i in ref.argmax(1)]


def test_inference_and_build_defaults_come_from_config():
    """Every default of classify / batch / build and of their Python twins is a field of
    config.EngineConfig / BuildConfig / BatchConfig (issue 16: one source of defaults)."""
    import inspect

    from mmengine import api
    from mmengine.config import BatchConfig, BuildConfig, EngineConfig
    from mmengine.runtime import engine

    p = build_parser()
    c = p.parse_args(["classify", "m.mme", "a.wav"])
    assert (c.top_k, c.batch_size, c.backend, c.frontend, c.workers) == (
        EngineConfig.top_k, EngineConfig.batch_size, EngineConfig.backend,
        EngineConfig.frontend, EngineConfig.workers)
    b = p.parse_args(["build", "run", "-o", "m.mme"])
    assert (b.backend, b.dtype) == (BuildConfig.backend, BuildConfig.dtype)
    bt = p.parse_args(["batch", "m.mme", "lib", "--out", "r.jsonl"])
    assert (bt.backend, bt.frontend, bt.batch_size) == (
        EngineConfig.backend, EngineConfig.frontend, BatchConfig.batch_size)
    sig = inspect.signature(engine.Engine.classify).parameters
    assert (sig["top_k"].default, sig["batch_size"].default, sig["workers"].default) == (
        EngineConfig.top_k, EngineConfig.batch_size, EngineConfig.workers)
    assert inspect.signature(engine.Engine.load).parameters["backend"].default == \
        EngineConfig.backend
    b_sig = inspect.signature(api.build_engine).parameters
    assert (b_sig["backend"].default, b_sig["dtype"].default) == (
        BuildConfig.backend, BuildConfig.dtype)
    assert (BatchConfig.top_k, BatchConfig.window_batch) == (
        EngineConfig.top_k, EngineConfig.batch_size)


def test_data_experiment_and_bench_defaults_come_from_config():
    """Every default of data build / features / train / experiment / bench and of their Python
    twins is a field of config.CorpusConfig / FeatureLoadConfig / ExperimentConfig /
    BenchConfig (issue 16: one source of defaults), help texts included."""
    import inspect

    from mmengine import api, bench, evaluation
    from mmengine.config import (BenchConfig, CorpusConfig, ExperimentConfig,
                                 FeatureLoadConfig)
    from mmengine.data.corpus import build
    from mmengine.features import cache, dataset

    def defaults(fn, *names):
        sig = inspect.signature(fn).parameters
        return tuple(sig[n].default for n in names)

    p = build_parser()
    d = p.parse_args(["data", "build"])
    assert (d.task, d.seed, d.train_renderings) == (
        CorpusConfig.task, CorpusConfig.seed, CorpusConfig.train_renderings)
    corpus = (CorpusConfig.task, CorpusConfig.seed, CorpusConfig.train_renderings)
    assert defaults(build.build_dataset, "task", "seed", "train_renderings") == corpus
    assert defaults(build.build_items, "seed", "train_renderings") == corpus[1:]
    assert p.parse_args(["train"]).data == p.parse_args(["experiment"]).data == CorpusConfig.task
    assert defaults(api.train, "data") == defaults(api.experiment, "data") == (CorpusConfig.task,)

    f = p.parse_args(["features", "folk"])
    assert (f.frontend, f.workers) == (FeatureLoadConfig.frontend, FeatureLoadConfig.workers)
    assert defaults(api.load_features, "frontend", "text_field", "symbolic", "workers") == (
        FeatureLoadConfig.frontend, FeatureLoadConfig.text_field, FeatureLoadConfig.symbolic,
        FeatureLoadConfig.workers)
    assert defaults(dataset.build_feature_set, "frontend", "text_field", "workers") == (
        FeatureLoadConfig.frontend, FeatureLoadConfig.text_field, FeatureLoadConfig.workers)
    assert defaults(cache.compute_or_load_audio_features, "frontend", "workers") == (
        FeatureLoadConfig.frontend, FeatureLoadConfig.workers)

    x = p.parse_args(["experiment"])
    assert tuple(int(s) for s in x.seeds.split(",")) == ExperimentConfig.seeds
    assert defaults(api.experiment, "seeds") == defaults(evaluation.run_experiment, "seeds") == (
        ExperimentConfig.seeds,)
    assert defaults(evaluation.run_experiment, "models") == (ExperimentConfig.models,)
    assert evaluation.DEFAULT_MODELS == ExperimentConfig.models

    bn = p.parse_args(["bench", "m.mme"])
    assert (tuple(int(b) for b in bn.batches.split(",")), bn.rounds) == (
        BenchConfig.batches, BenchConfig.rounds)
    assert defaults(bench.benchmark_engine, "batches", "rounds", "target_s", "max_reps") == (
        BenchConfig.batches, BenchConfig.rounds, BenchConfig.target_s, BenchConfig.max_reps)

    sub = next(a for a in p._actions if a.dest == "command").choices
    helps = {(cmd, a.dest): a.help for cmd in ("train", "experiment", "bench", "features")
             for a in sub[cmd]._actions}
    assert f"default {','.join(map(str, ExperimentConfig.seeds))}" in helps["experiment", "seeds"]
    models_help = helps["experiment", "models"]
    assert all(m in models_help for m in ExperimentConfig.models)
    assert f"default {BenchConfig.rounds};" in helps["bench", "rounds"]
    assert f"up to {BenchConfig.max_reps} calls" in helps["bench", "rounds"]
    assert f"default: {FeatureLoadConfig.frontend}" in helps["features", "frontend"]


def test_config_reexports_the_engine_side():
    """config_engine's classes are the ones ``mmengine.config`` names (one object each)."""
    from mmengine import config, config_engine

    for name in ("EngineConfig", "BuildConfig", "BatchConfig", "BenchConfig"):
        assert getattr(config, name) is getattr(config_engine, name)
