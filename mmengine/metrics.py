"""Classification metrics: scikit-learn's (``labels=range(C)``, ``zero_division=0``: a class
absent from both truth and predictions counts as 0 in macro averages), behind one validation
step that turns empty, mismatched or unknown labels into ``DataError`` and one plain-JSON dict.

Single-label: ``y_true``, ``y_pred`` are (N,) integer class indices in [0, C).
Multi-label: (N, C) 0/1 indicator arrays; accuracy is exact-match (subset) accuracy, per-class
scores are computed column by column.
"""
from __future__ import annotations

from typing import Dict, Optional, Sequence, Tuple

import numpy as np

from .errors import DataError


def _safe_div(num, den) -> float:
    return float(num) / float(den) if den > 0 else 0.0


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
    from sklearn.metrics import confusion_matrix as sk_confusion

    yt, yp = check_labels(y_true, y_pred, n_classes, multilabel=False)
    return sk_confusion(yt, yp, labels=np.arange(n_classes)).astype(np.int64)


def multilabel_confusion_matrix(y_true, y_pred) -> np.ndarray:
    """(C, 2, 2) per-class ``[[tn, fp], [fn, tp]]`` (scikit-learn's layout)."""
    from sklearn.metrics import multilabel_confusion_matrix as sk_mcm

    yt, yp = check_labels(y_true, y_pred, np.asarray(y_true).shape[-1], multilabel=True)
    return sk_mcm(yt, yp).astype(np.int64)


def precision_recall_f1(y_true, y_pred, n_classes: int, *, multilabel: bool = False):
    """Per-class precision, recall, F1 (each (C,) float64, 0 where undefined) and support (C,)
    (true examples per class)."""
    from sklearn.metrics import precision_recall_fscore_support

    yt, yp = check_labels(y_true, y_pred, n_classes, multilabel)
    p, r, f, s = precision_recall_fscore_support(yt, yp, labels=np.arange(n_classes),
                                                 average=None, zero_division=0)
    return (p.astype(np.float64), r.astype(np.float64), f.astype(np.float64),
            s.astype(np.int64))


def accuracy(y_true, y_pred, n_classes: Optional[int] = None, *, multilabel: bool = False) -> float:
    """Fraction of examples predicted exactly right (subset accuracy for multi-label)."""
    from sklearn.metrics import accuracy_score

    yt, yp = np.asarray(y_true), np.asarray(y_pred)
    if n_classes is not None:
        yt, yp = check_labels(yt, yp, n_classes, multilabel)
    elif yt.shape != yp.shape or yt.shape[0] == 0:
        raise DataError(f"bad shapes {yt.shape} / {yp.shape}")
    return float(accuracy_score(yt, yp))


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
    cm = (multilabel_confusion_matrix(yt, yp) if multilabel
          else confusion_matrix(yt, yp, n_classes))
    if multilabel:
        tp, fp, fn = cm[:, 1, 1].sum(), cm[:, 0, 1].sum(), cm[:, 1, 0].sum()
    else:  # micro over single labels: every error is one fp and one fn
        tp = np.trace(cm)
        fp = fn = cm.sum() - tp
    w = s / s.sum() if s.sum() > 0 else np.zeros_like(p)
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
        "micro_precision": _safe_div(tp, tp + fp), "micro_recall": _safe_div(tp, tp + fn),
        "micro_f1": _safe_div(2 * tp, 2 * tp + fp + fn),
        "per_class": [{"name": n, "precision": float(a), "recall": float(b), "f1": float(c),
                       "support": int(d)} for n, a, b, c, d in zip(names, p, r, f, s)],
        "confusion_matrix": cm.tolist(),
    }
    return out


def macro_f1(y_true, y_pred, n_classes: int, *, multilabel: bool = False) -> float:
    """Unweighted mean of per-class F1 over all C classes."""
    return float(precision_recall_f1(y_true, y_pred, n_classes, multilabel=multilabel)[2].mean())
