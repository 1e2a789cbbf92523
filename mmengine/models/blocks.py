"""The generic torch blocks ``FusionLSTM`` assembles: input normalisation, the strided stem, the recurrent head.

- ``compute_norm_stats`` / ``FeatureNorm``: the training split's per-row mean and standard
  deviation of each time-series modality, held as buffers (``norm.mfcc_mean``, ...) so that
  they travel in the checkpoint (``MelCNN`` uses them too);
- ``conv_stem`` / ``stem_frames``: the stride-2 convolution stem of the first ("strided")
  design;
- ``SequenceClassifier``: recurrent stack (``CELLS``) + pooling (``POOLINGS``) + dropout +
  linear head, the part an inference engine runs natively (``classifier.rnn``,
  ``classifier.head``); ``NoRecurrence`` is ``cell="none"``.

Kept apart from ``fusion.py`` (how the model fuses its modalities, masks and augments them)
because none of them knows about modalities; the music-specific streams (spectral flux, the
dilated stem, the pitch-class head) are in ``streams.py``. ``mmengine.models.fusion``
re-exports every name, and the attribute names ``FusionLSTM`` gives them (hence the
state-dict keys) are unchanged.
"""
from __future__ import annotations

from typing import Dict, Mapping, Optional, Tuple

import numpy as np
import torch
from torch import nn

from ..config import ModelConfig


