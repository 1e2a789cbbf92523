"""mmengine-music: multimodal music classification with fast inference engines.

Not to be confused with OpenMMLab's ``mmengine``: both install the import name ``mmengine``
and cannot share one environment.

The Python API mirrors the CLI (see ``mmengine.api``)::

    import mmengine
    run = mmengine.train("folk")                        # mmengine train --data folk
    mmengine.evaluate(run.out_dir)                      # mmengine evaluate runs/folk
    mmengine.build_engine(run.out_dir, "folk.mme")      # mmengine build runs/folk -o folk.mme
    eng = mmengine.Engine.load("folk.mme")              # picks the best backend, logs it
    eng.classify("tune.wav")                            # mmengine classify folk.mme tune.wav
    mmengine.batch_classify("folk.mme", "lib/", "o.jsonl")  # mmengine batch ... --out o.jsonl
    mmengine.benchmark("folk.mme")                      # mmengine bench folk.mme
"""
from __future__ import annotations

__version__ = "0.1.0"
PROJECT = "mmengine-music"

from .config import AudioConfig, FrontendConfig, SplitConfig, TextConfig  # noqa: E402

_API = {"train", "evaluate", "experiment", "build_engine", "classify", "batch_classify",
        "benchmark", "load_features", "load_engine"}


def __getattr__(name):  # lazy: ``import mmengine`` stays light (no torch, no GPU modules)
    if name in _API:
        from . import api

        return getattr(api, name)
    if name == "Engine":
        from .runtime.engine import Engine

        return Engine
    raise AttributeError(f"module 'mmengine' has no attribute {name!r}")


__all__ = ["__version__", "AudioConfig", "FrontendConfig", "SplitConfig", "TextConfig",
           "Engine", *sorted(_API)]
