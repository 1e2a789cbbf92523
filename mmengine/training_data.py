"""The data side of training: the checks a feature set must pass (``validate_feature_set``),
the mini-batches the loop cuts from in-memory tensors (``_index``, ``random_crops``, the stage-1
views ``stage_batch`` / ``stage_rows``, ``_labels_tensor``, ``_frame_rate``), and prediction
over a batch dict (``predict_logits``, ``decide``), which evaluation uses too. Separate from the
loop (``mmengine.training``, which re-exports these names) so that the loop reads as one
function; nothing here keeps state between calls.
"""
from __future__ import annotations

from typing import Dict, Optional, Tuple

import numpy as np
import torch
from torch import nn

from .config import MODALITIES
from .errors import DataError
from .models.fusion import EXTRA_KEYS, batch_keys


# ------------------------------------------------------------------ data checks
def validate_feature_set(fs, splits: Tuple[str, ...] = ("train", "val")) -> None:
    """Raise ``DataError`` for data a model cannot be trained/evaluated on."""
    n = len(fs.ids)
    if n == 0:
        raise DataError("the feature set is empty (0 clips)")
    C = len(fs.label_names)
    checks = [("mfcc", fs.mfcc, 3), ("logmel", fs.logmel, 3)]
    for name, a, nd in checks:
        if a.ndim != nd or a.shape[0] != n:
            raise DataError(f"{name} has shape {a.shape}; expected {nd} dims with {n} rows")
    if fs.mfcc.shape[2] != fs.logmel.shape[2]:
        raise DataError(f"mfcc has {fs.mfcc.shape[2]} frames but logmel {fs.logmel.shape[2]}")
    for name in ("text", "symbolic"):
        a = getattr(fs, name)
        if a is not None and a.shape[0] != n:
            raise DataError(f"{name} has {a.shape[0]} rows, expected {n}")
    if fs.symbolic is not None and fs.symbolic.shape[2] != fs.logmel.shape[2]:
        raise DataError("symbolic features and audio have different frame counts")
    labels = np.asarray(fs.labels)
    if labels.shape[0] != n or len(fs.split) != n:
        raise DataError(f"labels ({labels.shape[0]}) / split ({len(fs.split)}) rows != {n}")
    if labels.ndim == 2:
        if labels.shape[1] != C:
            raise DataError(f"multi-hot labels have {labels.shape[1]} columns for {C} names")
    else:
        if C < 2:
            raise DataError(f"need at least 2 classes, got {C} ({fs.label_names})")
        bad = (labels < 0) | (labels >= C)
        if bad.any():
            raise DataError(f"unknown label index {sorted(set(labels[bad].tolist()))[:5]}; "
                            f"{C} classes are named")
    chroma = getattr(fs, "chroma", None)
    if chroma is not None and (chroma.ndim != 3 or chroma.shape[0] != n
                               or chroma.shape[2] != fs.logmel.shape[2]):
        raise DataError(f"chroma has shape {chroma.shape}; expected ({n}, bins, "
                        f"{fs.logmel.shape[2]})")
    for name in ("mfcc", "logmel", "chroma"):
        if getattr(fs, name, None) is not None and not np.isfinite(getattr(fs, name)).all():
            raise DataError(f"{name} holds NaN or Inf values")
    for s in splits:
        rows = np.flatnonzero(np.asarray(fs.split) == s)
        if len(rows) == 0:
            raise DataError(f"the {s!r} split is empty")
    train_rows = np.asarray(fs.split) == "train"
    if "train" in splits:
        seen = (labels[train_rows].sum(0) > 0).sum() if labels.ndim == 2 else \
            len(np.unique(labels[train_rows]))
        if seen < 2 and labels.ndim == 1:
            raise DataError(f"the training split has only one class "
                            f"({fs.label_names[int(labels[train_rows][0])]!r})")
        if seen < 1:
            raise DataError("no positive label in the training split")


