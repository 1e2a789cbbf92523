"""Text front end: TF-IDF / bag of words, learnt with scikit-learn, applied without it.

``TextVectorizer.fit`` learns the vocabulary and idf with scikit-learn's ``TfidfVectorizer``
(settings from ``TextConfig``, fit on the training split only). The transform itself is this
module's own code (tokenise with the same regular expression, lowercase, word n-grams, counts,
sublinear tf, idf, row norm), used both after ``fit`` and after ``from_json``, so training and
an engine without scikit-learn compute the same numbers.

A missing text (None, empty, blank) or one with no term in the vocabulary gives a zero row and
``mask = False``: the model sees a missing modality, never a silent zero vector.
"""
from __future__ import annotations

import re
import warnings
from collections import Counter
from typing import Iterable, Optional, Sequence

import numpy as np

from ..config import TextConfig, from_dict, to_dict

FORMAT = "mmengine-tfidf/1"
#: scikit-learn's default token pattern: words of 2+ word characters. Fixed by the code: a
#: stored vectoriser (checkpoint, engine header) whose pattern differs is refused, never
#: compiled (a pattern from a file could backtrack catastrophically on user text).
TOKEN_PATTERN = r"(?u)\b\w\w+\b"
_TOKEN_RE = re.compile(TOKEN_PATTERN)


def as_text(value) -> Optional[str]:
    """``str`` as is; ``bytes`` decoded as UTF-8 (invalid bytes -> U+FFFD, with a warning);
    None, empty or blank -> None."""
    if value is None:
        return None
    if isinstance(value, (bytes, bytearray)):
        try:
            value = bytes(value).decode("utf-8")
        except UnicodeDecodeError as exc:
            warnings.warn(f"text input is not valid UTF-8 ({exc.reason} at byte {exc.start}); "
                          "undecodable bytes were replaced with U+FFFD", UnicodeWarning,
                          stacklevel=3)
            value = bytes(value).decode("utf-8", errors="replace")
    if not isinstance(value, str):
        raise TypeError(f"text must be str, bytes or None, got {type(value).__name__}")
    return value if value.strip() else None


