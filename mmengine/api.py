"""The Python API behind every CLI verb (the CLI only parses arguments and prints).

>>> import mmengine
>>> fs, vec = mmengine.load_features("folk")                  # data build + features (cached)
>>> run = mmengine.train("folk", "runs/folk")                  # fusion LSTM, best checkpoint
>>> report = mmengine.evaluate("runs/folk")                    # test metrics, report.md, plots
>>> mmengine.build_engine("runs/folk", "folk.mme", backend="native")
>>> mmengine.classify("folk.mme", "tune.wav")                  # -> Prediction
>>> mmengine.batch_classify("folk.mme", "library/", "out.parquet", ray=True)  # whole library
>>> mmengine.benchmark("folk.mme")                             # backends, batches, ratios
"""
from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Optional, Sequence

from .config import (AudioConfig, BuildConfig, CorpusConfig, EngineConfig, ExperimentConfig,
                     FeatureLoadConfig, FrontendConfig, ModelConfig, SplitConfig, TextConfig,
                     TrainConfig)
from .errors import MMEngineError

log = logging.getLogger(__name__)
RUN_DATA = "data.json"  # what a run was trained on, so that ``evaluate`` can rebuild it


def resolve_data(spec) -> Path:
    """A built-in task name (built on first use), a manifest file or a folder layout."""
    p = Path(spec)
    if p.exists():
        return p
    from .data.corpus import TASKS, build_dataset, default_manifest

    if str(spec) in TASKS:
        m = default_manifest(str(spec))
        return m if m.exists() else build_dataset(str(spec))
    raise MMEngineError(f"{spec}: neither an existing manifest/folder nor a built-in data set "
                        f"({', '.join(TASKS)})")


def load_features(data, *, cache_dir=None, frontend: str = FeatureLoadConfig.frontend,
                  text_field=FeatureLoadConfig.text_field,
                  symbolic: bool = FeatureLoadConfig.symbolic, progress: bool = True,
                  workers: int = FeatureLoadConfig.workers,
                  audio_cfg: AudioConfig = AudioConfig(),
                  frontend_cfg: FrontendConfig = FrontendConfig(),
                  text_cfg: TextConfig = TextConfig(), split_cfg: SplitConfig = SplitConfig()):
    """Data set → ``(FeatureSet, TextVectorizer | None)``: audio features from the cache
    (computed once), the persisted split, TF-IDF fit on the training rows, symbolic features
    from the MIDI files where the manifest has them."""
    from .data.manifest import load_dataset
    from .data.split import load_or_create_split
    from .features.cache import clip_samples
    from .features.dataset import build_feature_set
    from .features.symbolic import record_symbolic_fn

    path = resolve_data(data)
    ds = load_dataset(path)
    assignment = load_or_create_split(ds, split_cfg)
    root = path if path.is_dir() else path.parent
    cache = Path(cache_dir) if cache_dir else root / "features"
    n_frames = frontend_cfg.n_frames(clip_samples(audio_cfg))
    has_midi = any(r.midi_path is not None for r in ds.records)
    sym_fn = record_symbolic_fn(frontend_cfg, n_frames) if symbolic and has_midi else None
    return build_feature_set(ds, assignment, audio_cfg, frontend_cfg, text_cfg, cache,
                             text_field=text_field, symbolic_fn=sym_fn, progress=progress,
                             frontend=frontend, workers=workers)


def train(data=CorpusConfig.task, out=None, *, model_cfg: ModelConfig = ModelConfig(),
          train_cfg: TrainConfig = TrainConfig(), resume: bool = False, progress: bool = True,
          **feature_kw):
    """Train the fusion LSTM (or ``model_cfg.arch``) on ``data``; returns ``RunResult``.

    ``out`` defaults to ``runs/<data name>``; ``resume=True`` continues an interrupted run.
    Under torchrun (``torchrun --nproc-per-node N -m mmengine train ...``) every process calls
    this and the run is data-parallel (``mmengine.training.train``)."""
    import importlib

    _train = importlib.import_module("mmengine.training")
    from . import distributed

    dist = distributed.setup()  # under torchrun: every rank runs this with the same arguments
    main = dist is None or dist.is_main
    with distributed.main_first(dist):  # features extracted and cached once per node
        fs, vec = load_features(data, progress=progress and main, **feature_kw)
    out = Path(out) if out else Path("runs") / Path(str(data)).stem
    if main:
        out.mkdir(parents=True, exist_ok=True)
        (out / RUN_DATA).write_text(json.dumps({"data": str(resolve_data(data).resolve()),
                                                **{k: str(v) for k, v in feature_kw.items()}}))
    return _train.train(fs, model_cfg, train_cfg, out, progress=progress, resume=resume,
                        audio_config=AudioConfig(), frontend_config=FrontendConfig(),
                        text_vectorizer=vec)


