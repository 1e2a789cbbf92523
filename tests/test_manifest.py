"""Manifests (CSV/JSONL) and folder data sets: parsing, path resolution, validation."""
from __future__ import annotations

import json
import os
import re

import numpy as np
import pytest

from mmengine.data.manifest import load_dataset, load_folder, load_manifest
from mmengine.errors import ManifestError


def touch(path, data=b"RIFF"):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


@pytest.fixture
def audio_dir(tmp_path):
    for name in ("a.wav", "b.flac", "c.ogg", "sub/d.mp3"):
        touch(tmp_path / "audio" / name)
    return tmp_path


def test_csv_relative_paths_and_columns(audio_dir):
    (audio_dir / "lyr.txt").write_text("  la la land \n", encoding="utf-8")
    m = audio_dir / "data.csv"
    m.write_text(
        "path,label,title,lyrics_path,artist,mood\n"
        "audio/a.wav,reel,The First,lyr.txt,Ann,happy\n"
        f"{audio_dir / 'audio' / 'b.flac'}, jig ,,,,\n",
        encoding="utf-8",
    )
    ds = load_manifest(m)
    assert [r.id for r in ds.records] == ["audio/a.wav", str(audio_dir / "audio" / "b.flac")]
    a, b = ds.records
    assert a.path == (audio_dir / "audio" / "a.wav").resolve() and a.path.is_absolute()
    assert a.labels == ("reel",) and b.labels == ("jig",)
    assert a.lyrics == "  la la land \n" and b.lyrics is None
    assert a.title == "The First" and b.title is None
    assert a.artist == "Ann" and a.extra == {"mood": "happy"}
    assert (a.line, b.line) == (2, 3)
    assert ds.labels == ["jig", "reel"] and not ds.multilabel
    np.testing.assert_array_equal(ds.label_indices(), [1, 0])
    assert ds.label_indices().dtype == np.int64


def test_jsonl_multilabel_ids_groups_and_extra(audio_dir):
    (audio_dir / "x.mid").write_bytes(b"MThd")
    rows = [
        {"id": "s1", "path": "audio/a.wav", "label": "rock|pop", "group": "g1",
         "midi_path": "x.mid", "lyrics": "hello", "meta": {"year": 1999}},
        {"id": "s2", "path": "audio/b.flac", "label": ["pop", " jazz "]},
        {"id": "s3", "path": "audio/sub/d.mp3", "label": "jazz", "lyrics": "   "},
    ]
    m = audio_dir / "d.jsonl"
    m.write_text("\n".join(json.dumps(r) for r in rows[:2]) + "\n\n" + json.dumps(rows[2]) + "\n")
    ds = load_manifest(m)
    assert ds.multilabel and ds.labels == ["jazz", "pop", "rock"]
    assert [r.line for r in ds.records] == [1, 2, 4]
    s1, s2, s3 = ds.records
    assert s1.labels == ("rock", "pop") and s2.labels == ("pop", "jazz")
    assert s1.group == "g1" and s2.group is None
    assert s1.midi_path == (audio_dir / "x.mid").resolve()
    assert s1.extra == {"meta": {"year": 1999}}
    assert s3.lyrics is None
    y = ds.label_indices()
    assert y.dtype == np.float32 and y.shape == (3, 3)
    np.testing.assert_array_equal(y, [[0, 1, 1], [1, 1, 0], [1, 0, 0]])