class TextVectorizer:
    """TF-IDF vectoriser with a JSON form that needs no scikit-learn.

    Attributes:
        cfg: the ``TextConfig``.
        vocabulary: terms in column order (``V`` of them).
        idf: ``(V,)`` float64 inverse document frequencies, or None when ``use_idf`` is False.
    """

    def __init__(self, cfg: TextConfig = TextConfig()):
        self.cfg = cfg
        self.token_pattern = TOKEN_PATTERN
        self._token_re = _TOKEN_RE
        self.vocabulary: list = []
        self.idf: Optional[np.ndarray] = None
        self._index: dict = {}
        self.sklearn_version: Optional[str] = None

    # -- fitting --------------------------------------------------------------------------
    def sklearn_vectorizer(self):
        """A fresh, unfitted scikit-learn ``TfidfVectorizer`` with this object's settings."""
        from sklearn.feature_extraction.text import TfidfVectorizer

        c = self.cfg
        return TfidfVectorizer(
            lowercase=c.lowercase, token_pattern=self.token_pattern, ngram_range=(1, c.ngram_max),
            min_df=c.min_df, max_features=c.max_features, norm=c.norm, use_idf=c.use_idf,
            smooth_idf=True, sublinear_tf=c.sublinear_tf, dtype=np.float64,
        )

    def fit(self, texts: Iterable) -> "TextVectorizer":
        """Learn vocabulary and idf from the present texts (None/blank ones are skipped).

        Raises:
            ValueError: no text, or no term survives tokenising and ``min_df``.
        """
        docs = [t for t in (as_text(x) for x in texts) if t is not None]
        if not docs:
            raise ValueError("no training text to fit the text vectorizer on")
        sk = self.sklearn_vectorizer()
        try:
            sk.fit(docs)
        except ValueError as exc:
            raise ValueError(f"cannot build a vocabulary from {len(docs)} text(s): {exc}") from exc
        import sklearn

        vocab = sorted(sk.vocabulary_.items(), key=lambda kv: kv[1])
        self._set_vocabulary([term for term, _ in vocab],
                             np.asarray(sk.idf_, dtype=np.float64) if self.cfg.use_idf else None)
        self.sklearn_version = sklearn.__version__
        return self

    def _set_vocabulary(self, vocabulary: Sequence, idf: Optional[np.ndarray]) -> None:
        if idf is not None and len(idf) != len(vocabulary):
            raise ValueError(f"idf has {len(idf)} entries for {len(vocabulary)} terms")
        self.vocabulary = list(vocabulary)
        self._index = {t: i for i, t in enumerate(self.vocabulary)}
        if len(self._index) != len(self.vocabulary):
            raise ValueError("vocabulary has duplicate terms")
        self.idf = idf

    @property
    def n_features(self) -> int:
        return len(self.vocabulary)

    # -- transform ------------------------------------------------------------------------
    def analyze(self, text: str) -> list:
        """Terms of one text: lowercase, tokens by ``token_pattern``, word n-grams 1..n."""
        if self.cfg.lowercase:
            text = text.lower()
        tokens = self._token_re.findall(text)
        n_max = self.cfg.ngram_max
        if n_max <= 1:
            return tokens
        terms = list(tokens)
        for n in range(2, min(n_max, len(tokens)) + 1):
            terms.extend(" ".join(tokens[i:i + n]) for i in range(len(tokens) - n + 1))
        return terms

    def transform(self, texts: Iterable) -> tuple:
        """Vectorise texts (str, UTF-8 bytes, or None for a missing one).

        Returns:
            ``(X, mask)``: ``X`` ``(N, V)`` float32 rows, ``mask`` ``(N,)`` bool, False where
            the text is missing or has no vocabulary term (its row is zero).
        """
        if not self.vocabulary:
            raise RuntimeError("TextVectorizer is not fitted (call fit or from_json)")
        texts = list(texts)
        out = np.zeros((len(texts), self.n_features), dtype=np.float64)
        for row, value in enumerate(texts):
            text = as_text(value)
            if text is None:
                continue
            counts = Counter(t for t in self.analyze(text) if t in self._index)
            if not counts:
                continue
            cols = np.fromiter((self._index[t] for t in counts), dtype=np.int64, count=len(counts))
            tf = np.fromiter(counts.values(), dtype=np.float64, count=len(counts))
            if self.cfg.sublinear_tf:
                tf = np.log(tf) + 1.0
            if self.idf is not None:
                tf = tf * self.idf[cols]
            if self.cfg.norm == "l2":
                tf = tf / np.sqrt(np.dot(tf, tf))
            elif self.cfg.norm == "l1":
                tf = tf / np.abs(tf).sum()
            elif self.cfg.norm is not None:
                raise ValueError(f"unknown norm {self.cfg.norm!r} (use 'l2', 'l1' or None)")
            out[row, cols] = tf
        mask = np.any(out != 0, axis=1)
        return out.astype(np.float32), mask

    # -- serialisation --------------------------------------------------------------------
    def to_json(self) -> dict:
        """Plain-JSON form: settings, vocabulary in column order, idf (or None), versions."""
        return {
            "format": FORMAT,
            "config": to_dict(self.cfg),
            "token_pattern": self.token_pattern,
            "smooth_idf": True,
            "vocabulary": list(self.vocabulary),
            "idf": None if self.idf is None else [float(v) for v in self.idf],
            "sklearn_version": self.sklearn_version,
        }

    @classmethod
    def from_json(cls, d: dict) -> "TextVectorizer":
        """Rebuild the exact transform from ``to_json()`` output (no scikit-learn needed).

        The description is data: its types and ranges are checked, and its ``token_pattern``
        must be the code's ``TOKEN_PATTERN`` (it is never compiled).

        Raises:
            ValueError: a malformed description or another token pattern.
        """
        if not isinstance(d, dict) or d.get("format") != FORMAT:
            got = d.get("format") if isinstance(d, dict) else type(d).__name__
            raise ValueError(f"not a TF-IDF description: format {got!r}, expected {FORMAT!r}")
        pattern = d.get("token_pattern", TOKEN_PATTERN)
        if pattern != TOKEN_PATTERN:
            raise ValueError(f"token_pattern {str(pattern)[:80]!r} is not this code's "
                             f"{TOKEN_PATTERN!r}: the tokenizer is fixed by the code, not the "
                             "file (rebuild the engine or checkpoint with this version)")
        cfg = d.get("config")
        if not isinstance(cfg, dict):
            raise ValueError("TF-IDF description without a 'config' object")
        cfg = from_dict(TextConfig, cfg)
        for name, lo, hi in (("max_features", 1, 10_000_000), ("min_df", 1, 1 << 31),
                             ("ngram_max", 1, 8)):
            v = getattr(cfg, name)
            if isinstance(v, bool) or not isinstance(v, int) or not lo <= v <= hi:
                raise ValueError(f"TF-IDF config {name}={v!r} outside {lo}..{hi}")
        if cfg.norm not in ("l2", "l1", None):
            raise ValueError(f"TF-IDF config norm={cfg.norm!r} (use 'l2', 'l1' or null)")
        vocab, idf = d.get("vocabulary"), d.get("idf")
        if not isinstance(vocab, list) or not all(isinstance(t, str) for t in vocab):
            raise ValueError("TF-IDF vocabulary must be a list of strings")
        if len(vocab) > cfg.max_features:
            raise ValueError(f"TF-IDF vocabulary has {len(vocab)} terms, more than its "
                             f"max_features {cfg.max_features}")
        if idf is not None and (not isinstance(idf, list) or not all(
                isinstance(v, (int, float)) and not isinstance(v, bool) for v in idf)):
            raise ValueError("TF-IDF idf must be a list of numbers or null")
        obj = cls(cfg)
        obj._set_vocabulary(vocab, None if idf is None else np.asarray(idf, np.float64))
        obj.sklearn_version = d.get("sklearn_version")
        return obj
