"""Stratified, seeded, optionally grouped train/val/test splits, kept on disk.

The split is made once and written next to the data, so that every run (training, evaluation,
baselines) uses the same one:

* manifest ``<folder>/<stem>.csv`` -> ``<folder>/<stem>.split.json``
* folder data set ``<root>/`` -> ``<root>/split.json`` (ignored by ``load_folder``: not audio)

File format (the corpus builder writes it too)::

    {"format": "mmengine-split/1", "seed": 0, "ratios": [0.7, 0.15, 0.15],
     "grouped_by": "group" | null, "counts": {"train": n, "val": n, "test": n},
     "assignment": {"<record id>": "train" | "val" | "test", ...}}

Rules:

* **Stratum** of a record: its first label (single-label data) or its sorted label set joined
  with ``|`` (multi-label data).
* **Ungrouped**: each stratum is shuffled (seeded) and cut by the largest-remainder rule, so
  every split holds ``n * ratio`` items of the stratum up to one item; ties between remainders
  go to the split furthest below its overall target. A stratum of ≥ 3 items has at least one
  item in every split.
* **Grouped** (some record has ``group``; records without one are groups of one): a group's
  stratum is the most common stratum among its records. Within a stratum, groups are shuffled,
  ordered by size (largest first) and each goes to the split with the largest item deficit
  against ``n_items * ratio`` for that stratum (ties: overall deficit). Then a stratum with
  ≥ 3 groups and an empty split takes the smallest group from the split holding the most
  groups of that stratum, until no split is empty. No group ever crosses splits.
"""
from __future__ import annotations

import json
import warnings
from collections import Counter, defaultdict
from pathlib import Path
from typing import Optional

import numpy as np

from ..config import SplitConfig
from ..errors import SplitError
from .manifest import Dataset
from .safe_io import atomic_write

SPLITS = ("train", "val", "test")
FORMAT = "mmengine-split/1"


def stratum(record, multilabel: bool) -> str:
    """The stratification key of a record (first label, or sorted label set)."""
    return "|".join(sorted(record.labels)) if multilabel else record.labels[0]


def _check_ratios(ratios) -> np.ndarray:
    r = np.asarray(ratios, dtype=np.float64)
    if r.shape != (3,) or np.any(r < 0) or not np.isclose(r.sum(), 1.0):
        raise ValueError(f"split ratios must be 3 non-negative numbers summing to 1, got {ratios}")
    return r


def _cut(n: int, ratios: np.ndarray, deficit: np.ndarray) -> np.ndarray:
    """Items per split for a stratum of ``n``: largest remainder, ≥ 1 each when n ≥ 3."""
    exact = n * ratios
    counts = np.floor(exact).astype(np.int64)
    frac = exact - counts
    order = sorted(range(3), key=lambda s: (-frac[s], -deficit[s], s))
    for s in order[: n - int(counts.sum())]:
        counts[s] += 1
    if n >= 3:
        for s in range(3):
            if counts[s] == 0 and ratios[s] > 0:
                donors = [d for d in range(3) if d != s and counts[d] > 1]
                counts[s] = 1
                counts[max(donors, key=lambda d: (counts[d] - exact[d], -d))] -= 1
    return counts


