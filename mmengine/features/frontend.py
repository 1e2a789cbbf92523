"""Choosing an audio front end by name.

Every front end computes the same features (:mod:`mmengine.features.reference` with
:class:`~mmengine.config.FrontendConfig` pinned) and has one method::

    fe = get_frontend("reference", cfg)
    fe.compute([y1, y2, ...])   # mono float waveforms (n_i,) at cfg.sample_rate
    -> [{"logmel": (n_mels, frames_i), "mfcc": (n_mfcc, frames_i)}, ...]   float32 numpy

Names: ``"native"`` (C++ kernels in ``mmengine._C``, :mod:`mmengine.features.native_frontend`),
``"reference"`` (numpy), ``"torch"`` (the batched ``LogMelMFCC`` module), ``"dali"`` (NVIDIA
DALI, CPU or GPU operators), ``"auto"`` (= ``"native"`` when the extension was built with it,
else ``"reference"``; the choice is logged). A front end named explicitly that cannot run is an
error, never a silent switch to another one.
"""
from __future__ import annotations

import importlib.util
import logging
from typing import Dict, List, Sequence

import numpy as np

from .._ext import has
from ..config import FrontendConfig
from ..errors import OptionalDependencyError, UnknownBackendError
from . import reference
from .base import check_waveforms, length_groups  # noqa: F401 (re-exported)

log = logging.getLogger(__name__)

FRONTENDS = ("native", "reference", "torch", "dali")


def auto_frontend(cfg: FrontendConfig = FrontendConfig()) -> str:
    """What "auto" picks for ``cfg``: the native front end when built and it supports ``cfg``
    (it matches the float64 reference within ~1e-5 dB on broadband audio, see
    tests/test_frontend_native.py), else the reference."""
    from .native_frontend import available, supports

    return "native" if available() and supports(cfg) else "reference"


class ReferenceFrontend:
    """The numpy reference (float32 unless ``dtype=np.float64``); waveforms of equal length
    run as one batch of at most ``batch_size``."""

    name = "reference"

    def __init__(self, cfg: FrontendConfig = FrontendConfig(), *, dtype=np.float32,
                 batch_size: int = 16):
        self.cfg = reference.check_config(cfg)
        self.dtype = dtype
        self.batch_size = int(batch_size)

    def compute(self, waveforms: Sequence[np.ndarray]) -> List[Dict[str, np.ndarray]]:
        """Features of each waveform ``(n_i,)``: ``[{"logmel": (n_mels, T_i), "mfcc": (n_mfcc, T_i)}]``."""
        waves = check_waveforms(waveforms, self.dtype)
        out: List[Dict[str, np.ndarray]] = [{} for _ in waves]
        for rows in length_groups(waves, self.batch_size):
            f = reference.compute_features(np.stack([waves[i] for i in rows]), self.cfg,
                                           dtype=self.dtype)
            for j, i in enumerate(rows):
                out[i] = {"logmel": f["logmel"][j], "mfcc": f["mfcc"][j]}
        return out


class TorchFrontend:
    """The torch ``LogMelMFCC`` module; waveforms of equal length run as one batch.

    Args:
        cfg: front-end settings.
        device: torch device ("cpu", "cuda", ...).
        batch_size: most waveforms per module call.
    """

    name = "torch"

    def __init__(self, cfg: FrontendConfig = FrontendConfig(), *, device: str = "cpu",
                 batch_size: int = 16):
        import torch

        self.cfg = cfg
        self.device = torch.device(device)
        self.batch_size = int(batch_size)
        self.module = reference.LogMelMFCC(cfg).to(self.device).eval()

    def compute(self, waveforms: Sequence[np.ndarray]) -> List[Dict[str, np.ndarray]]:
        """Features of each waveform ``(n_i,)``: ``[{"logmel": (n_mels, T_i), "mfcc": (n_mfcc, T_i)}]``."""
        import torch

        waves = check_waveforms(waveforms)
        out: List[Dict[str, np.ndarray]] = [{} for _ in waves]
        with torch.no_grad():
            for rows in length_groups(waves, self.batch_size):
                batch = torch.from_numpy(np.stack([waves[i] for i in rows])).to(self.device)
                lm, mf = self.module(batch)
                lm, mf = lm.cpu().numpy(), mf.cpu().numpy()
                for j, i in enumerate(rows):
                    out[i] = {"logmel": lm[j], "mfcc": mf[j]}
        return out


def has_torch() -> bool:
    """True if torch can be imported (checked without importing it)."""
    return importlib.util.find_spec("torch") is not None


def available_frontends() -> List[str]:
    """Front ends whose dependencies import here (never probes a device)."""
    from .native_frontend import available

    found = (["native"] if available() else []) + ["reference"]
    if has_torch():
        found.append("torch")
    if has("dali"):
        found.append("dali")
    return found


def get_frontend(name: str = "auto", cfg: FrontendConfig = FrontendConfig(), **kw):
    """The front end ``name`` built with ``cfg`` and front-end specific keywords ``kw``.

    Args:
        name: "native", "reference", "torch", "dali" or "auto" (see :func:`auto_frontend`).
        cfg: front-end settings (checked here).
        kw: ``num_threads``, ``audio_cfg``, ``decode_workers`` (native); ``dtype``, ``batch_size`` (reference); ``device``, ``batch_size`` (torch); ``device``,
            ``batch_size``, ``num_threads``, ``resample_quality`` (dali).

    Returns:
        an object with ``.name`` and ``.compute(waveforms) -> list[dict]``.

    Raises:
        UnknownBackendError: ``name`` is not a front end (the message lists the valid names).
        OptionalDependencyError: the front end's package is not installed.
    """
    if name == "auto":
        name = auto_frontend(cfg)
        log.info("front end 'auto' -> %r", name)
    reference.check_config(cfg)
    if name == "native":
        from .native_frontend import NativeFrontend

        return NativeFrontend(cfg, **kw)
    if name == "reference":
        return ReferenceFrontend(cfg, **kw)
    if name == "torch":
        if not has_torch():
            raise OptionalDependencyError("the 'torch' front end needs torch: pip install torch")
        return TorchFrontend(cfg, **kw)
    if name == "dali":
        from .dali import DaliFrontend

        return DaliFrontend(cfg, **kw)
    raise UnknownBackendError(f"unknown front end {name!r}; valid: {', '.join(FRONTENDS)}, auto")
