"""Models: the early-fusion recurrent classifier, its baselines, and the reference LSTM.

``build_model(cfg, dims)`` is the one factory (training and checkpoint loading use it).
"""
from __future__ import annotations

from typing import Mapping

from ..config import DIM_KEYS, OPTIONAL_DIMS, ModelConfig
from .baselines import MelCNN, PooledFeatures, SklearnBaseline
from .blocks import SequenceClassifier, compute_norm_stats
from .fusion import FusionLSTM, batch_from_arrays

ARCHS = {"fusion": FusionLSTM, "cnn": MelCNN}


def build_model(cfg: ModelConfig, dims: Mapping):
    """A fresh torch model for ``cfg.arch`` with sizes ``dims`` (keys ``DIM_KEYS``)."""
    if cfg.arch not in ARCHS:
        raise ValueError(f"arch must be one of {tuple(ARCHS)}, got {cfg.arch!r}")
    missing = [k for k in DIM_KEYS if k not in dims]
    if missing:
        raise ValueError(f"model dims lack {missing}")
    extra = {k: dims.get(k, v) for k, v in OPTIONAL_DIMS.items()} if cfg.arch == "fusion" else {}
    return ARCHS[cfg.arch](cfg, **{k: dims[k] for k in DIM_KEYS}, **extra)


def dims_of(fs) -> dict:
    """Model sizes of a ``FeatureSet``."""
    return dict(
        n_mfcc=int(fs.mfcc.shape[1]), n_mels=int(fs.logmel.shape[1]),
        text_dim=0 if fs.text is None else int(fs.text.shape[1]),
        symbolic_dim=0 if fs.symbolic is None else int(fs.symbolic.shape[1]),
        n_classes=len(fs.label_names), multilabel=bool(fs.labels.ndim == 2),
        n_chroma=0 if getattr(fs, "chroma", None) is None else int(fs.chroma.shape[1]),
    )


__all__ = ["ARCHS", "DIM_KEYS", "FusionLSTM", "MelCNN", "PooledFeatures", "SequenceClassifier",
           "SklearnBaseline", "batch_from_arrays", "build_model", "compute_norm_stats", "dims_of"]
