"""The in-memory training view: every modality of every usable record, aligned by row.

``build_feature_set`` joins the cached audio features (``cache.py``), the split, the labels,
TF-IDF text (fit on the training rows only) and optional per-frame symbolic features.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass, field, replace
from typing import Callable, Optional

import numpy as np

from ..config import AudioConfig, FeatureLoadConfig, FrontendConfig, TextConfig
from ..data.split import SPLITS
from .cache import compute_or_load_audio_features
from .text import TextVectorizer, as_text

TEXT_FIELDS = ("auto", "lyrics", "title", None)


@dataclass
class FeatureSet:
    """Everything a model trains on, aligned by row (``N`` clips, ``T`` frames).

    Attributes:
        ids: record ids.
        mfcc: ``(N, n_mfcc, T)`` float32.
        logmel: ``(N, n_mels, T)`` float32.
        labels: ``(N,)`` int64 class indices, or ``(N, C)`` float32 multi-hot.
        label_names: ``C`` class names (index = position).
        split: ``(N,)`` str array of ``"train"``/``"val"``/``"test"``.
        text: ``(N, V)`` float32 TF-IDF rows (vectoriser fit on train rows), or None.
        text_mask: ``(N,)`` bool, False where the text is missing, or None.
        symbolic: ``(N, S, T)`` float32 per-frame symbolic features, or None.
        symbolic_mask: ``(N,)`` bool, False where the record has no symbolic part, or None.
        chroma: ``(N, chroma_bins, T)`` float32 chroma in dB (the audio pitch stream), or None
            when the front end computes none.
        text_field: which record field the text came from (``"lyrics"``, ``"title"``, None).
        excluded: ``{record id: reason}`` for records left out (e.g. undecodable audio).
        groups: ``N`` group keys (the record's ``group``, else its id): the unit a paired
            bootstrap over the test split resamples; None when unknown.
    """

    ids: list[str]
    mfcc: np.ndarray
    logmel: np.ndarray
    labels: np.ndarray
    label_names: list[str]
    split: np.ndarray
    text: np.ndarray | None = None
    text_mask: np.ndarray | None = None
    symbolic: np.ndarray | None = None
    symbolic_mask: np.ndarray | None = None
    chroma: np.ndarray | None = None
    text_field: str | None = None
    excluded: dict[str, str] = field(default_factory=dict)
    groups: list[str] | None = None

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def multilabel(self) -> bool:
        return self.labels.ndim == 2

    @property
    def n_frames(self) -> int:
        return int(self.logmel.shape[-1])

    def subset(self, which: str) -> "FeatureSet":
        """Rows of one split (``"train"``, ``"val"`` or ``"test"``), copied."""
        if which not in SPLITS:
            raise ValueError(f"unknown split {which!r}; valid: {SPLITS}")
        rows = np.flatnonzero(self.split == which)

        def take(a):
            return None if a is None else a[rows]

        return replace(
            self, ids=[self.ids[i] for i in rows], mfcc=self.mfcc[rows],
            logmel=self.logmel[rows], labels=self.labels[rows], split=self.split[rows],
            text=take(self.text), text_mask=take(self.text_mask),
            symbolic=take(self.symbolic), symbolic_mask=take(self.symbolic_mask),
            chroma=take(self.chroma), label_names=list(self.label_names), excluded=dict(self.excluded),
            groups=None if self.groups is None else [self.groups[i] for i in rows])


def record_text(record, text_field: Optional[str]) -> Optional[str]:
    """The text of ``record`` for ``text_field`` (``"lyrics"``/``"title"``), None if absent."""
    if text_field is None:
        return None
    return as_text(getattr(record, text_field))


def choose_text_field(records, text_field) -> Optional[str]:
    """Resolve ``"auto"``: lyrics if any record has lyrics, else title if any has one, else None."""
    if text_field not in TEXT_FIELDS:
        raise ValueError(f"text_field must be one of {TEXT_FIELDS}, got {text_field!r}")
    if text_field != "auto":
        return text_field
    for name in ("lyrics", "title"):
        if any(record_text(r, name) is not None for r in records):
            return name
    return None


def _symbolic(records, symbolic_fn: Callable, n_frames: int):
    arrays = []
    for r in records:
        a = symbolic_fn(r)
        if a is not None:
            a = np.asarray(a, dtype=np.float32)
            if a.ndim != 2 or a.shape[1] != n_frames:
                raise ValueError(f"symbolic_fn({r.id!r}) returned shape {a.shape}; expected "
                                 f"(S, {n_frames}) to match the audio frames")
        arrays.append(a)
    present = [a for a in arrays if a is not None]
    if not present:
        return None, None
    sizes = {a.shape[0] for a in present}
    if len(sizes) != 1:
        raise ValueError(f"symbolic_fn returned different feature counts S: {sorted(sizes)}")
    out = np.zeros((len(records), sizes.pop(), n_frames), dtype=np.float32)
    mask = np.zeros(len(records), dtype=bool)
    for i, a in enumerate(arrays):
        if a is not None:
            out[i] = a
            mask[i] = True
    return out, mask


def build_feature_set(
    dataset,
    assignment: dict,
    audio_cfg: AudioConfig,
    frontend_cfg: FrontendConfig,
    text_cfg: TextConfig,
    cache_dir,
    *,
    text_field: Optional[str] = FeatureLoadConfig.text_field,
    symbolic_fn: Optional[Callable] = None,
    progress: bool = True,
    frontend: str = FeatureLoadConfig.frontend,
    workers: int = FeatureLoadConfig.workers,
) -> tuple:
    """Build the aligned training view of ``dataset``.

    Args:
        dataset: a ``Dataset``.
        assignment: ``{record id: split}`` (from ``load_or_create_split``).
        audio_cfg, frontend_cfg: audio decoding and front-end settings (cache key).
        text_cfg: TF-IDF settings.
        cache_dir: the audio feature cache folder.
        text_field: ``"lyrics"``, ``"title"``, None (no text) or ``"auto"`` (see
            ``choose_text_field``).
        symbolic_fn: ``fn(record) -> (S, T) array or None``; T must equal the audio frames.
        progress, frontend, workers: passed to ``compute_or_load_audio_features``.

    Returns:
        ``(FeatureSet, TextVectorizer or None)``. Records whose audio failed are left out and
        listed in ``FeatureSet.excluded``. The text vectoriser is None when no training record
        has text.
    """
    missing = [r.id for r in dataset.records if r.id not in assignment]
    if missing:
        raise ValueError(f"{len(missing)} record(s) have no split, e.g. {missing[:5]}")
    audio = compute_or_load_audio_features(dataset, audio_cfg, frontend_cfg, cache_dir,
                                           frontend=frontend, progress=progress,
                                           workers=workers)
    by_id = {r.id: i for i, r in enumerate(dataset.records)}
    rows = np.array([by_id[i] for i in audio.ids], dtype=np.int64)
    records = [dataset.records[i] for i in rows]
    labels = dataset.label_indices()[rows]
    split = np.array([assignment[r.id] for r in records], dtype="<U5")

    field_name = choose_text_field(records, text_field)
    vectorizer = None
    text = text_mask = None
    if field_name is not None:
        texts = [record_text(r, field_name) for r in records]
        train_texts = [t for t, s in zip(texts, split) if s == "train" and t is not None]
        if train_texts:
            vectorizer = TextVectorizer(text_cfg).fit(train_texts)
            text, text_mask = vectorizer.transform(texts)
        else:
            warnings.warn(f"no training record has a {field_name}; training without text",
                          stacklevel=2)
            field_name = None

    symbolic = symbolic_mask = None
    if symbolic_fn is not None:
        symbolic, symbolic_mask = _symbolic(records, symbolic_fn, audio.logmel.shape[-1])

    fs = FeatureSet(ids=list(audio.ids), mfcc=audio.mfcc, logmel=audio.logmel, labels=labels,
                    label_names=list(dataset.labels), split=split, text=text,
                    text_mask=text_mask, symbolic=symbolic, symbolic_mask=symbolic_mask,
                    chroma=audio.chroma, text_field=field_name, excluded=dict(audio.failed),
                    groups=[r.group or r.id for r in records])
    return fs, vectorizer
