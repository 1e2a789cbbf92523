"""``mmengine batch`` / ``batch_classify``: a whole library into one results file, in-process
and on a real local Ray cluster (2 CPUs), resumable and exactly once: a driver killed with
SIGKILL (the CLI in a subprocess) and a Ray actor killed mid-run, then the same command again,
leave every input id once in RESULTS with the prediction a plain ``Engine.classify`` gives.

A tiny real engine (a fusion model with text, built here) classifies real audio files written
by ``audio_fixtures`` (tones and noise), plus broken inputs on purpose."""
from __future__ import annotations

import csv
import importlib.util
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from audio_fixtures import write_garbage, write_noise, write_tone
from mmengine.batch import COLUMNS, PARTS_SUFFIX, ResultStore, batch_classify, file_sha256
from mmengine.batch import read_results
from mmengine.config import AudioConfig, FrontendConfig, TextConfig, first_design, to_dict
from mmengine.errors import BatchError, EngineFileError, ManifestError, OptionalDependencyError
from mmengine.export import build_engine_from_model
from mmengine.features.text import FORMAT, TOKEN_PATTERN, TextVectorizer
from mmengine.models import build_model
from mmengine.runtime import Engine

SR = 8000
AUDIO = AudioConfig(sample_rate=SR, clip_seconds=0.25)
FRONTEND = FrontendConfig(sample_rate=SR, n_fft=256, hop_length=128, n_mels=12, n_mfcc=7)
LABELS = ["air", "jig", "reel", "waltz"]
VOCAB = ["dance", "fiddle", "jig", "reel", "sea", "slow", "song"]
N_GOOD = 48  # real audio files in the library
REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def engine_path(tmp_path_factory):
    torch.manual_seed(5)
    cfg = first_design(hidden_size=16, num_layers=1, stem_stages=1, mfcc_channels=4,
                       mel_channels=4, text_dim=5, pooling="mean",
                       modalities=("mfcc", "mel", "text"))
    vec = TextVectorizer.from_json({
        "format": FORMAT, "config": to_dict(TextConfig()), "token_pattern": TOKEN_PATTERN,
        "vocabulary": VOCAB, "idf": np.linspace(1.0, 2.0, len(VOCAB)).tolist()})
    m = build_model(cfg, dict(n_mfcc=7, n_mels=12, text_dim=len(VOCAB), symbolic_dim=0,
                              n_classes=len(LABELS), multilabel=False))
    with torch.no_grad():  # spread-out logits: rankings that mean something
        m.classifier.head.weight.mul_(8.0)
        m.norm.mfcc_mean.fill_(-20.0)
        m.norm.mfcc_std.fill_(30.0)
        m.norm.mel_mean.fill_(-40.0)
        m.norm.mel_std.fill_(20.0)
    return build_engine_from_model(
        m.eval(), tmp_path_factory.mktemp("engine") / "tiny.mme", backend="native",
        labels=LABELS, audio_cfg=AUDIO, frontend_cfg=FRONTEND, text=vec.to_json(),
        text_field="lyrics")


