"""TF-IDF text front end: parity with scikit-learn, JSON round trip, missing text."""
from __future__ import annotations

import json
import sys

import numpy as np
import pytest

from mmengine.config import TextConfig
from mmengine.features.text import TextVectorizer

TRAIN = [
    "The Drunken Piper plays a merry reel, a merry reel indeed!",
    "Lord Mayo's jig -- played twice; the jig of Mayo.",
    "Ich steh an deiner Krippen hier, o Jesu, du mein Leben",
    "Nun komm, der Heiden Heiland, der Jungfrauen Kind erkannt",
    "Sí, señor: canción número 2, ÉCOLE élève naïve café",
    "reel reel reel jig hornpipe hornpipe the the the",
    "A fairy dance, and a fairy reel at the crossroads of Kerry",
    "x y z 12 345 under_score don't can't won't",
]
HELD_OUT = [
    "A merry jig at the crossroads, the PIPER plays",
    "Jesu, meine Freude, meines Herzens Weide",
    "café élève — reel reel hornpipe",
    "unknown words only qqq zzz",
    "",
    None,
    "   \n\t ",
    "12 345 don't",
]

CONFIGS = [
    TextConfig(),
    TextConfig(ngram_max=2),
    TextConfig(ngram_max=3, use_idf=False, sublinear_tf=False),
    TextConfig(use_idf=False),
    TextConfig(sublinear_tf=False, max_features=7),
    TextConfig(lowercase=False, norm=None, ngram_max=2),
    TextConfig(min_df=2, norm="l1"),
]


def sklearn_rows(vec: TextVectorizer, train, texts):
    sk = vec.sklearn_vectorizer().fit(train)
    out = np.zeros((len(texts), len(sk.vocabulary_)))
    present = [i for i, t in enumerate(texts) if t is not None]
    out[present] = sk.transform([texts[i] for i in present]).toarray()
    return out, sk


@pytest.mark.parametrize("cfg", CONFIGS, ids=lambda c: f"ng{c.ngram_max}-idf{int(c.use_idf)}-"
                         f"sub{int(c.sublinear_tf)}-mf{c.max_features}-lc{int(c.lowercase)}-"
                         f"{c.norm}-df{c.min_df}")
def test_json_rebuild_matches_sklearn(cfg):
    vec = TextVectorizer(cfg).fit(TRAIN)
    d = json.loads(json.dumps(vec.to_json()))
    rebuilt = TextVectorizer.from_json(d)
    ref, sk = sklearn_rows(vec, TRAIN, HELD_OUT)
    assert d["vocabulary"] == sk.get_feature_names_out().tolist()
    for v in (vec, rebuilt):
        x, mask = v.transform(HELD_OUT)
        assert x.dtype == np.float32 and x.shape == ref.shape
        err = float(np.abs(x - ref).max())
        # float32 vs sklearn's float64: measured 3.8e-8 here, 2.2e-7 on the training texts
        # (below); one bound, about 2x the larger
        assert err <= 5e-7, f"max |ours - sklearn| = {err:.3g}"
        np.testing.assert_array_equal(mask, np.abs(ref).sum(1) > 0)
    x_train, _ = rebuilt.transform(TRAIN)
    assert np.abs(x_train - sk.transform(TRAIN).toarray()).max() <= 5e-7


def test_json_contents():
    cfg = TextConfig(ngram_max=2, max_features=50)
    d = TextVectorizer(cfg).fit(TRAIN).to_json()
    assert d["config"]["ngram_max"] == 2 and d["config"]["max_features"] == 50
    assert d["token_pattern"] == r"(?u)\b\w\w+\b"
    assert len(d["vocabulary"]) == len(d["idf"]) <= 50
    assert d["sklearn_version"]
    assert "merry reel" in d["vocabulary"]
    no_idf = TextVectorizer(TextConfig(use_idf=False)).fit(TRAIN).to_json()
    assert no_idf["idf"] is None


def test_missing_text_is_masked():
    vec = TextVectorizer().fit(TRAIN)
    x, mask = vec.transform([None, "", "  ", "reel", "qqqq"])
    np.testing.assert_array_equal(mask, [False, False, False, True, False])
    assert np.all(x[~mask] == 0)
    assert np.isclose(np.linalg.norm(x[3]), 1.0)


def test_fit_skips_missing_texts():
    a = TextVectorizer().fit(TRAIN + [None, "", "   "]).to_json()
    b = TextVectorizer().fit(TRAIN).to_json()
    assert a["vocabulary"] == b["vocabulary"] and a["idf"] == b["idf"]


def test_fit_errors():
    with pytest.raises(ValueError, match="no training text"):
        TextVectorizer().fit([None, " "])
    with pytest.raises(ValueError, match="cannot build a vocabulary"):
        TextVectorizer().fit(["a b c", "! ?"])
    with pytest.raises(RuntimeError, match="not fitted"):
        TextVectorizer().transform(["x"])
    with pytest.raises(ValueError, match="format"):
        TextVectorizer.from_json({"format": "nope"})


def test_bytes_input_decoded_with_warning():
    vec = TextVectorizer().fit(TRAIN)
    good, _ = vec.transform(["café reel"])
    as_bytes, _ = vec.transform(["café reel".encode("utf-8")])
    np.testing.assert_array_equal(good, as_bytes)
    with pytest.warns(UnicodeWarning, match="not valid UTF-8"):
        x, mask = vec.transform([b"caf\xe9 reel"])
    assert mask[0]
    want, _ = vec.transform(["caf\ufffd reel"])
    np.testing.assert_array_equal(x, want)


def test_from_json_needs_no_sklearn(monkeypatch):
    d = TextVectorizer(TextConfig(ngram_max=2)).fit(TRAIN).to_json()
    want, _ = TextVectorizer.from_json(d).transform(HELD_OUT)
    monkeypatch.setitem(sys.modules, "sklearn", None)
    monkeypatch.setitem(sys.modules, "sklearn.feature_extraction.text", None)
    got, _ = TextVectorizer.from_json(d).transform(HELD_OUT)
    np.testing.assert_array_equal(got, want)
