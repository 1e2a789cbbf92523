"""Own metric implementations against scikit-learn (zero_division=0, labels=range(C))."""
from __future__ import annotations

import numpy as np
import pytest
from sklearn import metrics as skm

from mmengine.errors import DataError
from mmengine.evaluation import label_map
from mmengine.metrics import (accuracy, classification_metrics, confusion_matrix, macro_f1,
                              multilabel_confusion_matrix, precision_recall_f1)


def _sk_prf(yt, yp, C, average):
    return skm.precision_recall_fscore_support(yt, yp, labels=list(range(C)), average=average,
                                               zero_division=0)


@pytest.mark.parametrize("n,C", [(1, 2), (7, 3), (59, 5), (257, 11)])
def test_single_label_matches_sklearn(rng, n, C):
    yt = rng.integers(0, C, n)
    yp = np.where(rng.random(n) < 0.6, yt, rng.integers(0, C, n))
    m = classification_metrics(yt, yp, C)
    assert m["accuracy"] == pytest.approx(skm.accuracy_score(yt, yp))
    np.testing.assert_array_equal(confusion_matrix(yt, yp, C),
                                  skm.confusion_matrix(yt, yp, labels=list(range(C))))
    p, r, f, s = precision_recall_f1(yt, yp, C)
    sp, sr, sf, ss = _sk_prf(yt, yp, C, None)
    np.testing.assert_allclose(p, sp)
    np.testing.assert_allclose(r, sr)
    np.testing.assert_allclose(f, sf)
    np.testing.assert_array_equal(s, ss)
    for avg in ("macro", "weighted", "micro"):
        sp, sr, sf, _ = _sk_prf(yt, yp, C, avg)
        assert m[f"{avg}_precision"] == pytest.approx(sp, abs=1e-12)
        assert m[f"{avg}_recall"] == pytest.approx(sr, abs=1e-12)
        assert m[f"{avg}_f1"] == pytest.approx(sf, abs=1e-12)
    assert macro_f1(yt, yp, C) == pytest.approx(m["macro_f1"])


def test_absent_classes_zero_division():
    # class 2 is never predicted, class 3 is absent from truth and predictions
    yt = np.array([0, 0, 1, 1, 2, 2])
    yp = np.array([0, 1, 1, 1, 0, 1])
    C = 4
    m = classification_metrics(yt, yp, C, label_names=["a", "b", "c", "d"])
    sp, sr, sf, _ = _sk_prf(yt, yp, C, "macro")
    assert (m["macro_precision"], m["macro_recall"], m["macro_f1"]) == pytest.approx((sp, sr, sf))
    by_name = {c["name"]: c for c in m["per_class"]}
    assert by_name["c"]["precision"] == 0.0 and by_name["c"]["recall"] == 0.0
    assert by_name["d"]["f1"] == 0.0 and by_name["d"]["support"] == 0
    sw = _sk_prf(yt, yp, C, "weighted")
    assert m["weighted_f1"] == pytest.approx(sw[2])


@pytest.mark.parametrize("n,C", [(5, 3), (97, 6)])
def test_multilabel_matches_sklearn(rng, n, C):
    yt = (rng.random((n, C)) < 0.35).astype(int)
    yp = np.where(rng.random((n, C)) < 0.7, yt, 1 - yt)
    yp[:, 0] = 0  # a class never predicted
    m = classification_metrics(yt.astype(np.float32), yp, C)  # float multi-hot truth accepted
    assert m["accuracy"] == pytest.approx(skm.accuracy_score(yt, yp))
    np.testing.assert_array_equal(multilabel_confusion_matrix(yt, yp),
                                  skm.multilabel_confusion_matrix(yt, yp))
    for avg in ("macro", "weighted", "micro"):
        sp, sr, sf, _ = _sk_prf(yt, yp, C, avg)
        assert m[f"{avg}_precision"] == pytest.approx(sp, abs=1e-12)
        assert m[f"{avg}_recall"] == pytest.approx(sr, abs=1e-12)
        assert m[f"{avg}_f1"] == pytest.approx(sf, abs=1e-12)
    assert accuracy(yt, yp, C, multilabel=True) == pytest.approx(skm.accuracy_score(yt, yp))


@pytest.mark.parametrize("yt,yp,C,match", [
    ([0, 1, 3], [0, 1, 1], 3, "unknown label"),
    ([0, 1, 1], [0, -1, 1], 3, "unknown label"),
    ([0, 1], [0, 1, 1], 3, "shape"),
    ([], [], 3, "empty"),
    ([0.5, 1.0], [0, 1], 3, "integer"),
])
def test_bad_inputs_raise(yt, yp, C, match):
    with pytest.raises(DataError, match=match):
        classification_metrics(np.array(yt), np.array(yp), C, multilabel=False)


def test_multilabel_must_be_binary():
    with pytest.raises(DataError, match="0/1"):
        classification_metrics(np.array([[0, 2]]), np.array([[0, 1]]), 2, multilabel=True)


def test_label_map_by_name_and_unknown():
    y = np.array([0, 2, 1])
    out = label_map(["b", "a", "c"], ["a", "b", "c"], y)
    np.testing.assert_array_equal(out, [1, 2, 0])
    with pytest.raises(DataError, match="'z'"):
        label_map(["a", "b"], ["a", "b", "z"], np.array([0, 2]))