@pytest.fixture(scope="module")
def library(tmp_path_factory):
    """A folder of real audio (in sub-folders), broken files, and a CSV manifest over it with
    lyrics for some rows, a missing file and a row without a path."""
    root = tmp_path_factory.mktemp("library")
    lib = root / "audio"
    rows = []
    for i in range(N_GOOD):
        sub = lib / f"disc{i % 3}"
        sub.mkdir(parents=True, exist_ok=True)
        p = sub / f"track{i:02d}.{'flac' if i % 2 else 'wav'}"
        if i % 4 == 3:
            write_noise(p, sr=SR, seconds=1.0 + 0.02 * i, amplitude=0.3, seed=i)
        else:
            write_tone(p, freq=110.0 * (1 + i % 7), sr=SR, seconds=0.5 + 0.03 * i)
        rows.append({"id": f"t{i:02d}", "path": str(p.relative_to(root)),
                     "lyrics": ["", "a slow sea song", "fiddle reel dance"][i % 3]})
    (lib / "broken").mkdir()
    write_garbage(lib / "broken" / "garbage.wav")
    (lib / "broken" / "empty.flac").write_bytes(b"")
    rows.insert(5, {"id": "garbage", "path": "audio/broken/garbage.wav", "lyrics": ""})
    rows.insert(9, {"id": "gone", "path": "audio/nowhere.wav", "lyrics": ""})
    rows.insert(13, {"id": "nopath", "path": "", "lyrics": ""})
    manifest = root / "tracks.csv"
    with open(manifest, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=["id", "path", "lyrics"])
        w.writeheader()
        w.writerows(rows)
    return {"root": root, "folder": lib, "manifest": manifest, "rows": rows}


@pytest.fixture(scope="module")
def expected(engine_path, library):
    """id -> Prediction of a plain ``Engine.classify`` of the manifest's good rows."""
    eng = Engine.load(engine_path)
    good = [r for r in library["rows"] if r["id"].startswith("t")]
    res = eng.classify([str(library["root"] / r["path"]) for r in good],
                       [r["lyrics"] or None for r in good])
    return {r["id"]: p for r, p in zip(good, res)}


def check_exactly_once(out: Path, library, expected, engine_path):
    """RESULTS holds every manifest id once, in manifest order, each success equal to the
    plain classification, each failure typed; no shards left."""
    rows = read_results(out)
    assert [r["id"] for r in rows] == [r["id"] for r in library["rows"]]
    sha = file_sha256(engine_path)
    for r in rows:
        assert set(r) == set(COLUMNS)
        assert r["engine_sha256"] == sha and r["engine_version"]
        if r["id"].startswith("t"):
            want = expected[r["id"]]
            assert r["error_type"] is None, r
            assert r["label"] == want.label
            assert abs(r["score"] - want.score) < 1e-5
            assert [k["label"] for k in r["top_k"]] == [k for k, _ in want.top_k]
            assert r["windows"] == len(want.windows)
    errors = {r["id"]: r["error_type"] for r in rows if r["error_type"]}
    assert errors == {"garbage": "AudioCorruptError", "gone": "AudioMissingError",
                      "nopath": "ManifestError"}
    assert not out.with_name(out.name + PARTS_SUFFIX).exists()
    return rows


def shards(out: Path):
    return sorted(out.with_name(out.name + PARTS_SUFFIX).glob("part-*.jsonl"))


def committed_ids(out: Path):
    ids = []
    for s in shards(out):
        ids += [json.loads(line)["id"] for line in s.read_text().splitlines() if line]
    return ids


def wait_for_shards(out: Path, proc=None, n: int = 2, timeout: float = 120.0):
    """Until ``n`` shards are committed (the first holds the rows known bad before
    classification, committed at once)."""
    t0 = time.monotonic()
    while len(shards(out)) < n:
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"the run ended before committing {n} shard(s): "
                                 f"{proc.stderr.read() if proc.stderr else ''}")
        if time.monotonic() - t0 > timeout:
            raise AssertionError("no shard committed in time")
        time.sleep(0.005)


def cli(*args):
    return [sys.executable, "-m", "mmengine", "batch", *map(str, args)]


# ---------------------------------------------------------------------------- in-process
def test_manifest_to_jsonl_in_process(engine_path, library, expected, tmp_path, capsys):
    from mmengine.cli import main

    out = tmp_path / "results.jsonl"
    assert main(["batch", str(engine_path), str(library["manifest"]), "--out", str(out),
                 "--batch-size", "7", "-q"]) == 0
    check_exactly_once(out, library, expected, engine_path)
    printed = capsys.readouterr().out
    assert f"{len(library['rows'])} inputs: {N_GOOD} classified, 3 failed" in printed
    assert ("failures by error type: AudioCorruptError 1, AudioMissingError 1, ManifestError 1"
            in printed)