def make_split(dataset: Dataset, cfg: SplitConfig = SplitConfig()) -> dict:
    """Assign every record to ``train``/``val``/``test`` (rules in the module docstring).

    Returns:
        ``{record id: split name}`` in record order. Deterministic for a given ``cfg.seed``.
    """
    ratios = _check_ratios(cfg.ratios)
    rng = np.random.default_rng(cfg.seed)
    recs = dataset.records
    n_total = len(recs)
    placed = np.zeros(3)
    out: dict = {}

    def overall_deficit():
        return n_total * ratios - placed

    grouped = any(r.group is not None for r in recs)
    if not grouped:
        by_stratum = defaultdict(list)
        for r in recs:
            by_stratum[stratum(r, dataset.multilabel)].append(r.id)
        for key in sorted(by_stratum):
            ids = by_stratum[key]
            perm = rng.permutation(len(ids))
            counts = _cut(len(ids), ratios, overall_deficit())
            bounds = np.cumsum(counts)
            for rank, i in enumerate(perm):
                out[ids[i]] = SPLITS[int(np.searchsorted(bounds, rank, side="right"))]
            placed += counts
        return {r.id: out[r.id] for r in recs}

    groups = defaultdict(list)
    for r in recs:
        groups[("g", r.group) if r.group is not None else ("r", r.id)].append(r)
    by_stratum = defaultdict(list)
    for gkey, members in groups.items():
        votes = Counter(stratum(r, dataset.multilabel) for r in members)
        best = max(votes.values())
        by_stratum[min(k for k, v in votes.items() if v == best)].append(gkey)
    for key in sorted(by_stratum):
        gkeys = sorted(by_stratum[key])
        gkeys = [gkeys[i] for i in rng.permutation(len(gkeys))]
        gkeys.sort(key=lambda g: -len(groups[g]))
        n_items = sum(len(groups[g]) for g in gkeys)
        target = n_items * ratios
        have = np.zeros(3)
        where: dict = {}
        members = [[], [], []]
        for g in gkeys:
            need = target - have
            glob = overall_deficit()
            s = max(range(3), key=lambda s: (need[s], glob[s], -s))
            where[g] = s
            members[s].append(g)
            have[s] += len(groups[g])
            placed[s] += len(groups[g])
        if len(gkeys) >= 3:
            for s in range(3):
                if members[s] or ratios[s] == 0:
                    continue
                donor = max(range(3), key=lambda d: (len(members[d]), -d))
                g = min(members[donor], key=lambda g: len(groups[g]))
                members[donor].remove(g)
                members[s].append(g)
                where[g] = s
                placed[donor] -= len(groups[g])
                placed[s] += len(groups[g])
        for g, s in where.items():
            for r in groups[g]:
                out[r.id] = SPLITS[s]
    return {r.id: out[r.id] for r in recs}


def default_split_path(dataset: Dataset) -> Path:
    """``<folder>/<stem>.split.json`` for a manifest, ``<root>/split.json`` for a folder."""
    src = Path(dataset.source)
    if src.is_dir():
        return src / "split.json"
    return src.with_name(src.stem + ".split.json")


def write_split(path, assignment: dict, *, seed: int, ratios, grouped_by: Optional[str]) -> Path:
    """Write a split file atomically (temporary file + ``os.replace``). Returns the path."""
    path = Path(path)
    bad = sorted({v for v in assignment.values() if v not in SPLITS})
    if bad:
        raise ValueError(f"split names must be one of {SPLITS}, got {bad}")
    counts = Counter(assignment.values())
    doc = {
        "format": FORMAT,
        "seed": int(seed),
        "ratios": [float(r) for r in ratios],
        "grouped_by": grouped_by,
        "counts": {s: counts.get(s, 0) for s in SPLITS},
        "assignment": dict(assignment),
    }
    def write(tmp: str) -> None:
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(doc, f, indent=1, ensure_ascii=False)
            f.write("\n")

    return atomic_write(path, write)


def read_split(path) -> dict:
    """Read and validate a split file; returns the whole document (see module docstring)."""
    path = Path(path)
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise SplitError(path, [f"cannot read split file: {exc}"]) from exc
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        got = doc.get("format") if isinstance(doc, dict) else type(doc).__name__
        raise SplitError(path, [f"not a split file: format is {got!r}, expected {FORMAT!r}"])
    assignment = doc.get("assignment")
    if not isinstance(assignment, dict):
        raise SplitError(path, ["'assignment' must be an object {id: split}"])
    bad = sorted(k for k, v in assignment.items() if v not in SPLITS)
    if bad:
        raise SplitError(path, [f"id {k!r}: split must be one of {SPLITS}" for k in bad[:20]])
    return doc


