"""The built-in data set builder on tiny --limit builds (real music21 scores, real rendering)."""
from __future__ import annotations

import itertools
import json
from collections import Counter

import numpy as np
import pytest
import soundfile as sf

pytest.importorskip("music21")
pytest.importorskip("tinysoundfont")

from mmengine.data.corpus import TASKS, build_dataset, default_manifest  # noqa: E402
from mmengine.data.corpus import recipes, render  # noqa: E402
from mmengine.data.corpus.build import build_items, job_id, select_jobs  # noqa: E402
from mmengine.data.manifest import load_manifest  # noqa: E402

FOLK_CLASSES = {"hornpipe", "jig", "reel", "slip jig"}
KEYS = {"id", "path", "label", "title", "lyrics", "midi_path", "group", "source", "tune_index",
        "program", "transpose", "tempo_bpm", "beat", "soundfont", "seed"}


def _rows(manifest):
    return [json.loads(x) for x in manifest.read_text(encoding="utf-8").splitlines()]


def _split(manifest):
    return json.loads(manifest.with_name("manifest.split.json").read_text())


@pytest.fixture(scope="module")
def folk(tmp_path_factory):
    return build_dataset("folk", tmp_path_factory.mktemp("folk"), limit=8, workers=2,
                         progress=False)


@pytest.fixture(scope="module")
def vocal(tmp_path_factory):
    return build_dataset("vocal", tmp_path_factory.mktemp("vocal"), limit=4, workers=2,
                         progress=False)


def test_tasks_and_default_folder(monkeypatch, tmp_path):
    assert {"folk", "vocal"} <= set(TASKS)
    monkeypatch.setenv("MMENGINE_DATA_DIR", str(tmp_path))
    assert default_manifest("folk") == tmp_path / "folk" / "manifest.jsonl"
    with pytest.raises(ValueError, match="folk"):
        build_dataset("nope", tmp_path)


def test_folk_rows_are_valid_and_cover_the_classes(folk):
    ds = load_manifest(folk)
    rows = _rows(folk)
    assert len(ds.records) == len(rows) == 8
    assert {r["label"] for r in rows} == FOLK_CLASSES
    for r in rows:
        assert KEYS <= set(r), set(KEYS) - set(r)
        assert r["lyrics"] is None and r["title"]
        assert not recipes.TYPE_WORDS.search(r["title"]), r["title"]
        assert r["path"] == f"audio/{r['id']}.flac" and r["midi_path"] == f"midi/{r['id']}.mid"
        assert (folk.parent / r["midi_path"]).stat().st_size > 100
        assert r["label"].split()[0] not in r["id"]  # ids are opaque
        text = json.dumps(r)
        assert "Z:" not in text and "B:" not in text and "Contributed" not in text
        assert r["program"] in render.FOLK_PROGRAMS and -5 <= r["transpose"] <= 5
        assert render.BEAT_BPM[0] <= r["tempo_bpm"] <= render.BEAT_BPM[1]
    assert len({r["id"] for r in rows}) == 8


def test_vocal_rows_have_german_lyrics_and_a_mode(vocal):
    rows = _rows(vocal)
    assert {r["label"] for r in rows} == {"major", "minor"}
    for r in rows:
        assert r["title"] is None and len(r["lyrics"].split()) >= 5
        assert r["program"] in render.VOCAL_PROGRAMS
    assert any(w in " ".join(r["lyrics"] for r in rows).lower().split()
               for w in ("und", "der", "die", "das", "ich", "du", "in", "mein"))