def test_folder_to_parquet_with_nested_top_k(engine_path, library, tmp_path):
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    out = tmp_path / "r.parquet"
    s = batch_classify(engine_path, library["folder"], out, threads=2, batch_size=5,
                       progress=False)
    assert (s.total, s.failed, s.errors) == (N_GOOD + 2, 2, {"AudioCorruptError": 1,
                                                            "AudioEmptyError": 1})
    table = pq.read_table(out)
    assert table.column_names == list(COLUMNS)
    assert table.schema.field("top_k").type == pa.list_(
        pa.struct([("label", pa.string()), ("score", pa.float64())]))
    rows = table.to_pylist()
    ids = [r["id"] for r in rows]
    assert ids == sorted(ids) and len(set(ids)) == len(ids) == N_GOOD + 2
    assert "disc0/track00.wav" in ids and "broken/empty.flac" in ids
    # a folder has no lyrics: the same files as a list, without text
    eng = Engine.load(engine_path)
    good = [r for r in rows if r["error_type"] is None]
    want = eng.classify([r["path"] for r in good])
    for r, p in zip(good, want):
        assert r["label"] == p.label and abs(r["score"] - p.score) < 1e-5
        assert abs(sum(k["score"] for k in r["top_k"]) - sum(s for _, s in p.top_k)) < 1e-5


def test_rerun_classifies_only_new_ids(engine_path, library, tmp_path):
    """A finished run run again classifies nothing; grown input: only the new ids."""
    root = library["root"]
    half = tmp_path / "half.csv"
    rows = [r for r in library["rows"] if r["id"].startswith("t")]

    def write(n):
        with open(half, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=["id", "path", "lyrics"])
            w.writeheader()
            w.writerows({**r, "path": str(root / r["path"])} for r in rows[:n])

    out = tmp_path / "r.jsonl"
    write(20)
    s1 = batch_classify(engine_path, half, out, batch_size=6, progress=False)
    first = out.read_text().splitlines()
    assert (s1.total, s1.skipped, s1.classified) == (20, 0, 20)
    s2 = batch_classify(engine_path, half, out, progress=False)
    assert (s2.skipped, s2.classified) == (20, 0) and out.read_text().splitlines() == first
    write(30)
    s3 = batch_classify(engine_path, half, out, batch_size=6, progress=False)
    assert (s3.total, s3.skipped, s3.classified) == (30, 20, 10)
    lines = out.read_text().splitlines()
    assert lines[:20] == first and len(lines) == 30
    assert [json.loads(x)["id"] for x in lines] == [r["id"] for r in rows[:30]]


def test_driver_killed_in_process_then_resumed(engine_path, library, expected, tmp_path):
    out = tmp_path / "r.jsonl"
    cmd = cli(engine_path, library["manifest"], "--out", out, "--batch-size", "2", "-q")
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_for_shards(out, proc)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert not out.exists(), "the run finished before it was killed: nothing tested"
    before = committed_ids(out)
    assert 0 < len(before) < len(library["rows"]) and len(set(before)) == len(before)
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert f"{len(set(before))} already written" in done.stdout
    check_exactly_once(out, library, expected, engine_path)


