"""Availability of optional parts, in one place.

Nothing here imports a GPU-only module at import time: each probe runs on first use and is
cached. ``require(name)`` returns the module or raises ``OptionalDependencyError`` naming the
extra that provides it.
"""
from __future__ import annotations

import functools
import importlib
import importlib.util
from types import ModuleType

from .errors import OptionalDependencyError

#: optional part -> (module to import, pip extra that installs it)
OPTIONAL = {
    "torch": ("torch", "train"),
    "dali": ("nvidia.dali", "dali"),
    "triton": ("triton", "triton"),
    "onnx": ("onnx", "onnx"),
    "onnxruntime": ("onnxruntime", "onnx"),
    "tensorrt": ("tensorrt", "tensorrt"),
    "music21": ("music21", "data"),
    "tinysoundfont": ("tinysoundfont", "data"),
    "pretty_midi": ("pretty_midi", "data"),
    "librosa": ("librosa", "dev"),
}


def install_hint(extra: str) -> str:
    return f"pip install 'mmengine-music[{extra}]'"


@functools.lru_cache(maxsize=None)
def has(name: str) -> bool:
    """True if the optional part ``name`` (a key of ``OPTIONAL``) can be imported."""
    module, _ = OPTIONAL[name]
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def require(name: str) -> ModuleType:
    """Import and return the optional module ``name`` or raise a helpful error."""
    module, extra = OPTIONAL[name]
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise OptionalDependencyError(
            f"{name} is not installed ({exc}); install it with: {install_hint(extra)}"
        ) from exc


@functools.lru_cache(maxsize=None)
def native_extension():
    """The compiled extension ``mmengine._C``, or None when it was not built."""
    try:
        from . import _C  # type: ignore[attr-defined]
    except ImportError:
        return None
    return _C


def require_native_extension():
    mod = native_extension()
    if mod is None:
        raise OptionalDependencyError(
            "the C++ extension mmengine._C is not built; run: pip install -e . "
            "(needs a C++17 compiler; see README)"
        )
    return mod


#: device nodes of an NVIDIA driver (Linux; /dev/dxg: WSL): without one no CUDA device exists
_GPU_NODES = ("/dev/nvidiactl", "/dev/nvidia0", "/dev/dxg")


def cuda_available() -> bool:
    """True when torch sees a CUDA device (probed lazily, never at import). Without an NVIDIA
    driver's device node it answers False without importing torch (an import costs a
    ``classify`` call about a second and 150 MB)."""
    import os

    if not any(os.path.exists(p) for p in _GPU_NODES):
        return False
    try:
        import torch
    except ImportError:
        return False
    return bool(torch.cuda.is_available())