@pytest.mark.parametrize("which", ["folk", "vocal"])
def test_clips_are_30s_rms_normalised_without_silence_gaps(which, request):
    manifest = request.getfixturevalue(which)
    for r in _rows(manifest):
        info = sf.info(str(manifest.parent / r["path"]))
        assert info.format == "FLAC" and info.subtype == "PCM_16"
        y, sr = sf.read(manifest.parent / r["path"], dtype="float64")
        assert sr == 22050 and y.shape == (30 * 22050,)
        rms_db = 20 * np.log10(np.sqrt(np.mean(y ** 2)))
        peak = np.abs(y).max()
        assert abs(rms_db - render.TARGET_DBFS) < 0.1 or (peak > 0.99 and rms_db < -20), \
            (r["id"], rms_db, peak)
        zero = max((len(list(g)) for k, g in itertools.groupby(y == 0) if k), default=0)
        assert zero < 0.05 * sr, f"{r['id']}: {zero} zero samples in a row"
        tail = np.sqrt(np.mean(y[-sr:] ** 2))  # the end is as loud as the rest: looped
        assert 20 * np.log10(tail) > rms_db - 12


def test_strip_title():
    assert recipes.strip_title("ACROBAT'S -- HORNPIPE") == "Acrobat's"
    assert recipes.strip_title("Drop of Whiskey -- slipjig") == "Drop Of Whiskey"
    assert recipes.strip_title("T: Spotted Cow, The") == "The Spotted Cow"
    assert recipes.strip_title("Miss Monroe's Double Jig (2)") == "Miss Monroe's"
    assert recipes.normalise_title("The Spotted Cow") == recipes.normalise_title("spotted cow")
    assert recipes.title_types("Paddy's Slip Jig") == {"slip jig"}


def test_shipped_recipes_are_balanced_and_clean():
    folk = recipes.load_recipe("folk")
    clips = Counter()
    per_coll = Counter()
    for it in folk:
        assert it["label"] in FOLK_CLASSES
        assert not recipes.TYPE_WORDS.search(it["title"]), it["title"]
        assert set(it) == {"source", "tune_index", "x", "label", "title", "group", "renderings"}
        clips[it["label"]] += it["renderings"]
        per_coll[it["label"], it["source"].split("/")[0]] += it["renderings"]
    assert max(clips.values()) <= recipes.MAX_CLASS_RATIO * min(clips.values())
    for label in FOLK_CLASSES:  # the collection says (almost) nothing about the class
        a, b = (per_coll[label, c] for c in recipes.COLLECTIONS)
        assert abs(a - b) <= 0.05 * (a + b), (label, a, b)
    vocal = recipes.load_recipe("vocal")
    assert {it["label"] for it in vocal} == {"major", "minor"}
    assert all(it["source"].startswith("bach/") for it in vocal)


def test_limit_spreads_over_classes():
    jobs = select_jobs("folk", recipes.load_recipe("folk"), 12)
    assert Counter(it["label"] for it, _ in jobs) == {c: 3 for c in FOLK_CLASSES}
    assert len({it["source"].split("/")[0] for it, _ in jobs}) == 2


def test_split_is_grouped_and_consistent(folk, vocal):
    for manifest in (folk, vocal):
        split = _split(manifest)
        assert split["format"] == "mmengine-split/1" and split["grouped_by"] == "group"
        assert split["ratios"] == [0.7, 0.15, 0.15] and split["seed"] == 0
        rows = _rows(manifest)
        assert set(split["assignment"]) == {r["id"] for r in rows}
        assert sum(split["counts"].values()) == len(rows)
        where = {}
        for r in rows:
            where.setdefault(r["group"], set()).add(split["assignment"][r["id"]])
        assert all(len(v) == 1 for v in where.values())


def test_rerun_is_resumable_and_deterministic(folk, tmp_path):
    out = folk.parent
    before = {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in (out / "audio").iterdir()}
    stale = out / "audio" / "folk-0000000000-r0.flac"
    stale.write_bytes(b"left over from an older recipe")
    again = build_dataset("folk", out, limit=8, workers=1, progress=False)
    assert not stale.exists()
    after = {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in (out / "audio").iterdir()}
    assert after == before  # nothing rendered again
    last = json.loads((out / "build.json").read_text())["runs"][-1]
    assert last["reused"] == 8 and last["rendered"] == 0
    assert again.read_bytes() == folk.read_bytes()
    fresh = build_dataset("folk", tmp_path / "fresh", limit=2, workers=1, progress=False)
    for r in _rows(fresh):  # rendered again from scratch: the same bytes
        assert (fresh.parent / r["path"]).read_bytes() == (out / r["path"]).read_bytes()
        assert (fresh.parent / r["midi_path"]).read_bytes() == (out / r["midi_path"]).read_bytes()


