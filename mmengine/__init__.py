"""mmengine-music: multimodal music classification with fast inference engines.

Not to be confused with OpenMMLab's ``mmengine``: both install the import name ``mmengine``
and cannot share one environment.
"""
from __future__ import annotations

__version__ = "0.1.0"
PROJECT = "mmengine-music"

from .config import AudioConfig, FrontendConfig, SplitConfig, TextConfig  # noqa: E402

__all__ = ["__version__", "AudioConfig", "FrontendConfig", "SplitConfig", "TextConfig"]
