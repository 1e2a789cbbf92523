"""Classification metrics in numpy (same numbers as scikit-learn with ``zero_division=0`` and
``labels=range(C)``: a class that is absent from both truth and predictions counts as 0 in
macro averages).

Single-label: ``y_true``, ``y_pred`` are (N,) integer class indices in [0, C).
Multi-label: (N, C) 0/1 indicator arrays; accuracy is exact-match (subset) accuracy, per-class
scores are computed column by column.
"""
from __future__ import annotations

from typing import Dict, Optional, Sequence, Tuple

import numpy as np

from .errors import DataError


def _safe_div(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    num = np.asarray(num, dtype=np.float64)
    den = np.asarray(den, dtype=np.float64)
    return np.divide(num, den, out=np.zeros_like(num), where=den > 0)


def check_labels(y_true, y_pred, n_classes: int,
                 multilabel: bool) -> Tuple[np.ndarray, np.ndarray]:
    """Validate and convert; raises ``DataError`` for empty, mismatched or unknown labels."""
    if n_classes < 1:
        raise DataError(f"n_classes must be >= 1, got {n_classes}")
    yt, yp = np.asarray(y_true), np.asarray(y_pred)
    if yt.shape[0] == 0:
        raise DataError("no examples to score (empty label array)")
    if yt.shape != yp.shape:
        raise DataError(f"y_true has shape {yt.shape} but y_pred has shape {yp.shape}")
    if multilabel:
        if yt.ndim != 2 or yt.shape[1] != n_classes:
            raise DataError(f"multi-label arrays must be (N, {n_classes}), got {yt.shape}")
        for name, a in (("y_true", yt), ("y_pred", yp)):
            if not np.isin(a, (0, 1)).all():
                raise DataError(f"multi-label {name} must hold only 0/1")
        return yt.astype(np.int64), yp.astype(np.int64)
    if yt.ndim != 1:
        raise DataError(f"single-label arrays must be (N,), got {yt.shape}")
    for name, a in (("y_true", yt), ("y_pred", yp)):
        if not np.issubdtype(a.dtype, np.integer):
            if not np.all(np.mod(a, 1) == 0):
                raise DataError(f"{name} must hold integer class indices")
        bad = (a < 0) | (a >= n_classes)
        if bad.any():
            raise DataError(f"{name} holds unknown label(s) {sorted(set(a[bad].tolist()))[:10]}"
                            f"; valid class indices are 0..{n_classes - 1}")
    return yt.astype(np.int64), yp.astype(np.int64)


def confusion_matrix(y_true, y_pred, n_classes: int) -> np.ndarray:
    """(C, C) int64 counts; row = true class, column = predicted class."""
    yt, yp = check_labels(y_true, y_pred, n_classes, multilabel=False)
    return np.bincount(yt * n_classes + yp, minlength=n_classes * n_classes).reshape(
        n_classes, n_classes)


def multilabel_confusion_matrix(y_true, y_pred) -> np.ndarray:
    """(C, 2, 2) per-class ``[[tn, fp], [fn, tp]]`` (scikit-learn's layout)."""
    yt, yp = check_labels(y_true, y_pred, np.asarray(y_true).shape[-1], multilabel=True)
    tp = (yt & yp).sum(0)
    fp = ((1 - yt) & yp).sum(0)
    fn = (yt & (1 - yp)).sum(0)
    tn = yt.shape[0] - tp - fp - fn
    return np.stack([np.stack([tn, fp], 1), np.stack([fn, tp], 1)], 1)


def _counts(y_true, y_pred, n_classes: int, multilabel: bool):
    if multilabel:
        mcm = multilabel_confusion_matrix(y_true, y_pred)
        return mcm[:, 1, 1], mcm[:, 0, 1], mcm[:, 1, 0]
    cm = confusion_matrix(y_true, y_pred, n_classes)
    tp = np.diag(cm)
    return tp, cm.sum(0) - tp, cm.sum(1) - tp


def precision_recall_f1(y_true, y_pred, n_classes: int, *, multilabel: bool = False):
    """Per-class precision, recall, F1 (each (C,) float64, 0 where undefined) and support (C,)
    (true examples per class)."""
    tp, fp, fn = _counts(y_true, y_pred, n_classes, multilabel)
    precision = _safe_div(tp, tp + fp)
    recall = _safe_div(tp, tp + fn)
    f1 = _safe_div(2 * tp, 2 * tp + fp + fn)
    return precision, recall, f1, (tp + fn).astype(np.int64)


def accuracy(y_true, y_pred, n_classes: Optional[int] = None, *, multilabel: bool = False) -> float:
    """Fraction of examples predicted exactly right."""
    yt, yp = np.asarray(y_true), np.asarray(y_pred)
    if n_classes is not None:
        yt, yp = check_labels(yt, yp, n_classes, multilabel)
    elif yt.shape != yp.shape or yt.shape[0] == 0:
        raise DataError(f"bad shapes {yt.shape} / {yp.shape}")
    eq = yt == yp
    return float((eq.all(axis=1) if multilabel else eq).mean())


def classification_metrics(y_true, y_pred, n_classes: int, *, multilabel: Optional[bool] = None,
                           label_names: Optional[Sequence[str]] = None) -> Dict:
    """All metrics in one plain-JSON dict.

    Returns keys ``n``, ``accuracy``, ``{macro,weighted,micro}_{precision,recall,f1}``,
    ``per_class`` (list of dicts with name, precision, recall, f1, support) and
    ``confusion_matrix`` ((C, C) list for single-label, (C, 2, 2) for multi-label).
    """
    yt = np.asarray(y_true)
    if multilabel is None:
        multilabel = yt.ndim == 2
    if multilabel:
        yt = (yt > 0.5).astype(np.int64) if yt.dtype.kind == "f" else yt
    yt, yp = check_labels(yt, y_pred, n_classes, multilabel)
    p, r, f, s = precision_recall_f1(yt, yp, n_classes, multilabel=multilabel)
    tp, fp, fn = _counts(yt, yp, n_classes, multilabel)
    w = _safe_div(s, s.sum()) if s.sum() > 0 else np.zeros_like(p)
    names = list(label_names) if label_names is not None else [str(i) for i in range(n_classes)]
    if len(names) != n_classes:
        raise DataError(f"{len(names)} label names for {n_classes} classes")
    out = {
        "n": int(yt.shape[0]),
        "accuracy": accuracy(yt, yp, multilabel=multilabel),
        "macro_precision": float(p.mean()), "macro_recall": float(r.mean()),
        "macro_f1": float(f.mean()),
        "weighted_precision": float((p * w).sum()), "weighted_recall": float((r * w).sum()),
        "weighted_f1": float((f * w).sum()),
        "micro_precision": float(_safe_div(tp.sum(), tp.sum() + fp.sum())),
        "micro_recall": float(_safe_div(tp.sum(), tp.sum() + fn.sum())),
        "micro_f1": float(_safe_div(2 * tp.sum(), 2 * tp.sum() + fp.sum() + fn.sum())),
        "per_class": [{"name": n, "precision": float(a), "recall": float(b), "f1": float(c),
                       "support": int(d)} for n, a, b, c, d in zip(names, p, r, f, s)],
        "confusion_matrix": (multilabel_confusion_matrix(yt, yp) if multilabel
                             else confusion_matrix(yt, yp, n_classes)).tolist(),
    }
    return out


def macro_f1(y_true, y_pred, n_classes: int, *, multilabel: bool = False) -> float:
    """Unweighted mean of per-class F1 over all C classes."""
    return float(precision_recall_f1(y_true, y_pred, n_classes, multilabel=multilabel)[2].mean())
