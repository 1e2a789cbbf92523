"""Splits: stratification, ratios, groups, determinism, the split file and its reuse."""
from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from mmengine.config import SplitConfig
from mmengine.data.manifest import Dataset, Record
from mmengine.data.split import (SPLITS, default_split_path, load_or_create_split, make_split,
                                 read_split, split_indices, write_split)
from mmengine.errors import SplitError


def make_dataset(tmp_path, sizes, groups=None, multi=None):
    """``sizes`` {label: n}; ``groups`` optional fn(label, i) -> group; no audio needed."""
    recs = []
    for label, n in sizes.items():
        for i in range(n):
            labels = (label,) if multi is None else multi(label, i)
            recs.append(Record(id=f"{label}-{i:03d}", path=tmp_path / f"{label}{i}.wav",
                               labels=labels, group=None if groups is None else groups(label, i),
                               line=len(recs) + 2))
    labels = sorted({lab for r in recs for lab in r.labels})
    return Dataset(records=recs, labels=labels, multilabel=any(len(r.labels) > 1 for r in recs),
                   source=tmp_path / "m.csv")


SIZES = {"reel": 40, "jig": 27, "hornpipe": 13, "slip": 7, "fling": 3}


@pytest.mark.parametrize("seed", [0, 1, 7])
def test_stratified_ratios_per_class(tmp_path, seed):
    ds = make_dataset(tmp_path, SIZES)
    a = make_split(ds, SplitConfig(seed=seed))
    assert list(a) == ds.ids
    for label, n in SIZES.items():
        c = Counter(a[r.id] for r in ds.records if r.labels[0] == label)
        for s, ratio in zip(SPLITS, (0.7, 0.15, 0.15)):
            assert c[s] >= 1, (label, c)
            if n >= 7:
                assert abs(c[s] - n * ratio) <= 1, (label, s, c[s], n * ratio)
    total = Counter(a.values())
    n = sum(SIZES.values())
    for s, ratio in zip(SPLITS, (0.7, 0.15, 0.15)):
        assert abs(total[s] - n * ratio) <= 2, total


def test_multilabel_stratifies_by_label_set(tmp_path):
    ds = make_dataset(tmp_path, {"a": 20, "b": 20},
                      multi=lambda lab, i: (lab, "x") if i % 2 else (lab,))
    assert ds.multilabel
    a = make_split(ds)
    for key in ("a", "a|x", "b", "b|x"):
        c = Counter(a[r.id] for r in ds.records if "|".join(sorted(r.labels)) == key)
        assert sum(c.values()) == 10
        assert (c["train"], c["val"], c["test"]) in {(7, 2, 1), (7, 1, 2)}, (key, c)


def test_groups_never_cross_splits(tmp_path):
    rng = np.random.default_rng(3)
    sizes = {"reel": 60, "jig": 45, "air": 12}
    group_of = {(lab, i): f"{lab}-g{int(rng.integers(0, n // 3))}" for lab, n in sizes.items()
                for i in range(n)}
    ds = make_dataset(tmp_path, sizes, groups=lambda lab, i: group_of[(lab, i)])
    # one group holding two labels
    recs = list(ds.records)
    recs[0] = Record(id=recs[0].id, path=recs[0].path, labels=("jig",), group="shared")
    recs[-1] = Record(id=recs[-1].id, path=recs[-1].path, labels=("air",), group="shared")
    ds.records = recs
    a = make_split(ds, SplitConfig(seed=5))
    where = {}
    for r in ds.records:
        assert where.setdefault(r.group, a[r.id]) == a[r.id], r.group
    for label in sizes:
        c = Counter(a[r.id] for r in ds.records if r.labels[0] == label)
        assert all(c[s] >= 1 for s in SPLITS), (label, c)
    total = Counter(a.values())
    assert 0.55 < total["train"] / len(recs) < 0.85, total


def test_grouped_repair_fills_empty_split(tmp_path):
    # 3 groups of sizes 10, 10, 1: greedy alone leaves one split empty
    ds = make_dataset(tmp_path, {"x": 21}, groups=lambda lab, i: "g0" if i < 10 else (
        "g1" if i < 20 else "g2"))
    a = make_split(ds)
    assert set(a.values()) == set(SPLITS)


def test_records_without_group_are_their_own_group(tmp_path):
    ds = make_dataset(tmp_path, {"x": 20, "y": 20},
                      groups=lambda lab, i: "big" if (lab == "x" and i < 5) else None)
    a = make_split(ds)
    assert len({a[f"x-{i:03d}"] for i in range(5)}) == 1
    for lab in ("x", "y"):
        assert {a[r.id] for r in ds.records if r.labels[0] == lab} == set(SPLITS)


def test_determinism_and_seed(tmp_path):
    ds = make_dataset(tmp_path, SIZES)
    p1, p2, p3 = (tmp_path / f"s{i}.split.json" for i in range(3))
    for p, seed in ((p1, 0), (p2, 0), (p3, 1)):
        write_split(p, make_split(ds, SplitConfig(seed=seed)), seed=seed,
                    ratios=(0.7, 0.15, 0.15), grouped_by=None)
    assert p1.read_bytes() == p2.read_bytes()
    assert read_split(p1)["assignment"] != read_split(p3)["assignment"]


