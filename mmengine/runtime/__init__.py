"""Inference: engine files, the backend registry, ``Engine`` and ``classify`` (engines are
built by ``mmengine.export``, above this package).

Importing this package imports neither torch nor any backend: each backend module is imported
when an engine is loaded or built with it (``registry.BackendInfo.load_module``).
"""
from __future__ import annotations

from .engine import (Engine, ErrorEntry, Prediction, classify, format_results, load_engine,
                     results_to_json)
from .engine_file import EngineFile, read_engine_file, read_header, write_engine_file
from .registry import (BACKENDS, available_backends, get_backend, preference_order,
                       select_backend)


__all__ = ["BACKENDS", "Engine", "EngineFile", "ErrorEntry", "Prediction", "available_backends",
           "classify", "format_results", "get_backend", "load_engine", "preference_order",
           "read_engine_file", "read_header", "results_to_json", "select_backend",
           "write_engine_file"]