def _run_features(run_dir: Path, progress: bool):
    doc = json.loads((run_dir / RUN_DATA).read_text()) if (run_dir / RUN_DATA).exists() else None
    if doc is None:
        raise MMEngineError(f"{run_dir}: no {RUN_DATA}; pass data= explicitly")
    return load_features(doc["data"], progress=progress)[0]


def evaluate(run_dir, data=None, *, plots: bool = True, progress: bool = True) -> dict:
    """Test metrics (scored once per model), modality contributions, ``report.md`` + plots."""
    from .evaluation import evaluate_run

    run_dir = Path(run_dir)
    if (run_dir / "test_metrics.json").exists() and data is None:
        fs = None
    else:
        fs = load_features(data, progress=progress)[0] if data else _run_features(run_dir, progress)
    return evaluate_run(run_dir, fs, plots=plots)


def experiment(data=CorpusConfig.task, out=None, *,
               seeds: Sequence[int] = ExperimentConfig.seeds, models=None,
               model_cfg: ModelConfig = ModelConfig(), train_cfg: TrainConfig = TrainConfig(),
               progress: bool = True, report_only: bool = False) -> dict:
    """The paper's comparison on ``data``: fusion LSTM vs SVM, RF, CNN, RNN and each single
    modality, mean ± std over ``seeds``; writes ``comparison.{json,md,png}``.
    ``report_only``: train nothing, summarise the runs that finished."""
    from .evaluation import DEFAULT_MODELS, run_experiment

    fs, vec = load_features(data, progress=progress)
    out = Path(out) if out else Path("runs") / f"{Path(str(data)).stem}-experiment"
    return run_experiment(fs, out, seeds=tuple(seeds), models=tuple(models or DEFAULT_MODELS),
                          model_cfg=model_cfg, train_cfg=train_cfg, progress=progress,
                          train_missing=not report_only, audio_config=AudioConfig(), frontend_config=FrontendConfig(),
                          text_vectorizer=vec)


def build_engine(run_or_checkpoint, out, *, backend: str = BuildConfig.backend,
                 dtype: str = BuildConfig.dtype, **options) -> Path:
    """Checkpoint → engine file (see ``mmengine.export.build_engine``)."""
    from .export import build_engine as _build

    return _build(run_or_checkpoint, out, backend=backend, dtype=dtype, **options)


def classify(model, x, lyrics=None, **kw):
    """Classify audio with an engine file (see ``Engine.classify``)."""
    from .runtime.engine import classify as _classify

    return _classify(model, x, lyrics, **kw)


def batch_classify(model, source, out, **kw):
    """Classify a whole library into one results file, resumably, in-process or on Ray
    (``mmengine batch``; see ``mmengine.batch.batch_classify``); returns ``BatchSummary``."""
    from .batch import batch_classify as _batch

    return _batch(model, source, out, **kw)


def benchmark(model, **kw) -> dict:
    """Throughput/latency of an engine file on every available backend (see ``mmengine.bench``)."""
    from .bench import benchmark_engine

    return benchmark_engine(model, **kw)


def load_engine(path, backend: str = EngineConfig.backend, **options):
    """``Engine.load``."""
    from .runtime.engine import Engine

    return Engine.load(path, backend, **options)


__all__ = ["resolve_data", "load_features", "train", "evaluate", "experiment", "build_engine",
           "classify", "batch_classify", "benchmark", "load_engine"]