def test_file_format(tmp_path):
    ds = make_dataset(tmp_path, {"a": 10, "b": 10})
    a = load_or_create_split(ds, SplitConfig(seed=4))
    path = tmp_path / "m.split.json"
    assert default_split_path(ds) == path
    doc = json.loads(path.read_text())
    assert doc["format"] == "mmengine-split/1"
    assert doc["seed"] == 4 and doc["ratios"] == [0.7, 0.15, 0.15] and doc["grouped_by"] is None
    assert doc["counts"] == dict(Counter(a.values()))
    assert doc["assignment"] == a
    assert not list(tmp_path.glob("*.tmp"))
    idx = split_indices(ds, a)
    assert sorted(np.concatenate([idx[s] for s in SPLITS]).tolist()) == list(range(20))
    for s in SPLITS:
        assert idx[s].dtype == np.int64
        assert all(a[ds.records[i].id] == s for i in idx[s])


def test_grouped_by_recorded(tmp_path):
    ds = make_dataset(tmp_path, {"a": 9}, groups=lambda lab, i: str(i // 3))
    load_or_create_split(ds)
    assert read_split(tmp_path / "m.split.json")["grouped_by"] == "group"


def test_reuse_existing_file(tmp_path):
    ds = make_dataset(tmp_path, SIZES)
    path = tmp_path / "m.split.json"
    hand = {i: ("test" if k % 3 == 0 else "train") for k, i in enumerate(ds.ids)}
    write_split(path, hand, seed=0, ratios=(0.7, 0.15, 0.15), grouped_by=None)
    before = path.read_bytes()
    assert load_or_create_split(ds) == hand
    with pytest.warns(UserWarning, match="reusing the existing split"):
        assert load_or_create_split(ds, SplitConfig(seed=9)) == hand
    assert path.read_bytes() == before


def test_refuses_mismatched_file(tmp_path):
    ds = make_dataset(tmp_path, {"a": 10, "b": 10})
    path = tmp_path / "m.split.json"
    load_or_create_split(ds)
    before = path.read_bytes()
    bigger = make_dataset(tmp_path, {"a": 11, "b": 10})
    with pytest.raises(SplitError) as info:
        load_or_create_split(bigger)
    msg = str(info.value)
    assert "a-010" in msg and "delete" in msg and str(path) in msg
    assert path.read_bytes() == before
    other = tmp_path / "other.json"
    assert set(load_or_create_split(bigger, path=other)) == set(bigger.ids)


def test_bad_split_files(tmp_path):
    p = tmp_path / "x.json"
    p.write_text("{not json")
    with pytest.raises(SplitError, match="cannot read"):
        read_split(p)
    p.write_text(json.dumps({"format": "other", "assignment": {}}))
    with pytest.raises(SplitError, match="not a split file"):
        read_split(p)
    p.write_text(json.dumps({"format": "mmengine-split/1", "assignment": {"a": "dev"}}))
    with pytest.raises(SplitError, match="split must be one of"):
        read_split(p)
    with pytest.raises(ValueError):
        write_split(p, {"a": "dev"}, seed=0, ratios=(0.7, 0.15, 0.15), grouped_by=None)


def test_folder_dataset_default_path(tmp_path):
    ds = make_dataset(tmp_path, {"a": 5})
    ds.source = tmp_path
    assert default_split_path(ds) == Path(tmp_path) / "split.json"


def test_bad_ratios(tmp_path):
    ds = make_dataset(tmp_path, {"a": 5})
    with pytest.raises(ValueError, match="ratios"):
        make_split(ds, SplitConfig(ratios=(0.5, 0.2, 0.2)))


def test_extends_with_new_records_of_training_groups_only(tmp_path):
    """Extra renderings of training tunes (``data build --train-renderings``) join ``train``;
    a new record of a val/test group, of a new group or without a group is still refused."""
    def grouped(sizes):
        return make_dataset(tmp_path, sizes, groups=lambda lab, i: f"{lab}-g{i // 2}")

    ds = grouped({"a": 20, "b": 20})
    path = tmp_path / "m.split.json"
    base = load_or_create_split(ds)
    train_group = next(r.group for r in ds.records if base[r.id] == "train")
    held_group = next(r.group for r in ds.records if base[r.id] == "test")

    def with_new(group):
        more = grouped({"a": 20, "b": 20})
        src = next(r for r in more.records if r.group == train_group)
        new = type(src)(id=src.id + "-x", path=src.path, labels=src.labels, group=group,
                        line=len(more.records) + 2)
        more.records.append(new)
        return more, new.id

    before = path.read_bytes()
    for group in (held_group, "never-seen", None):
        bigger, _ = with_new(group)
        with pytest.raises(SplitError, match="groups whose every record is in train"):
            load_or_create_split(bigger)
        assert path.read_bytes() == before
    bigger, new_id = with_new(train_group)
    with pytest.warns(UserWarning, match="extending the persisted split with 1 new training"):
        got = load_or_create_split(bigger)
    assert got[new_id] == "train" and list(got) == bigger.ids
    assert all(got[i] == s for i, s in base.items())
    doc = read_split(path)
    assert doc["assignment"] == got and doc["counts"]["train"] == Counter(base.values())["train"] + 1
    assert doc["grouped_by"] == "group"
    assert load_or_create_split(bigger) == got  # now it matches: read as is, no warning
