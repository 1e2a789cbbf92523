"""Inference: engine files, the backend registry, ``Engine`` and ``classify``.

Importing this package imports neither torch nor any backend: each backend module is imported
when an engine is loaded or built with it (``registry.BackendInfo.load_module``).
"""
from __future__ import annotations

from .engine import (Engine, ErrorEntry, Prediction, classify, format_results, load_engine,
                     results_to_json)
from .engine_file import EngineFile, read_engine_file, read_header, write_engine_file
from .registry import (BACKENDS, available_backends, get_backend, preference_order,
                       select_backend)


def build_engine(run_or_checkpoint, out, *, backend: str = "native", dtype: str = "fp32",
                 **options):
    """``mmengine build``: see ``mmengine.export.build_engine``."""
    from ..export import build_engine as _build

    return _build(run_or_checkpoint, out, backend=backend, dtype=dtype, **options)


__all__ = ["BACKENDS", "Engine", "EngineFile", "ErrorEntry", "Prediction", "available_backends",
           "build_engine", "classify", "format_results", "get_backend", "load_engine", "preference_order",
           "read_engine_file", "read_header", "results_to_json", "select_backend",
           "write_engine_file"]
