"""The auxiliary per-stream losses of ``TrainConfig.aux_weight``: one head per stream of a
fusion model and its loss on the clips that have the stream. Used by the single-process loop
(``mmengine.training``) and by data-parallel training (``mmengine.distributed``), which sums
the pieces' normalisers over ranks."""
from __future__ import annotations

from typing import Dict, List, Optional, Tuple

import torch
from torch import nn


def aux_heads(model: nn.Module, n_classes: int, dropout: float = 0.5) -> nn.ModuleDict:
    """One dropout + linear head per stream of a fusion model (``model.stream_dims()``), for
    the auxiliary losses of ``TrainConfig.aux_weight``; empty for models without streams."""
    dims = model.stream_dims() if hasattr(model, "stream_dims") else {}
    return nn.ModuleDict({name: nn.Sequential(nn.Dropout(dropout), nn.Linear(dim, n_classes))
                          for name, dim in dims.items()})


def aux_terms(heads: nn.ModuleDict, parts: Dict[str, tuple], y: torch.Tensor,
              multilabel: bool, weight: Optional[torch.Tensor] = None
              ) -> List[Tuple[torch.Tensor, torch.Tensor]]:
    """``(summed loss, normaliser)`` of each stream head present in ``parts`` (the pieces of
    ``aux_loss``; data-parallel training sums the normalisers over ranks)."""
    terms = []
    for name, head in heads.items():
        if name not in parts:
            continue
        summary, mask = parts[name]
        logits = head(summary)
        if multilabel:
            per = nn.functional.binary_cross_entropy_with_logits(
                logits, y, reduction="none").mean(dim=1)
            norm = mask.sum()
        else:
            per = nn.functional.cross_entropy(logits, y, weight=weight, reduction="none")
            norm = (mask * (weight[y] if weight is not None else 1.0)).sum()
        terms.append(((per * mask).sum(), norm))
    return terms


def aux_loss(heads: nn.ModuleDict, parts: Dict[str, tuple], y: torch.Tensor,
             multilabel: bool, weight: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Mean over streams of each stream head's loss on the clips that have the stream (its
    mask after modality dropout); a stream no clip of the batch has is skipped. Cross-entropy
    with the class ``weight`` normalised like ``nn.CrossEntropyLoss``'s weighted mean, or
    BCE-with-logits averaged over classes (multi-label)."""
    losses = [num / norm for num, norm in aux_terms(heads, parts, y, multilabel, weight)
              if float(norm) > 0]
    if not losses:
        return y.new_zeros((), dtype=torch.float32)
    return torch.stack(losses).mean()