def test_another_seed_renders_again(folk, tmp_path):
    other = build_dataset("folk", tmp_path, limit=2, seed=1, workers=1, progress=False)
    rows0 = {r["id"]: r for r in _rows(folk)}
    rows1 = _rows(other)
    assert all(r["seed"] == 1 for r in rows1)
    assert any((r["program"], r["transpose"], r["tempo_bpm"]) != (rows0[r["id"]]["program"],
               rows0[r["id"]]["transpose"], rows0[r["id"]]["tempo_bpm"]) for r in rows1)
    redo = build_dataset("folk", tmp_path, limit=2, seed=0, workers=1, progress=False)
    for r in _rows(redo):  # rows of seed 1 in the folder are not reused for seed 0
        assert r["seed"] == 0 and r["program"] == rows0[r["id"]]["program"]


def test_broken_tunes_are_counted_not_dropped(tmp_path):
    broken = tmp_path / "broken.abc"
    broken.write_text("X:1\nT:No Notes At All\nM:6/8\nL:1/8\nK:G\n|]\n", encoding="latin-1")
    good = next(it for it in recipes.load_recipe("folk") if it["label"] == "reel")
    items = [good,
             {"source": str(broken), "tune_index": 0, "label": "jig", "title": "x",
              "group": "x", "renderings": 1},
             {"source": "ryansMammoth/NoSuchFile.abc", "tune_index": 0, "label": "jig",
              "title": "y", "group": "y", "renderings": 1}]
    manifest = build_items("folk", items, tmp_path / "out", workers=1, progress=False)
    assert [r["label"] for r in _rows(manifest)] == ["reel"]
    failures = _rows(manifest.with_name("failures.jsonl"))
    assert sorted(f["id"] for f in failures) == sorted(job_id("folk", it, 0) for it in items[1:])
    reasons = {f["source"]: f["reason"] for f in failures}
    assert "expand" in reasons[str(broken)] and "as-written" in reasons[str(broken)]
    assert "FileNotFoundError" in reasons["ryansMammoth/NoSuchFile.abc"]
    card = manifest.with_name("DATA.md").read_text()
    assert "2 renderings failed" in card and "| jig | 2 |" in card


def test_repeats_are_expanded_with_fallbacks():
    from music21 import converter

    head = "X:1\nT:t\nM:2/4\nL:1/8\nK:C\n"
    score = converter.parse(head + "|:CDEF|GABc:|\ncdef|gfed|]\n", format="abc")
    notes = render.score_notes(score)
    assert notes.fallback == "" and len(notes.pitch) == 24 and notes.length_q == 12.0
    s, e, p = render.loop_notes(notes, 0.5, 10.0)  # 6 s per pass
    assert len(p) == 24 + 16 and np.all(np.diff(s) > 0) and s[24] == pytest.approx(6.0)
    # music21 cannot expand this one (no measures): the fallback plays it as written, and says so
    odd = converter.parse(head + "|:CDEF|GABc:|\n", format="abc")
    notes = render.score_notes(odd)
    assert notes.fallback == "as-written" and len(notes.pitch) == 8


def test_key_events_merge_unisons_and_restrike_repeated_notes():
    # two voices in unison (0-1.5 s and 0.5-2 s): one key held from 0 to 2 s
    assert render.key_events([0.0, 0.5], [1.5, 2.0], [60, 60], 10) == [(0, 1, 60), (20, 0, 60)]
    # a repeated note: released, then struck again at the same instant
    assert render.key_events([0.0, 1.0], [1.0, 2.0], [62, 62], 10) == \
        [(0, 1, 62), (10, 0, 62), (10, 1, 62), (20, 0, 62)]