def test_every_bad_row_listed_with_line_numbers(audio_dir):
    m = audio_dir / "bad.csv"
    m.write_text(
        "id,path,label,lyrics_path\n"
        "1,audio/a.wav,reel,\n"       # line 2 ok
        "2,,reel,\n"                  # line 3 empty path
        "3,audio/b.flac,,\n"          # line 4 missing label
        "1,audio/c.ogg,jig,\n"        # line 5 duplicate id
        "5,audio/nope.wav,jig,\n"     # line 6 missing audio
        "6,audio/c.ogg,jig,gone.txt\n"  # line 7 missing lyrics file
        "7,audio/c.ogg,jig,,extra\n",   # line 8 too many fields
        encoding="utf-8",
    )
    with pytest.raises(ManifestError) as info:
        load_manifest(m)
    probs = info.value.problems
    assert all(re.match(r"line \d+: ", p) for p in probs), probs
    lines = sorted(int(p.split(":")[0].split()[1]) for p in probs)
    assert lines == [3, 4, 5, 6, 7, 8], probs
    text = "\n".join(probs)
    assert "duplicate id '1' (first on line 2)" in text
    assert "nope.wav" in text and "gone.txt" in text
    assert str(m.resolve()) in str(info.value)


def test_jsonl_bad_lines_collected(audio_dir):
    m = audio_dir / "bad.jsonl"
    m.write_text('{"path": "audio/a.wav", "label": "x"}\n{oops\n[1, 2]\n{"label": "y"}\n')
    with pytest.raises(ManifestError) as info:
        load_manifest(m)
    probs = info.value.problems
    assert len(probs) == 3
    assert probs[0].startswith("line 2: bad JSON")
    assert probs[1].startswith("line 3: expected a JSON object")
    assert probs[2].startswith("line 4: missing or empty 'path'")


def test_header_without_required_columns(audio_dir):
    m = audio_dir / "h.csv"
    m.write_text("file,genre\naudio/a.wav,reel\n")
    with pytest.raises(ManifestError) as info:
        load_manifest(m)
    assert [p[:7] for p in info.value.problems] == ["line 1:", "line 1:"]


@pytest.mark.parametrize("content", ["", "path,label\n", "\n\n"])
def test_empty_manifest(tmp_path, content):
    m = tmp_path / ("e.jsonl" if content.startswith("\n") else "e.csv")
    m.write_text(content)
    with pytest.raises(ManifestError) as info:
        load_manifest(m)
    assert info.value.problems == ["no records"]


def test_non_utf8_manifest_and_lyrics_warn(audio_dir):
    (audio_dir / "l.txt").write_bytes(b"caf\xe9 au lait")
    m = audio_dir / "latin.csv"
    m.write_bytes(b"path,label,lyrics_path,title\naudio/a.wav,reel,l.txt,Caf\xe9\n")
    with pytest.warns(UnicodeWarning) as rec:
        ds = load_manifest(m)
    messages = [str(w.message) for w in rec]
    assert any("latin.csv" in msg for msg in messages)
    assert any("l.txt" in msg for msg in messages)
    assert ds.records[0].lyrics == "caf\ufffd au lait"
    assert ds.records[0].title == "Caf\ufffd"


def test_both_lyrics_and_lyrics_path_is_a_problem(audio_dir):
    (audio_dir / "l.txt").write_text("words")
    m = audio_dir / "both.jsonl"
    m.write_text(json.dumps({"path": "audio/a.wav", "label": "x", "lyrics": "a",
                             "lyrics_path": "l.txt"}) + "\n")
    with pytest.raises(ManifestError, match="both 'lyrics' and 'lyrics_path'"):
        load_manifest(m)


def test_folder_layout_and_sidecars(tmp_path):
    root = tmp_path / "data"
    touch(root / "reel" / "r1.wav")
    touch(root / "reel" / "deep" / "r2.FLAC")
    touch(root / "jig" / "j1.ogg")
    (root / "jig" / "j1.txt").write_text("jig words")
    touch(root / "jig" / "j1.mid", b"MThd")
    touch(root / "jig" / "notes.pdf")
    touch(root / ".hidden" / "x.wav")
    ds = load_folder(root)
    assert [r.id for r in ds.records] == ["jig/j1.ogg", "reel/deep/r2.FLAC", "reel/r1.wav"]
    assert [r.labels for r in ds.records] == [("jig",), ("reel",), ("reel",)]
    assert ds.records[0].lyrics == "jig words"
    assert ds.records[0].midi_path == (root / "jig" / "j1.mid").resolve()
    assert ds.records[1].lyrics is None and ds.records[1].midi_path is None
    assert ds.labels == ["jig", "reel"] and ds.source == root.resolve()
    assert load_dataset(root).ids == ds.ids