def test_clear_errors(engine_path, library, tmp_path):
    m = library["manifest"]
    with pytest.raises(EngineFileError, match="not found"):
        batch_classify(tmp_path / "nope.mme", m, tmp_path / "r.jsonl", progress=False)
    with pytest.raises(EngineFileError):  # not an engine file
        batch_classify(m, m, tmp_path / "r.jsonl", progress=False)
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(BatchError, match="cannot write results there"):
        batch_classify(engine_path, m, blocker / "sub" / "r.jsonl", progress=False)
    with pytest.raises(BatchError, match="must end in"):
        batch_classify(engine_path, m, tmp_path / "r.csv", progress=False)
    if importlib.util.find_spec("ray") is not None:
        with pytest.raises(BatchError, match="no Ray cluster answers at 127.0.0.1:1"):
            batch_classify(engine_path, m, tmp_path / "r.jsonl", ray="127.0.0.1:1",
                           progress=False)
        assert not (tmp_path / ("r.jsonl" + PARTS_SUFFIX)).exists()
    with pytest.raises(BatchError, match="needs --ray"):
        batch_classify(engine_path, m, tmp_path / "r.jsonl", workers=2, progress=False)
    with pytest.raises(ManifestError, match="not found"):
        batch_classify(engine_path, tmp_path / "none.csv", tmp_path / "r.jsonl",
                       progress=False)
    dup = tmp_path / "dup.jsonl"
    dup.write_text('{"id": "a", "path": "x.wav"}\n{"id": "a", "path": "y.wav"}\n')
    with pytest.raises(ManifestError, match="'a' appears 2 times"):
        batch_classify(engine_path, dup, tmp_path / "r.jsonl", progress=False)


def test_refuses_another_engines_results_and_a_concurrent_run(engine_path, library, tmp_path):
    from mmengine.batch import engine_identity

    out = tmp_path / "r.jsonl"
    one = tmp_path / "one.csv"
    one.write_text(f"id,path\nx,{library['root'] / library['rows'][0]['path']}\n")
    batch_classify(engine_path, one, out, progress=False)
    other = tmp_path / "other.mme"  # the same model, another file: another SHA-256
    other.write_bytes(Path(engine_path).read_bytes()[:-1] + b"\x00")
    with pytest.raises((BatchError, EngineFileError)):
        batch_classify(other, one, out, progress=False)
    ident = {k: v for k, v in engine_identity(engine_path).items() if k != "text_field"}
    out2 = tmp_path / "r2.jsonl"
    with ResultStore(out2, ident):
        with pytest.raises(BatchError, match="another mmengine batch is writing"):
            batch_classify(engine_path, one, out2, progress=False)
    ident2 = dict(ident, engine_sha256="0" * 64)
    with pytest.raises(BatchError, match="another engine"):
        with ResultStore(out, ident2):
            pass


def test_import_and_in_process_batch_need_neither_ray_nor_pyarrow(engine_path, library,
                                                                  tmp_path):
    """``import mmengine`` (and the CLI, and an in-process JSONL batch) with Ray and pyarrow
    unimportable; ``--ray`` and Parquet then say which extra to install."""
    code = f"""
import sys
sys.modules["ray"] = None
sys.modules["pyarrow"] = None
import mmengine, mmengine.cli, mmengine.batch
from mmengine.errors import OptionalDependencyError
s = mmengine.batch_classify({str(engine_path)!r}, {str(library['manifest'])!r},
                            {str(tmp_path / 'r.jsonl')!r}, progress=False)
assert s.total == {len(library['rows'])} and s.failed == 3, s
for kw, out in (({{"ray": True}}, "r2.jsonl"), ({{}}, "r.parquet")):
    try:
        mmengine.batch_classify({str(engine_path)!r}, {str(library['manifest'])!r},
                                {str(tmp_path)!r} + "/" + out, progress=False, **kw)
    except OptionalDependencyError as exc:
        assert "mmengine-music[ray]" in str(exc), exc
    else:
        raise AssertionError("no OptionalDependencyError")
assert "ray" not in [m for m in sys.modules if sys.modules[m] is not None]
print("ok")
"""
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 0 and r.stdout.strip() == "ok", r.stderr


def test_help_names_every_option(capsys):
    from mmengine.cli import build_parser

    with pytest.raises(SystemExit) as e:
        build_parser().parse_args(["batch", "--help"])
    assert e.value.code == 0
    text = capsys.readouterr().out
    for opt in ("--out", "--ray", "--workers", "--threads", "--batch-size", "--retry-errors",
                "mmengine-music[ray]"):
        assert opt in text


