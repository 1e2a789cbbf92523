"""The settings of a training run turned into its parts: the loss (``loss_fn``, with
``class_weights``), the learning rate of every step (``lr_at``: constant, or warm-up then
cosine), the two-stage plan (``stage_plan``), the checks of ``TrainConfig`` that the loop needs
(``_check_train_config``) and the optimizer (``make_optimizer``). Separate from the loop
(``mmengine.training``, which re-exports these names): each is a pure function of the settings
(and the training labels), read and tested without running an epoch.
"""
from __future__ import annotations

import math
from typing import Optional, Tuple

import numpy as np
import torch
from torch import nn

from .config import MODALITIES, TrainConfig


# ------------------------------------------------------------------ loss, schedule, optimizer
def loss_fn(multilabel: bool, weight: Optional[torch.Tensor] = None) -> nn.Module:
    """BCE-with-logits (multi-label) or cross-entropy, optionally with class weights."""
    if multilabel:
        return nn.BCEWithLogitsLoss()
    return nn.CrossEntropyLoss(weight=weight)


def class_weights(labels: np.ndarray, n_classes: int) -> torch.Tensor:
    """Inverse-frequency weights ``n / (C · count_c)`` of single-label training labels (a class
    absent from the training split gets weight 0)."""
    counts = np.bincount(np.asarray(labels, dtype=np.int64), minlength=n_classes).astype(float)
    w = np.where(counts > 0, counts.sum() / (n_classes * np.maximum(counts, 1)), 0.0)
    return torch.tensor(w, dtype=torch.float32)


def lr_at(step: int, total: int, cfg: TrainConfig, peak: Optional[float] = None) -> float:
    """Learning rate of optimizer step ``step`` (0-based) of ``total``: constant, or linear
    warm-up for ``warmup_frac`` of the steps then cosine decay to 0; ``peak`` defaults to
    ``cfg.lr``."""
    peak = cfg.lr if peak is None else peak
    if cfg.schedule == "constant":
        return peak
    warm = max(1, int(round(cfg.warmup_frac * total)))
    if step < warm:
        return peak * (step + 1) / warm
    t = (step - warm) / max(1, total - warm)
    return peak * 0.5 * (1.0 + math.cos(math.pi * min(1.0, t)))


def stage_plan(model: nn.Module, cfg: TrainConfig) -> Tuple[int, Tuple[str, ...]]:
    """``(epochs of stage 1, modalities of stage 1)`` for ``TrainConfig.stage1_frac``, or
    ``(0, ())`` when the run has one stage: staging off, a model without the modalities of
    stage 1 or with nothing else, or fewer than 2 epochs."""
    mods = tuple(getattr(model, "modalities", ()))
    kept = tuple(m for m in mods if m in cfg.stage1_modalities)
    if (cfg.stage1_frac <= 0 or not kept or len(kept) == len(mods) or cfg.max_epochs < 2
            or not hasattr(model, "close_streams")):
        return 0, ()
    epochs = min(max(int(round(cfg.stage1_frac * cfg.max_epochs)), 1), cfg.max_epochs - 1)
    return epochs, kept


def _check_train_config(cfg: TrainConfig) -> None:
    if not 0.0 <= cfg.stage1_frac < 1.0:
        raise ValueError(f"stage1_frac must be in [0, 1), got {cfg.stage1_frac}")
    unknown = [m for m in cfg.stage1_modalities if m not in MODALITIES]
    if unknown:
        raise ValueError(f"unknown stage1_modalities {unknown}; valid: {MODALITIES}")
    if cfg.stage2_lr < 0:
        raise ValueError(f"stage2_lr must be >= 0, got {cfg.stage2_lr}")
    if cfg.stage1_frac > 0 and cfg.ema_decay > 0:
        raise ValueError("stage1_frac and ema_decay cannot be combined (the average would mix "
                         "the two stages' weights)")


def make_optimizer(params, cfg: TrainConfig) -> torch.optim.Optimizer:
    """Adam (L2 penalty ``weight_decay``) or AdamW (decoupled decay)."""
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    if cfg.optimizer == "adam":
        return torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    raise ValueError(f"optimizer must be 'adamw' or 'adam', got {cfg.optimizer!r}")