def test_folder_problems(tmp_path):
    root = tmp_path / "data"
    touch(root / "loose.wav")
    touch(root / "reel" / "r1.wav")
    with pytest.raises(ManifestError, match="loose.wav: audio file directly"):
        load_folder(root)
    empty = tmp_path / "empty"
    (empty / "reel").mkdir(parents=True)
    with pytest.raises(ManifestError, match="no records"):
        load_folder(empty)


def test_load_dataset_dispatch(audio_dir):
    m = audio_dir / "ok.csv"
    m.write_text("path,label\naudio/a.wav,reel\n")
    assert load_dataset(m).source == m.resolve()
    with pytest.raises(ManifestError, match="no such file"):
        load_dataset(audio_dir / "missing.csv")
    (audio_dir / "x.tsv").write_text("path\tlabel\n")
    with pytest.raises(ManifestError, match="unknown manifest type"):
        load_dataset(audio_dir / "x.tsv")


def test_csv_line_numbers_follow_multiline_fields(audio_dir):
    m = audio_dir / "multi.csv"
    m.write_text('path,label,lyrics\naudio/a.wav,reel,"one\ntwo\nthree"\n\naudio/b.flac,,\n')
    with pytest.raises(ManifestError) as info:
        load_manifest(m)
    assert info.value.problems == ["line 6: missing or empty 'label'"]
    m.write_text('path,label,lyrics\naudio/a.wav,reel,"one\ntwo"\naudio/b.flac,jig,\n')
    ds = load_manifest(m)
    assert [r.line for r in ds.records] == [2, 4]
    assert ds.records[0].lyrics == "one\ntwo"


def test_nul_byte_in_a_path_is_a_manifest_problem(tmp_path):
    """Found by tests/fuzz/pyfuzz.py: a NUL byte made Path.resolve raise ValueError."""
    m = tmp_path / "m.jsonl"
    m.write_text(json.dumps({"path": "a.wav", "label": "x"}) + "\n" +
                 json.dumps({"path": "a\x00.wav", "label": "x", "lyrics_path": "l\x00"}) + "\n")
    with pytest.raises(ManifestError) as err:
        load_manifest(m)
    assert "line 2: 'path' contains a NUL byte" in str(err.value)
    assert "line 2: 'lyrics_path' contains a NUL byte" in str(err.value)


@pytest.mark.skipif(not os.path.exists("/proc/self/mem"), reason="Linux /proc")
def test_unreadable_regular_file_is_an_input_file_error():
    """Found by tests/fuzz/pyfuzz.py: /proc/self/mem stats as a regular file of 0 bytes and
    its read fails with EIO; a lyrics_path naming it must give a typed error."""
    from mmengine.data.manifest import read_text
    from mmengine.errors import InputFileError

    with pytest.raises(InputFileError, match="Input/output error"):
        read_text("/proc/self/mem", what="lyrics file")


def test_tilde_of_an_unknown_user_is_a_plain_name(tmp_path):
    """Found by tests/fuzz/pyfuzz.py: Path('~nosuchuser').expanduser() raises RuntimeError."""
    m = tmp_path / "m.jsonl"
    m.write_text(json.dumps({"path": "~nosuchuser_mmengine/a.wav", "label": "x"}) + "\n")
    with pytest.raises(ManifestError, match="line 1: audio file not found"):
        load_manifest(m)


def test_unencodable_path_is_a_manifest_problem(tmp_path):
    """Found by tests/fuzz/pyfuzz.py: a lone surrogate (a JSON escape) in a path made
    Path.resolve raise UnicodeEncodeError."""
    m = tmp_path / "m.jsonl"
    m.write_text('{"path": "a\\udbbd.wav", "label": "x"}\n')
    with pytest.raises(ManifestError, match="line 1: 'path' cannot be a file name"):
        load_manifest(m)
