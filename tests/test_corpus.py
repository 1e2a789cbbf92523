"""The built-in data set builder on a tiny --limit build (real music21 scores, real rendering)."""
from __future__ import annotations

import itertools
import json

import numpy as np
import pytest
import soundfile as sf

pytest.importorskip("music21")
pytest.importorskip("tinysoundfont")

from mmengine.data.corpus import build_dataset  # noqa: E402
from mmengine.data.corpus import recipes, render  # noqa: E402
from mmengine.data.corpus.build import run_job  # noqa: E402
from mmengine.data.manifest import load_manifest  # noqa: E402


@pytest.fixture(scope="module")
def folk(tmp_path_factory):
    out = tmp_path_factory.mktemp("folk")
    return build_dataset("folk", out, limit=8, workers=2, progress=False)


def _rows(manifest):
    return [json.loads(x) for x in manifest.read_text().splitlines()]


def test_manifest_is_valid_and_covers_classes(folk):
    ds = load_manifest(folk)
    assert len(ds.records) == 8
    assert set(ds.labels) == {"hornpipe", "jig", "reel", "slip jig"}
    for r in _rows(folk):
        assert {"program", "transpose", "tempo_bpm", "soundfont", "source", "tune_index"} <= set(r)
        assert "Z:" not in json.dumps(r) and "B:" not in json.dumps(r)


def test_clips_are_30s_rms_normalised_without_silence_gaps(folk):
    for r in _rows(folk):
        y, sr = sf.read(folk.parent / r["path"], dtype="float32")
        assert sr == 22050 and y.shape == (30 * 22050,)
        rms_db = 20 * np.log10(np.sqrt(np.mean(y.astype(np.float64) ** 2)))
        assert abs(rms_db - render.TARGET_DBFS) < 0.5 or np.abs(y).max() > 0.99
        quiet = np.abs(y) < 1e-4
        longest = max((len(list(g)) for k, g in itertools.groupby(quiet) if k), default=0)
        assert longest < 22050 // 2, f"{r['id']}: {longest} near-silent samples in a row"


def test_titles_carry_no_type_words(folk):
    for r in _rows(folk):
        assert not recipes.TYPE_WORDS.search(r["title"] or ""), r["title"]
    assert recipes.strip_title("ACROBAT'S -- HORNPIPE") == "ACROBAT'S"
    assert recipes.strip_title("Drop of Whiskey -- slipjig") == "Drop of Whiskey"


def test_split_keeps_groups_together(folk):
    split = json.loads((folk.parent / "manifest.split.json").read_text())
    assert split["format"] == "mmengine-split/1" and split["grouped_by"] == "group"
    where = {}
    for r in _rows(folk):
        where.setdefault(r["group"], set()).add(split["assignment"][r["id"]])
    assert all(len(v) == 1 for v in where.values())


def test_rerun_is_resumable_and_deterministic(folk, tmp_path):
    before = {p.name: p.read_bytes() for p in (folk.parent / "audio").iterdir()}
    again = build_dataset("folk", folk.parent, limit=8, workers=1, progress=False)
    assert {p.name: p.read_bytes() for p in (again.parent / "audio").iterdir()} == before
    fresh = build_dataset("folk", tmp_path / "b", limit=2, workers=1, progress=False)
    for r in _rows(fresh):
        a, _ = sf.read(fresh.parent / r["path"])
        b, _ = sf.read(folk.parent / r["path"])
        np.testing.assert_array_equal(a, b)


def test_broken_tune_is_counted_not_dropped(tmp_path):
    item = {"source": "ryansMammoth/does-not-exist.abc", "tune_index": 0, "label": "reel",
            "group": "x", "title": "x"}
    res = run_job("folk", item, 0, 0, str(tmp_path), 22050, 30.0)
    assert "failure" in res and res["failure"]["label"] == "reel"
    assert "FileNotFoundError" in res["failure"]["reason"]


def test_beat_of_meter():
    assert render.beat_quarters("6/8") == 1.5 and render.beat_quarters("9/8") == 1.5
    assert render.beat_quarters("C|") == 2.0 and render.beat_quarters("2/4") == 1.0