# ------------------------------------------------------------------------------------ Ray
@pytest.fixture(scope="module")
def ray_cluster():
    """A real local Ray cluster of 2 CPUs for this module; yields its address."""
    ray = pytest.importorskip("ray")
    pytest.importorskip("ray.data")
    ray.init(num_cpus=2, include_dashboard=False, object_store_memory=200 * 1024 * 1024,
             logging_level="WARNING")
    try:
        yield ray.get_runtime_context().gcs_address
    finally:
        ray.shutdown()


def test_ray_matches_plain_classify(ray_cluster, engine_path, library, expected, tmp_path):
    out = tmp_path / "r.parquet"
    pytest.importorskip("pyarrow")
    s = batch_classify(engine_path, library["manifest"], out, ray=True, batch_size=4,
                       progress=False)
    assert (s.mode, s.workers, s.threads) == ("ray", 2, 1)
    check_exactly_once(out, library, expected, engine_path)


def map_worker_pids():
    """Processes of Ray Data's actors that run ``BatchClassifier``."""
    pids = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                cmd = (d / "cmdline").read_bytes().decode(errors="replace")
            except OSError:
                continue
            if "MapBatches(BatchClassifier)" in cmd:
                pids.append(int(d.name))
    return pids


def test_ray_actor_killed_mid_run(ray_cluster, engine_path, library, expected, tmp_path):
    out = tmp_path / "r.jsonl"
    outcome = {}

    def run():
        try:
            outcome["summary"] = batch_classify(engine_path, library["manifest"], out,
                                                ray=True, batch_size=2, progress=False)
        except Exception as exc:  # noqa: BLE001 - a failed run is resumed below
            outcome["error"] = exc

    t = threading.Thread(target=run)
    t.start()
    wait_for_shards(out)
    victims = map_worker_pids()
    assert victims, "no actor process found"
    os.kill(victims[0], signal.SIGKILL)
    assert not out.exists(), "the run finished before the actor was killed: nothing tested"
    t.join(300)
    assert not t.is_alive()
    assert not Path(f"/proc/{victims[0]}").exists()
    # Ray restarts the actor and retries its batch (the run finishes by itself); should it
    # give up instead, the same call again finishes the run
    if "error" in outcome:
        batch_classify(engine_path, library["manifest"], out, ray=True, batch_size=2,
                       progress=False)
    check_exactly_once(out, library, expected, engine_path)


def test_ray_driver_killed_then_resumed(ray_cluster, engine_path, library, expected,
                                        tmp_path):
    """The CLI joins the cluster (``--ray ADDRESS``), is SIGKILLed mid-run, and the same
    command finishes the rest."""
    out = tmp_path / "r.jsonl"
    cmd = cli(engine_path, library["manifest"], "--out", out, "--ray", ray_cluster,
              "--batch-size", "2", "-q")
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_for_shards(out, proc)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert not out.exists(), "the run finished before it was killed: nothing tested"
    before = committed_ids(out)
    assert 0 < len(before) < len(library["rows"]) and len(set(before)) == len(before)
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "ray, 2 x 1 threads" in done.stdout and f"{len(before)} already written" in done.stdout
    check_exactly_once(out, library, expected, engine_path)



def test_ray_failure_is_a_clear_error_and_keeps_results(ray_cluster, engine_path, library,
                                                        tmp_path):
    """An actor that cannot start (a backend this engine file cannot run) stops the run with
    a BatchError naming the cause; the rows committed before are kept."""
    out = tmp_path / "r.jsonl"
    with pytest.raises(BatchError, match="BackendUnavailableError") as e:
        batch_classify(engine_path, library["manifest"], out, ray=True, backend="tensorrt",
                       progress=False)
    assert "run the same command again" in str(e.value)
    assert committed_ids(out) == ["nopath"]  # the row known bad before classification
