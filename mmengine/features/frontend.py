"""Choosing an audio front end by name: the one front-end registry (``REGISTRY``).

Every front end computes the same features (:mod:`mmengine.features.reference` with
:class:`~mmengine.config.FrontendConfig` pinned) and has one method::

    fe = get_frontend("reference", cfg)
    fe.compute([y1, y2, ...])   # mono float waveforms (n_i,) at cfg.sample_rate
    -> [{"logmel": (n_mels, frames_i), "mfcc": (n_mfcc, frames_i)}, ...]   float32 numpy

Further methods are declared as capabilities on the class (``features.base.Frontend``:
``padded_tensors``, ``serial_compute``).

Names (``REGISTRY``, in this order): ``"native"`` (C++ kernels in ``mmengine._C``,
:mod:`mmengine.features.native_frontend`), ``"reference"`` (numpy), ``"torch"`` (the batched
``LogMelMFCC`` module), ``"dali"`` (NVIDIA DALI, CPU or GPU operators), ``"auto"`` (the first
entry marked ``auto`` that can run here and supports the config: ``"native"`` when the extension
was built with it, else ``"reference"``; the choice is logged). A front end named explicitly
that cannot run is an error (its class raises it when built), never a silent switch to another
one.

To add a front end: a class deriving from ``features.base.Frontend`` (its ``name``, its
capabilities, ``compute``; it raises a typed error when built where it cannot run) and one
``FrontendInfo`` entry in ``REGISTRY``.
"""
from __future__ import annotations

import importlib
import importlib.util
import logging
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Sequence

import numpy as np

from .._ext import has, install_hint
from ..config import FrontendConfig
from ..errors import OptionalDependencyError, UnknownBackendError
from . import reference
from .base import Frontend, check_waveforms, length_groups  # noqa: F401 (re-exported)

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class FrontendInfo:
    """One front end: what it is, how it is built, whether it can run here.

    Attributes:
        name: registry key (the class's ``name``).
        description: one line for listings.
        cls: ``"module:Class"`` of its class, imported only when it is built (the class takes
            ``(cfg, **keywords)`` and raises a typed error where it cannot run).
        probe: None when its dependencies are present here (never probes a device), else why
            not and what fixes it.
        auto: ``"auto"`` may pick it (the first such entry, in registry order, that can run
            here and supports the config).
        supports: whether it computes the features of a (checked) config.
    """

    name: str
    description: str
    cls: str
    probe: Callable[[], Optional[str]]
    auto: bool = False
    supports: Callable[[FrontendConfig], bool] = lambda cfg: True

    def load_class(self) -> type:
        module, _, attr = self.cls.partition(":")
        return getattr(importlib.import_module(module), attr)


def has_torch() -> bool:
    """True if torch can be imported (checked without importing it)."""
    return importlib.util.find_spec("torch") is not None


def _probe_native() -> Optional[str]:
    from .native_frontend import UNAVAILABLE, available

    return None if available() else UNAVAILABLE


def _native_supports(cfg: FrontendConfig) -> bool:
    from .native_frontend import supports

    return supports(cfg)


def _probe_torch() -> Optional[str]:
    return None if has_torch() else "the 'torch' front end needs torch: pip install torch"


def _probe_dali() -> Optional[str]:
    return None if has("dali") else f"NVIDIA DALI is not installed: {install_hint('dali')}"


REGISTRY: Dict[str, FrontendInfo] = {
    "native": FrontendInfo(
        "native", "C++ kernels from mmengine._C (CPU, AVX-512/AVX2)",
        "mmengine.features.native_frontend:NativeFrontend", _probe_native, auto=True,
        supports=_native_supports),
    "reference": FrontendInfo(
        "reference", "numpy (float32, or float64 with dtype=np.float64)",
        "mmengine.features.frontend:ReferenceFrontend", lambda: None, auto=True),
    "torch": FrontendInfo(
        "torch", "the batched torch LogMelMFCC module (CPU or CUDA)",
        "mmengine.features.frontend:TorchFrontend", _probe_torch),
    "dali": FrontendInfo(
        "dali", "NVIDIA DALI (CPU or GPU operators)", "mmengine.features.dali:DaliFrontend",
        _probe_dali, supports=lambda cfg: not cfg.chroma_bins),
}

#: the front-end names, in registry order
FRONTENDS = tuple(REGISTRY)


def auto_frontend(cfg: FrontendConfig = FrontendConfig()) -> str:
    """What "auto" picks for ``cfg``: the first ``auto`` entry of ``REGISTRY`` that can run here
    and supports ``cfg``, i.e. the native front end when built and it supports ``cfg`` (it
    matches the float64 reference within ~1e-5 dB on broadband audio, see
    tests/test_frontend_native.py), else the reference."""
    return next(info.name for info in REGISTRY.values()
                if info.auto and info.probe() is None and info.supports(cfg))


