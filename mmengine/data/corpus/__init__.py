"""The built-in data sets, rendered offline from the music21 corpus (see ``build``).

Names are imported lazily so that ``python -m mmengine.data.corpus.recipes`` and
``python -m mmengine.data.corpus.card`` run without importing the builder twice.
"""
from __future__ import annotations

__all__ = ["TASKS", "build_dataset", "default_dir", "default_manifest"]


def __getattr__(name: str):
    if name in __all__:
        from . import build

        return getattr(build, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