class Classifier(nn.Module):
    """Base of the trainable torch models (``FusionLSTM``, ``MelCNN``): a module whose forward
    gives (B, C) logits and whose ``multilabel`` attribute says how to turn them into scores."""

    multilabel: bool = False

    @torch.no_grad()
    def predict_proba(self, batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """(B, C) softmax (single-label) or sigmoid (multi-label) scores, in eval mode (the
        module's training flag is restored afterwards)."""
        was = self.training
        self.eval()
        try:
            logits = self(batch)
        finally:
            self.train(was)
        return torch.sigmoid(logits) if self.multilabel else torch.softmax(logits, dim=1)


class NoRecurrence(nn.Module):
    """``cell="none"``: the fused per-frame features go straight to pooling (the dilated stems
    make this a temporal CNN on exactly the fusion model's inputs: the feature-matched CNN
    baseline). Same call signature as ``nn.LSTM``."""

    def __init__(self, input_size: int, **_):
        super().__init__()
        self.output_size = input_size

    def forward(self, x: torch.Tensor):
        return x, None


CELLS = {"lstm": nn.LSTM, "gru": nn.GRU, "rnn": nn.RNN, "none": NoRecurrence}
POOLINGS = ("last", "mean", "meanmax")
STD_FLOOR = 1e-6


def compute_norm_stats(fs) -> Dict[str, np.ndarray]:
    """Per-feature mean/std over all frames of the clips of ``fs`` (pass the train subset).

    Args:
        fs: a ``FeatureSet`` (``mfcc`` (N, n_mfcc, T), ``logmel`` (N, n_mels, T), optional
            ``symbolic`` (N, S, T) with ``symbolic_mask`` (N,)).
    Returns:
        ``{"mfcc_mean", "mfcc_std", "mel_mean", "mel_std"[, "symbolic_mean", "symbolic_std"]}``,
        each ``(features,)`` float32.
    """
    def stats(x: np.ndarray, chunk: int = 64) -> Tuple[np.ndarray, np.ndarray]:
        # two passes over chunks of clips, float64 accumulators (no float64 copy of x)
        count = x.shape[0] * x.shape[2]
        total = np.zeros(x.shape[1])
        for s in range(0, x.shape[0], chunk):
            total += x[s:s + chunk].sum(axis=(0, 2), dtype=np.float64)
        mean = total / count
        sq = np.zeros(x.shape[1])
        for s in range(0, x.shape[0], chunk):
            d = x[s:s + chunk].astype(np.float64) - mean[:, None]
            sq += (d * d).sum(axis=(0, 2))
        std = np.sqrt(sq / count)
        std = np.where(std < STD_FLOOR, 1.0, std)
        return mean.astype(np.float32), std.astype(np.float32)

    out: Dict[str, np.ndarray] = {}
    out["mfcc_mean"], out["mfcc_std"] = stats(fs.mfcc)
    out["mel_mean"], out["mel_std"] = stats(fs.logmel)
    if fs.symbolic is not None:
        sym = fs.symbolic
        if fs.symbolic_mask is not None and fs.symbolic_mask.any():
            sym = sym[np.asarray(fs.symbolic_mask, bool)]
        out["symbolic_mean"], out["symbolic_std"] = stats(sym)
    return out


class FeatureNorm(nn.Module):
    """Holds the training-split mean/std of each time-series modality as buffers.

    ``forward(name, x)`` with ``x`` (B, F, T) returns ``(x - mean[:, None]) / std[:, None]``.
    """

    def __init__(self, sizes: Mapping[str, int]):
        super().__init__()
        self.sizes = dict(sizes)
        for name, n in self.sizes.items():
            self.register_buffer(f"{name}_mean", torch.zeros(n))
            self.register_buffer(f"{name}_std", torch.ones(n))

    def set_stats(self, stats: Mapping[str, np.ndarray]) -> None:
        for name, n in self.sizes.items():
            for kind in ("mean", "std"):
                key = f"{name}_{kind}"
                if key not in stats:
                    raise KeyError(f"normalisation statistics lack {key!r}")
                v = torch.as_tensor(np.asarray(stats[key], dtype=np.float32))
                if v.shape != (n,):
                    raise ValueError(f"{key} has shape {tuple(v.shape)}, expected ({n},)")
                getattr(self, key).copy_(v)

    def stats(self) -> Dict[str, np.ndarray]:
        return {k: v.detach().cpu().numpy().copy() for k, v in self.named_buffers()}

    def forward(self, name: str, x: torch.Tensor) -> torch.Tensor:
        mean = getattr(self, f"{name}_mean")
        std = getattr(self, f"{name}_std")
        return (x - mean[:, None]) / std[:, None]


def conv_stem(in_ch: int, out_ch: int, stages: int) -> nn.Sequential:
    """Conv1d stages over (B, in_ch, T): stage 1 kernel 5, later kernel 3, each stride 2 with
    BatchNorm and ReLU; output (B, out_ch, ceil(T / 2**stages)). ``stages=0``: a pointwise
    projection (kernel 1, stride 1)."""
    if stages == 0:
        return nn.Sequential(nn.Conv1d(in_ch, out_ch, 1), nn.BatchNorm1d(out_ch), nn.ReLU())
    layers = []
    for s in range(stages):
        k = 5 if s == 0 else 3
        layers += [nn.Conv1d(in_ch if s == 0 else out_ch, out_ch, k, stride=2, padding=k // 2),
                   nn.BatchNorm1d(out_ch), nn.ReLU()]
    return nn.Sequential(*layers)


def stem_frames(n_frames: int, stages: int) -> int:
    """Frames after ``stages`` stride-2 stages: ceil(T / 2**stages)."""
    for _ in range(stages):
        n_frames = (n_frames + 1) // 2
    return n_frames


class SequenceClassifier(nn.Module):
    """Recurrent stack + pooling + dropout + linear head: (B, T', D) → logits (B, C).

    ``rnn`` is a unidirectional, batch_first ``nn.LSTM`` / ``nn.GRU`` / ``nn.RNN`` (tanh) with
    zero initial state; ``pooling`` "last" takes the top layer's final hidden state, "mean" the
    mean of the top layer's outputs over all T' steps, "meanmax" the mean and the maximum
    (concatenated, 2H); ``late_dim`` clip-level features (``FusionLSTM.encode``) are
    concatenated to the pooled vector; ``head`` is ``nn.Linear(pooled_dim + late_dim, C)``.
    """

    def __init__(self, in_dim: int, n_classes: int, cfg: ModelConfig, late_dim: int = 0):
        super().__init__()
        if cfg.cell not in CELLS:
            raise ValueError(f"cell must be one of {tuple(CELLS)}, got {cfg.cell!r}")
        if cfg.pooling not in POOLINGS:
            raise ValueError(f"pooling must be one of {POOLINGS}, got {cfg.pooling!r}")
        kwargs = dict(input_size=in_dim, hidden_size=cfg.hidden_size, num_layers=cfg.num_layers,
                      batch_first=True,
                      dropout=cfg.rnn_dropout if cfg.num_layers > 1 else 0.0)
        if cfg.cell == "rnn":
            kwargs["nonlinearity"] = "tanh"
        self.cell = cfg.cell
        self.pooling = cfg.pooling
        self.late_dim = int(late_dim)
        self.rnn = CELLS[cfg.cell](**kwargs)
        self.dropout = nn.Dropout(cfg.dropout)
        width = in_dim if cfg.cell == "none" else cfg.hidden_size
        pooled = width * (2 if cfg.pooling == "meanmax" else 1)
        self.head = nn.Linear(pooled + self.late_dim, n_classes)

    @property
    def needs_sequence(self) -> bool:
        """True when pooling reads every step's output, not just the last."""
        return self.pooling != "last"

    def pool(self, y: torch.Tensor) -> torch.Tensor:
        """(B, T', H) top-layer outputs → (B, H) or (B, 2H) for "meanmax"."""
        if self.pooling == "last":
            return y[:, -1]
        if self.pooling == "mean":
            return y.mean(dim=1)
        return torch.cat([y.mean(dim=1), y.amax(dim=1)], dim=1)

    def head_logits(self, pooled: torch.Tensor, late: Optional[torch.Tensor] = None
                    ) -> torch.Tensor:
        """Logits from the pooled vector (after dropout) and the late features (None when
        ``late_dim`` is 0; they get no dropout here: the text has its own modality dropout,
        and a key score dropped half the time is noise, not regularisation)."""
        pooled = self.dropout(pooled)
        if self.late_dim:
            pooled = torch.cat([pooled, late.to(pooled.dtype)], dim=1)
        return self.head(pooled)

    def forward(self, x: torch.Tensor, late: Optional[torch.Tensor] = None) -> torch.Tensor:
        y, _ = self.rnn(x)
        return self.head_logits(self.pool(y), late)