def load_or_create_split(dataset: Dataset, cfg: SplitConfig = SplitConfig(),
                         path=None) -> dict:
    """The data set's split: read from ``path`` when it exists, else made and written there.

    ``path`` defaults to ``default_split_path(dataset)``. An existing file is reused when its
    ids equal the data set's ids; a seed or ratios differing from ``cfg`` only warn (the file
    wins). One mismatch is accepted: new records of training groups (``training_extension``,
    e.g. extra training renderings of a tune) go to ``train`` and the file is extended with
    them (with a warning; every assignment it held is kept). Any other mismatch is refused and
    the file is never overwritten.

    Returns:
        ``{record id: split name}`` in record order.

    Raises:
        SplitError: the existing file is unreadable or covers other ids.
    """
    path = Path(path) if path is not None else default_split_path(dataset)
    ids = dataset.ids
    if path.exists():
        doc = read_split(path)
        assignment = doc["assignment"]
        if set(assignment) != set(ids):
            missing = [i for i in ids if i not in assignment]
            extra = sorted(set(assignment) - set(ids))
            added = None if extra else training_extension(dataset, assignment)
            if added is not None:
                return _extend(path, doc, dataset, added)
            problems = []
            if missing:
                problems.append(f"{len(missing)} data set id(s) not in the split file, "
                                f"e.g. {missing[:5]} (only new records of groups whose every "
                                "record is in train may be added)")
            if extra:
                problems.append(f"{len(extra)} id(s) in the split file are not in the data set, "
                                f"e.g. {extra[:5]}")
            problems.append(f"the split was made for other data: delete {path} to make a new "
                            "split, or pass another split path")
            raise SplitError(path, problems)
        if int(doc.get("seed", -1)) != cfg.seed or not np.allclose(
                doc.get("ratios", [0, 0, 0]), cfg.ratios):
            warnings.warn(f"{path}: reusing the existing split (seed {doc.get('seed')}, ratios "
                          f"{doc.get('ratios')}) although seed {cfg.seed}, ratios "
                          f"{list(cfg.ratios)} were asked; delete the file to re-split",
                          stacklevel=2)
        return {i: assignment[i] for i in ids}
    assignment = make_split(dataset, cfg)
    grouped = "group" if any(r.group is not None for r in dataset.records) else None
    try:
        write_split(path, assignment, seed=cfg.seed, ratios=cfg.ratios, grouped_by=grouped)
    except OSError as exc:
        raise SplitError(path, [f"cannot write the split file ({exc}); pass another split "
                                "path"]) from exc
    return assignment


def training_extension(dataset: Dataset, assignment: dict) -> Optional[dict]:
    """``{id: "train"}`` for the records of ``dataset`` that ``assignment`` lacks, when each
    of them belongs to a group (``Record.group``) whose records in ``assignment`` are all
    ``train`` (at least one); None when any lacking record does not (no group, a group in
    val or test, a group new to the split): adding it could put one tune on both sides.
    Records already in ``assignment`` are not looked at; an empty dict when none lacks."""
    split_of: dict = defaultdict(set)
    for r in dataset.records:
        if r.group is not None and r.id in assignment:
            split_of[r.group].add(assignment[r.id])
    added = {}
    for r in dataset.records:
        if r.id in assignment:
            continue
        if r.group is None or split_of.get(r.group) != {"train"}:
            return None
        added[r.id] = "train"
    return added


def _extend(path: Path, doc: dict, dataset: Dataset, added: dict) -> dict:
    """Write ``path`` with ``added`` (new training records) joined to its assignment."""
    merged = {**doc["assignment"], **added}
    ordered = {i: merged[i] for i in dataset.ids}
    ordered.update((i, s) for i, s in merged.items() if i not in ordered)
    warnings.warn(f"{path}: extending the persisted split with {len(added)} new training "
                  f"record(s) of training groups, e.g. {sorted(added)[:3]}", stacklevel=3)
    try:
        write_split(path, ordered, seed=doc.get("seed", 0), ratios=doc.get("ratios", (0, 0, 0)),
                    grouped_by=doc.get("grouped_by"))
    except (OSError, ValueError) as exc:
        warnings.warn(f"{path}: could not write the extended split ({exc}); using it in "
                      "memory only", stacklevel=3)
    return {i: merged[i] for i in dataset.ids}


def split_indices(dataset: Dataset, assignment: dict) -> dict:
    """Row indices per split: ``{"train": (n_train,) int64, "val": ..., "test": ...}``."""
    missing = [r.id for r in dataset.records if r.id not in assignment]
    if missing:
        raise SplitError("split", [f"{len(missing)} record id(s) have no split, e.g. "
                                   f"{missing[:5]}"])
    names = np.array([assignment[r.id] for r in dataset.records])
    return {s: np.flatnonzero(names == s).astype(np.int64) for s in SPLITS}
