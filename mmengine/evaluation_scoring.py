"""Scoring a trained model: its metrics on a split with the labels mapped by name (``label_map``,
``score``), the per-clip predictions kept for comparisons (``_predictions``), the paired group
bootstrap of two models' macro-F1 (``paired_bootstrap``) and the contribution of each modality
(``modality_contributions``: dropped or permuted). Separate from the runs and reports
(``mmengine.evaluation``, which re-exports these names): these compute numbers and write
nothing.
"""
from __future__ import annotations

from typing import Dict, Optional, Sequence

import numpy as np
import torch

from .errors import DataError
from .metrics import classification_metrics
from .models import batch_from_arrays
from .models.fusion import EXTRA_KEYS, batch_keys
from .training_data import decide, predict_logits


# ------------------------------------------------------------------ scoring
def label_map(model_names: Sequence[str], data_names: Sequence[str],
              labels: np.ndarray) -> np.ndarray:
    """Re-express ``labels`` (indices into ``data_names``) as indices into ``model_names``.
    Raises ``DataError`` when a label used in ``labels`` is unknown to the model."""
    index = {n: i for i, n in enumerate(model_names)}
    labels = np.asarray(labels)
    used = (np.flatnonzero(labels.sum(0) > 0) if labels.ndim == 2
            else np.unique(labels)).tolist()
    unknown = [data_names[i] for i in used if data_names[i] not in index]
    if unknown:
        raise DataError(f"label(s) {unknown} are not among the model's classes {list(model_names)}")
    if list(model_names) == list(data_names):
        return labels
    if labels.ndim == 2:
        out = np.zeros((len(labels), len(model_names)), labels.dtype)
        for j, n in enumerate(data_names):
            if n in index:
                out[:, index[n]] = labels[:, j]
        return out
    return np.array([index[data_names[i]] for i in labels], dtype=np.int64)


def score(model, fs, label_names: Sequence[str], batch: Optional[dict] = None) -> dict:
    """Metrics of a torch ``model`` on all rows of ``fs`` (labels mapped by name)."""
    if len(fs.ids) == 0:
        raise DataError("nothing to evaluate: the split is empty")
    y = label_map(label_names, fs.label_names, fs.labels)
    logits = predict_logits(model, batch if batch is not None else batch_from_arrays(fs))
    C = len(label_names)
    return classification_metrics(y, decide(logits, model.multilabel), C,
                                  multilabel=model.multilabel, label_names=label_names)


def _predictions(model, fs, label_names: Sequence[str]) -> Optional[dict]:
    """Per-clip predictions (single-label only) for the paired bootstrap: ids, predicted
    class names and true class names."""
    if model.multilabel:
        return None
    pred = decide(predict_logits(model, batch_from_arrays(fs)), False)
    return {"ids": list(fs.ids), "pred": [label_names[i] for i in pred],
            "true": [fs.label_names[i] for i in np.asarray(fs.labels)]}


def paired_bootstrap(a_runs: Sequence[dict], b_runs: Sequence[dict], groups: Dict[str, str],
                     *, n: int = 2000, seed: int = 0, level: float = 0.95) -> dict:
    """Macro-F1 difference of model A minus model B on the test split, each the mean over its
    seeds' runs, with a percentile interval from resampling the test *groups* (tunes, hymns)
    with replacement, the same draw for both models (paired).

    Args:
        a_runs, b_runs: ``test_metrics.json["predictions"]`` of each seed of A and of B
            (same clips).
        groups: clip id -> group key.
    Returns:
        ``{"diff": observed difference, "low", "high", "n_groups", "n_boot"}``.
    """
    from sklearn.metrics import f1_score

    ids = list(a_runs[0]["ids"])
    for r in list(a_runs) + list(b_runs):
        if list(r["ids"]) != ids:
            raise ValueError("the runs were scored on different test clips")
    names = sorted({x for r in a_runs for x in r["true"]})
    idx = {k: i for i, k in enumerate(names)}
    true = np.array([idx[x] for x in a_runs[0]["true"]])
    preds_a = [np.array([idx.get(x, -1) for x in r["pred"]]) for r in a_runs]
    preds_b = [np.array([idx.get(x, -1) for x in r["pred"]]) for r in b_runs]
    keys = sorted({groups[i] for i in ids})
    members = {k: [] for k in keys}
    for j, i in enumerate(ids):
        members[groups[i]].append(j)
    members_list = [np.array(members[k]) for k in keys]

    def stat(rows) -> float:
        f = lambda ps: np.mean([f1_score(true[rows], p[rows], labels=range(len(names)),  # noqa: E731
                                         average="macro", zero_division=0) for p in ps])
        return float(f(preds_a) - f(preds_b))

    rng = np.random.default_rng(seed)
    diffs = []
    for _ in range(n):
        pick = rng.integers(0, len(keys), len(keys))
        diffs.append(stat(np.concatenate([members_list[k] for k in pick])))
    lo, hi = np.quantile(diffs, [(1 - level) / 2, 1 - (1 - level) / 2])
    return {"diff": stat(np.arange(len(ids))), "low": float(lo), "high": float(hi),
            "n_groups": len(keys), "n_boot": n}


def modality_contributions(model, fs, label_names: Sequence[str], *, repeats: int = 3,
                           seed: int = 0) -> Dict[str, dict]:
    """Loss in macro-F1 on ``fs`` when one modality is dropped (mask = missing) or permuted
    across clips (mean over ``repeats`` permutations). Positive = the modality helps."""
    full = batch_from_arrays(fs)
    base = score(model, fs, label_names, full)["macro_f1"]
    n = len(fs.ids)
    rng = np.random.default_rng(seed)
    out = {}
    for m in model.modalities:
        data_key, mask_key = batch_keys(m)
        if data_key not in full:
            continue
        dropped = dict(full)
        dropped[mask_key] = torch.zeros(n, dtype=torch.bool)
        drop_f1 = score(model, fs, label_names, dropped)["macro_f1"]
        perm_f1 = []
        for _ in range(repeats):
            p = torch.from_numpy(rng.permutation(n))
            permuted = dict(full)
            for key in (data_key, mask_key) + EXTRA_KEYS.get(m, ()):
                if key in full:  # the chroma travels with the log-Mel
                    permuted[key] = full[key][p]
            perm_f1.append(score(model, fs, label_names, permuted)["macro_f1"])
        out[m] = {"drop": base - drop_f1, "permute": base - float(np.mean(perm_f1)),
                  "macro_f1_full": base}
    return out
