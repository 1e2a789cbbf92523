"""The built-in data sets, rendered offline from the music21 corpus (see ``build``)."""
from .build import TASKS, build_dataset, default_dir, default_manifest

__all__ = ["TASKS", "build_dataset", "default_dir", "default_manifest"]