def test_beat_of_meter():
    assert render.beat_quarters("6/8") == 1.5 and render.beat_quarters("9/8") == 1.5
    assert render.beat_quarters("C|") == 2.0 and render.beat_quarters("2/4") == 1.0
    assert render.beat_quarters("3/4") == 1.0 and render.beat_quarters("12/8") == 1.5


def test_baselines_and_card_on_a_small_build(tmp_path):
    from mmengine.data.corpus import card
    from mmengine.features.data_baselines import baselines

    manifest = build_dataset("folk", tmp_path, limit=16, workers=2, progress=False)
    res = baselines(manifest)
    scores = res["scores"]
    assert scores["chance"] == 0.25 and res["n_test"] >= 4
    for name in ("MFCC mean/std", "symbolic mean/std", "title TF-IDF",
                 "leak check: render settings (program, transposition, tempo)"):
        assert 0.0 <= scores[name] <= 1.0, name
    (tmp_path / "baselines.json").write_text(json.dumps(res))
    text = card.render_card("folk", tmp_path).read_text()
    assert "| symbolic mean/std |" in text and "stale" not in text


# ------------------------------------------------- extra training renderings (issue 12)
def _files(out, ids):
    """{relative path: bytes} of the row, audio and MIDI files of ``ids``."""
    return {f"{sub}/{i}{suf}": (out / sub / f"{i}{suf}").read_bytes()
            for i in ids for sub, suf in (("rows", ".json"), ("audio", ".flac"), ("midi", ".mid"))}


def _tune(row):
    return row["id"].rsplit("-r", 1)[0]


@pytest.fixture(scope="module")
def plain16(tmp_path_factory):
    """16 clips (4 per class: every split holds some), built without extras."""
    return build_dataset("folk", tmp_path_factory.mktemp("plain16"), limit=16, workers=1,
                         progress=False)


@pytest.fixture(scope="module")
def extra16(tmp_path_factory):
    """The same 16 clips built with ``train_renderings=1`` into a fresh folder (no split yet:
    the normal data set is built and split first, then the extras are added)."""
    return build_dataset("folk", tmp_path_factory.mktemp("extra16"), limit=16, workers=1,
                         progress=False, train_renderings=1)


def test_train_renderings_add_one_per_training_tune_and_leave_val_test_alone(plain16, extra16):
    base, ext = _rows(plain16), _rows(extra16)
    split0, split1 = _split(plain16)["assignment"], _split(extra16)["assignment"]
    extras = [r for r in ext if r.get("extra")]
    assert [r for r in ext if not r.get("extra")] == base  # base rows unchanged
    train_tunes = {_tune(r) for r in base if split0[r["id"]] == "train"}
    assert sorted(_tune(r) for r in extras) == sorted(train_tunes)  # exactly one each
    assert set(split0.values()) == {"train", "val", "test"}  # the fixture holds every split
    items = {(it["source"], it["tune_index"]): it for it in recipes.load_recipe("folk")}
    by_tune = {_tune(r): r for r in base}
    for r in extras:
        it = items[(r["source"], r["tune_index"])]
        assert r["rendering"] == it["renderings"]  # numbering goes on after the recipe's own
        assert r["id"] == job_id("folk", it, it["renderings"]) and split1[r["id"]] == "train"
        assert r["group"] == by_tune[_tune(r)]["group"] and r["label"] == by_tune[_tune(r)]["label"]
        assert 0 < r["loop_start_q"] and "loop_start_q" not in by_tune[_tune(r)]
        assert (extra16.parent / r["path"]).read_bytes() != \
            (extra16.parent / by_tune[_tune(r)]["path"]).read_bytes()
    assert len({(r["program"], r["transpose"], r["tempo_bpm"]) for r in extras}) > 1
    # the split is the base split, extended: nothing moved, only train ids added
    assert {i: split1[i] for i in split0} == split0 and set(split1) == {r["id"] for r in ext}
    held = [r["id"] for r in base if split0[r["id"]] != "train"]
    assert _files(extra16.parent, held) == _files(plain16.parent, held)
    card = extra16.with_name("DATA.md").read_text()
    assert "--train-renderings 1`" in card and f"{len(extras)} clips of" in card
    assert "| of which extra training renderings | 8 | 0 | 0 | 8 |" in card
    # the feature set (what training and the baselines read) takes the extended split as it
    # is: the extras are training rows, validation and test are the plain build's rows
    from mmengine.api import load_features

    fs = load_features(extra16, progress=False, symbolic=False)[0]
    assert dict(zip(fs.ids, fs.split)) == split1
    assert Counter(fs.split.tolist()) == {"train": 16, "val": 4, "test": 4}