class ReferenceFrontend(Frontend):
    """The numpy reference (float32 unless ``dtype=np.float64``); waveforms of equal length
    run as one batch of at most ``batch_size``."""

    name = "reference"

    def __init__(self, cfg: FrontendConfig = FrontendConfig(), *, dtype=np.float32,
                 batch_size: int = 16):
        self.cfg = reference.check_config(cfg)
        self.dtype = dtype
        self.batch_size = int(batch_size)

    def compute(self, waveforms: Sequence[np.ndarray]) -> List[Dict[str, np.ndarray]]:
        """Features of each waveform ``(n_i,)``: ``[{"logmel": (n_mels, T_i), "mfcc": (n_mfcc,
        T_i)}]`` (+ ``"chroma": (chroma_bins, T_i)`` when the config has the pitch stream)."""
        waves = check_waveforms(waveforms, self.dtype)
        out: List[Dict[str, np.ndarray]] = [{} for _ in waves]
        for rows in length_groups(waves, self.batch_size):
            f = reference.compute_features(np.stack([waves[i] for i in rows]), self.cfg,
                                           dtype=self.dtype)
            for j, i in enumerate(rows):
                out[i] = {key: value[j] for key, value in f.items()}
        return out


class TorchFrontend(Frontend):
    """The torch ``LogMelMFCC`` module; waveforms of equal length run as one batch.

    Args:
        cfg: front-end settings.
        device: torch device ("cpu", "cuda", ...).
        batch_size: most waveforms per module call.

    Raises:
        OptionalDependencyError: torch is not installed.
    """

    name = "torch"

    def __init__(self, cfg: FrontendConfig = FrontendConfig(), *, device: str = "cpu",
                 batch_size: int = 16):
        why = _probe_torch()
        if why:
            raise OptionalDependencyError(why)
        import torch

        self.cfg = reference.check_config(cfg)
        self.device = torch.device(device)
        self.batch_size = int(batch_size)
        self.module = reference.LogMelMFCC(cfg).to(self.device).eval()

    def compute(self, waveforms: Sequence[np.ndarray]) -> List[Dict[str, np.ndarray]]:
        """Features of each waveform ``(n_i,)``: ``[{"logmel": (n_mels, T_i), "mfcc": (n_mfcc,
        T_i)}]`` (+ ``"chroma": (chroma_bins, T_i)`` when the config has the pitch stream)."""
        import torch

        waves = check_waveforms(waveforms)
        out: List[Dict[str, np.ndarray]] = [{} for _ in waves]
        with torch.no_grad():
            for rows in length_groups(waves, self.batch_size):
                batch = torch.from_numpy(np.stack([waves[i] for i in rows])).to(self.device)
                lm, mf = self.module(batch)
                lm, mf = lm.cpu().numpy(), mf.cpu().numpy()
                ch = self.module.chroma(batch).cpu().numpy() if self.cfg.chroma_bins else None
                for j, i in enumerate(rows):
                    out[i] = {"logmel": lm[j], "mfcc": mf[j]}
                    if ch is not None:
                        out[i]["chroma"] = ch[j]
        return out


def available_frontends() -> List[str]:
    """Front ends whose dependencies import here, in registry order (never probes a device)."""
    return [name for name, info in REGISTRY.items() if info.probe() is None]


def get_frontend(name: str = "auto", cfg: FrontendConfig = FrontendConfig(), **kw):
    """The front end ``name`` built with ``cfg`` and front-end specific keywords ``kw``.

    Args:
        name: a key of ``REGISTRY`` ("native", "reference", "torch", "dali") or "auto" (see
            :func:`auto_frontend`).
        cfg: front-end settings (checked here).
        kw: ``num_threads``, ``audio_cfg``, ``decode_workers`` (native); ``dtype``, ``batch_size`` (reference); ``device``, ``batch_size`` (torch); ``device``,
            ``batch_size``, ``num_threads``, ``resample_quality`` (dali).

    Returns:
        a ``features.base.Frontend``: ``.name``, ``.compute(waveforms) -> list[dict]`` and the
        capabilities it declares.

    Raises:
        UnknownBackendError: ``name`` is not a front end (the message lists the valid names).
        OptionalDependencyError: the front end's package is not installed.
        BackendUnavailableError: the native front end is not built.
    """
    if name == "auto":
        name = auto_frontend(cfg)
        log.info("front end 'auto' -> %r", name)
    reference.check_config(cfg)
    if name not in REGISTRY:
        raise UnknownBackendError(f"unknown front end {name!r}; valid: {', '.join(FRONTENDS)}, "
                                  "auto")
    return REGISTRY[name].load_class()(cfg, **kw)
