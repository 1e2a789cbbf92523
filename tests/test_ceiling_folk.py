"""The folk label-noise measurement (``mmengine.data.corpus.ceiling folk``) on hand-made MIDI
files: the same melody in two collections is found whatever its transposition and tempo, and
the agreement of its labels is counted."""
import json

import numpy as np
import pytest

pretty_midi = pytest.importorskip("pretty_midi")

from mmengine.data.corpus import ceiling  # noqa: E402


def _write_midi(path, pitches, seconds_per_note, transpose=0):
    pm = pretty_midi.PrettyMIDI()
    inst = pretty_midi.Instrument(program=40)
    for i, p in enumerate(pitches):
        t = i * seconds_per_note
        inst.notes.append(pretty_midi.Note(velocity=90, pitch=int(p) + transpose, start=t,
                                           end=t + 0.9 * seconds_per_note))
        # a lower voice under every other note: the top voice is the melody
        if i % 2 == 0:
            inst.notes.append(pretty_midi.Note(velocity=60, pitch=int(p) + transpose - 12,
                                               start=t, end=t + seconds_per_note))
    pm.instruments.append(inst)
    pm.write(str(path))


def _melody(seed, n=64):
    rng = np.random.default_rng(seed)
    return 60 + np.cumsum(rng.integers(-4, 5, n)) % 24


def test_melody_grams_ignore_transposition_tempo_and_lower_voices(tmp_path):
    m = _melody(0)
    _write_midi(tmp_path / "a.mid", m, 0.2)
    _write_midi(tmp_path / "b.mid", m, 0.13, transpose=5)
    _write_midi(tmp_path / "c.mid", _melody(1), 0.2)
    a, b, c = (ceiling.melody_grams(tmp_path / f"{k}.mid") for k in "abc")
    assert a == b and len(a) > 40
    assert len(a & c) / len(a | c) < 0.1


def test_editor_agreement_counts_pairs_across_collections(tmp_path, monkeypatch):
    monkeypatch.setenv("MMENGINE_DATA_DIR", str(tmp_path))
    root = tmp_path / "folk"
    (root / "midi").mkdir(parents=True)
    tunes = [  # (id, collection, melody seed, label, split)
        ("a1", "ryans", 10, "reel", "train"), ("a2", "oneills", 10, "reel", "train"),
        ("b1", "ryans", 11, "reel", "train"), ("b2", "oneills", 11, "hornpipe", "train"),
        ("c1", "ryans", 12, "jig", "test"), ("c2", "ryans", 12, "jig", "test"),
        ("d1", "oneills", 13, "jig", "val"),
    ]
    rows, assignment = [], {}
    for i, (rid, coll, seed, label, split) in enumerate(tunes):
        _write_midi(root / "midi" / f"{rid}.mid", _melody(seed), 0.15 + 0.01 * i, transpose=i)
        rows.append({"id": rid, "label": label, "group": rid[0], "rendering": 0,
                     "source": f"{coll}/{rid}.abc", "midi_path": f"midi/{rid}.mid"})
        assignment[rid] = split
    (root / "manifest.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (root / "manifest.split.json").write_text(json.dumps({"assignment": assignment}))
    r = ceiling.editor_agreement("folk", progress=False)
    assert (r["pairs"], r["agree"]) == (2, 1)  # a1~a2 agree, b1~b2 do not; c is one collection
    assert r["disagreements"] == {"hornpipe|reel": 1}
    assert r["within_collection"] == {"pairs": 1, "agree": 1}
    assert r["conflicting_groups"] == {"train": 1}
    assert r["pairs_across_splits"] == 0
    assert r["per_editor_error"] == pytest.approx(0.5)  # agreement 0.5: e = 1/2
    lo, hi = r["interval95"]
    assert lo < 0.5 < hi
    assert json.loads((root / "agreement.json").read_text())["pairs"] == 2
    # the data card shows it, with what it means on the test split (here: no test clip is a
    # reel or hornpipe, so no estimate is given)
    from mmengine.data.corpus.card import _agreement_section

    text = _agreement_section(root, "folk")
    assert "1 carry the same type (agreement 0.500" in text
    assert "hornpipe vs reel 1" in text and "test labels" not in text
    assignment["c1"] = assignment["c2"] = "test"
    rows[4]["label"] = rows[5]["label"] = "reel"
    (root / "manifest.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    text = _agreement_section(root, "folk")
    assert "The test split holds 2 clips of those types of 2: about 1 test labels" in text