def test_train_renderings_rerun_reuses_and_smaller_n_prunes(plain16, extra16, tmp_path):
    import shutil

    out = tmp_path / "d"
    shutil.copytree(extra16.parent, out)
    before = {p.name: p.stat().st_mtime_ns for p in (out / "audio").iterdir()}
    again = build_dataset("folk", out, limit=16, workers=1, progress=False, train_renderings=1)
    assert {p.name: p.stat().st_mtime_ns for p in (out / "audio").iterdir()} == before
    last = json.loads((out / "build.json").read_text())["runs"][-1]
    assert (last["rendered"], last["extra_rendered"], last["extra_reused"]) == (0, 0, 8)
    assert again.read_bytes() == extra16.read_bytes()
    assert (out / "manifest.split.json").read_bytes() == \
        extra16.with_name("manifest.split.json").read_bytes()
    two = _rows(build_dataset("folk", out, limit=16, workers=1, progress=False,
                              train_renderings=2))
    assert Counter(r["rendering"] > 0 for r in two if r.get("extra")) == {True: 16}
    one = build_dataset("folk", out, limit=16, workers=1, progress=False, train_renderings=1)
    assert one.read_bytes() == extra16.read_bytes()  # the second extras are gone ...
    assert {p.name for p in (out / "audio").iterdir()} == set(before)  # ... with their files
    zero = build_dataset("folk", out, limit=16, workers=1, progress=False)
    assert zero.read_bytes() == plain16.read_bytes()  # N back to 0: the plain build, exactly
    for name in ("manifest.split.json", "failures.jsonl"):
        assert (out / name).read_bytes() == plain16.with_name(name).read_bytes()
    base = [r["id"] for r in _rows(plain16)]
    assert _files(out, base) == _files(plain16.parent, base)
    assert len(list((out / "audio").iterdir())) == len(base)
    with pytest.raises(ValueError, match="train_renderings"):
        build_dataset("folk", out, limit=16, workers=1, progress=False, train_renderings=-1)


def test_train_renderings_keep_the_persisted_split(plain16, tmp_path):
    """A persisted split that differs from the one the builder would make is kept (never made
    again): a group moved by hand from val to train gets its extra rendering too."""
    import shutil

    from mmengine.data.split import read_split, write_split

    out = tmp_path / "e"
    shutil.copytree(plain16.parent, out)
    doc = read_split(out / "manifest.split.json")
    moved = next(i for i, s in doc["assignment"].items() if s == "val")
    hand = dict(doc["assignment"], **{moved: "train"})
    write_split(out / "manifest.split.json", hand, seed=0, ratios=doc["ratios"],
                grouped_by="group")
    m = build_dataset("folk", out, limit=16, workers=1, progress=False, train_renderings=1)
    got = _split(m)["assignment"]
    assert {i: got[i] for i in hand} == hand
    extra_tunes = {_tune(r) for r in _rows(m) if r.get("extra")}
    assert moved.rsplit("-r", 1)[0] in extra_tunes and len(extra_tunes) == 9