# ------------------------------------------------------------------ batches
def _index(batch: Dict[str, torch.Tensor], idx: torch.Tensor) -> Dict[str, torch.Tensor]:
    return {k: v[idx] for k, v in batch.items()}


def stage_batch(batch: Dict[str, torch.Tensor], kept: Tuple[str, ...]
                ) -> Dict[str, torch.Tensor]:
    """``batch`` without the keys of the modalities outside ``kept`` (they are then missing
    for every clip, and their stems are not run)."""
    drop = {k for m in MODALITIES if m not in kept
            for k in batch_keys(m) + EXTRA_KEYS.get(m, ())}  # the chroma goes with the log-Mel
    return {k: v for k, v in batch.items() if k not in drop}


def stage_rows(batch: Dict[str, torch.Tensor], kept: Tuple[str, ...]) -> torch.Tensor:
    """Indices of the clips that have at least one modality of ``kept``."""
    n = next(iter(batch.values())).shape[0]
    has = torch.zeros(n, dtype=torch.bool)
    for m in kept:
        series, mask_key = batch_keys(m)
        if series not in batch:
            continue
        mask = batch.get(mask_key)
        has |= torch.ones(n, dtype=torch.bool) if mask is None else mask.reshape(n).bool()
    return torch.nonzero(has).reshape(-1)


def random_crops(batch: Dict[str, torch.Tensor], frames: int, gen: torch.Generator,
                 of: Optional[Tuple[int, torch.Tensor]] = None) -> Dict[str, torch.Tensor]:
    """Each clip's own random window of ``frames`` frames from every time series of ``batch``
    (keys whose last axis is the frame axis: mfcc, logmel, chroma, symbolic); other keys
    unchanged.
    Clips of at most ``frames`` frames are returned whole.

    ``of=(n, rows)``: ``batch`` holds the clips at positions ``rows`` of a batch of ``n``
    (a rank's share of a global batch): the windows are drawn for all ``n`` clips, so every
    rank advances ``gen`` alike and each clip gets the window it gets in one process."""
    T = batch["logmel"].shape[-1] if "logmel" in batch else batch["mfcc"].shape[-1]
    if frames <= 0 or frames >= T:
        return batch
    B = next(iter(batch.values())).shape[0]
    if of is None:
        start = torch.randint(0, T - frames + 1, (B,), generator=gen)
    else:
        start = torch.randint(0, T - frames + 1, (of[0],), generator=gen)[of[1]]
    idx = start[:, None] + torch.arange(frames)[None, :]  # (B, frames)
    out = dict(batch)
    for k in ("mfcc", "logmel", "chroma", "symbolic"):
        if k in batch:
            v = batch[k]
            out[k] = torch.gather(v, 2, idx[:, None, :].expand(-1, v.shape[1], -1))
    return out


@torch.no_grad()
def predict_logits(model: nn.Module, batch: Dict[str, torch.Tensor],
                   batch_size: int = 256) -> torch.Tensor:
    """Logits (N, C) of ``model`` in eval mode over a batch dict, in chunks."""
    was = model.training
    model.eval()
    n = next(iter(batch.values())).shape[0]
    try:
        out = [model(_index(batch, torch.arange(s, min(n, s + batch_size))))
               for s in range(0, n, batch_size)]
    finally:
        model.train(was)
    return torch.cat(out)


def decide(logits: torch.Tensor, multilabel: bool) -> np.ndarray:
    """Predictions: argmax (N,), or (N, C) 0/1 with sigmoid > 0.5 for multi-label."""
    if multilabel:
        return (logits > 0).to(torch.int64).numpy()
    return logits.argmax(dim=1).numpy()


def _labels_tensor(labels: np.ndarray, multilabel: bool) -> torch.Tensor:
    t = torch.from_numpy(np.ascontiguousarray(labels))
    return t.float() if multilabel else t.long()


def _frame_rate(frontend_config) -> float:
    from .config import FrontendConfig

    cfg = frontend_config if frontend_config is not None else FrontendConfig()
    return cfg.sample_rate / cfg.hop_length
