"""The soak of bench/soak.py in small (issue 15, item 6): a few hundred items mixing good files
and every hostile class, through ``Engine.classify`` and the CLI, with a tiny engine built
here; each class gets its expected outcome and every item a result. Whether peak RSS stays
flat is measured by the full run (10,000 items, the folk engine: a command in bench/soak.py,
figures in bench/RESULTS.md), not here: 300 items take a few seconds, mostly warm-up, and two
fresh-clone CI runs saw +36 to +201 MB between the first and last 50 items from start-up alone.
"""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def soak_run(tmp_path_factory):
    work = tmp_path_factory.mktemp("soak")
    out = work / "soak.json"
    r = subprocess.run([sys.executable, str(ROOT / "bench" / "soak.py"), "--tiny", "--items",
                        "300", "--chunk", "50", "--work", str(work), "--json", str(out),
                        "--no-rss-check"],
                       capture_output=True, text=True, timeout=600)
    return r, json.loads(out.read_text()) if out.exists() else None, work


def test_tiny_soak_every_class_gets_its_outcome(soak_run):
    r, doc, _ = soak_run
    assert doc is not None, r.stdout[-3000:] + r.stderr[-3000:]
    assert r.returncode == 0, r.stdout[-4000:]
    assert doc["ok"] and [p["pass"] for p in doc["passes"]] == ["engine", "cli"]
    expect = {c["name"]: c["expect"] for c in doc["classes"]}
    assert {"empty", "not_audio", "truncated_flac", "nan_samples", "missing", "fifo_path",
            "dev_zero_path", "flac_long_total_0", "hostile_midi", "fifo_lyrics",
            "dev_zero_midi"} <= set(expect)
    for p in doc["passes"]:
        assert p["items"] == 300 and not p["mismatches"], p
        for name, counts in p["outcomes"].items():
            assert sum(counts.values()) == 12, (name, counts)  # 300 items / 25 classes
            if expect[name] == "error":
                assert "ok" not in counts, (name, counts)
            if expect[name] == "ok":
                assert set(counts) == {"ok"}, (name, counts)
    cli = doc["passes"][1]
    assert cli["exit_code"] == 3  # mmengine.cli.EXIT_INPUT_FAILED: some inputs failed


def test_cli_prints_unencodable_names_escaped(soak_run, tmp_path):
    """Found by tests/fuzz/pyfuzz.py: a manifest path holding a lone surrogate (a JSON escape)
    was refused by the parser, then printing its result raised UnicodeEncodeError."""
    _, _, work = soak_run
    good = work / "files" / "short.wav"
    m = tmp_path / "m.jsonl"
    m.write_text('{"path": "a\\udbbd.wav"}\n' + json.dumps({"path": str(good)}) + "\n")
    r = subprocess.run([sys.executable, "-m", "mmengine", "classify", str(work / "tiny.mme"),
                        str(m)], capture_output=True, timeout=300)
    out = r.stdout.decode()
    assert r.returncode == 3, r.stderr.decode()[-3000:]
    assert "a\\udbbd.wav" in out and "cannot be a file name" in out and str(good) in out


def test_failed_items_do_not_keep_their_buffers(soak_run, tmp_path):
    """Found by the soak: an item's error kept its traceback, whose frames held the file's
    bytes and decoded arrays until the call returned (the CLI's RSS grew ~150 MB per 1,000
    items of the mix). Peak traced memory of 200 failing items must stay near one item's."""
    import tracemalloc

    import numpy as np
    import soundfile as sf

    from mmengine.runtime import Engine

    _, _, work = soak_run
    src = tmp_path / "noise.flac"
    sf.write(str(src), np.random.default_rng(0).uniform(-0.5, 0.5, 80000), 8000,
             format="FLAC", subtype="PCM_16")
    cut = tmp_path / "cut.flac"
    cut.write_bytes(src.read_bytes()[:src.stat().st_size // 2])
    eng = Engine.load(work / "tiny.mme")
    assert not eng.classify([str(cut)] * 2, workers=1)[0].ok
    tracemalloc.start()
    try:
        res = eng.classify([str(cut)] * 200, workers=1)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert all(r.error_type == "AudioTruncatedError" for r in res)
    one_item = 80000 * 4  # the float32 buffer of the declared length
    assert peak < 20 * one_item, f"peak {peak / 1e6:.1f} MB for 200 failed items"
