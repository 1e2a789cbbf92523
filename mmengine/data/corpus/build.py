"""The parallel, resumable builder of the built-in data sets.

Each rendering is one job: parse the score, take its notes, render a 30 s clip and its MIDI,
write ``audio/<id>.flac``, ``midi/<id>.mid`` and ``rows/<id>.json`` atomically (temporary
file + rename). A rerun skips every job whose row exists, so an interrupted build continues
where it stopped; a failed job goes to ``failures.jsonl`` with its reason and is counted per
class in the data card. At the end ``manifest.jsonl``, ``manifest.split.json`` (grouped by
tune, stratified, seeded) and ``DATA.md`` are written.

Every random choice of a job comes from a generator seeded by (seed, task, source, tune index,
rendering index): the same seed gives the same files on the same machine.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Optional

import numpy as np

from ...config import AudioConfig, SplitConfig
from . import recipes, render

TASKS = {
    "folk": "dance type of fiddle tunes (reel, jig, hornpipe, slip jig): audio + title + notes",
    "vocal": "mode (major/minor) of Bach chorales: audio + German lyrics + notes",
}


def default_dir(task: str) -> Path:
    base = os.environ.get("MMENGINE_DATA_DIR")
    root = Path(base) if base else Path.home() / ".cache" / "mmengine" / "data"
    return root / task


def default_manifest(task: str) -> Path:
    return default_dir(task) / "manifest.jsonl"


def _atomic_bytes(path: Path, write) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=path.suffix)
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _job_seed(seed: int, task: str, item: dict, k: int) -> int:
    key = f"{seed}|{task}|{item['source']}|{item['tune_index']}|{k}".encode()
    return int.from_bytes(hashlib.sha256(key).digest()[:8], "little")


def job_id(task: str, item: dict, k: int) -> str:
    stem = re.sub(r"[^A-Za-z0-9]+", "-", f"{item['source']}-{item['tune_index']}").strip("-")
    return f"{task}-{stem}-r{k}"


def _load_score(item: dict):
    from music21 import converter, corpus

    path = recipes.corpus_root() / item["source"]
    if path.suffix == ".abc":
        tunes = recipes.split_abc(path.read_text(encoding="latin-1"))
        tune = tunes[item["tune_index"]]
        meter = re.search(r"(?m)^M:\s*(.*)$", tune)
        return converter.parse(tune, format="abc"), (meter.group(1) if meter else "")
    return corpus.parse(str(path)), None


def _vocal_facts(score):
    from music21 import text

    key = score.analyze("key")
    ts = score.recurse().getElementsByClass("TimeSignature").first()
    return key.mode, (text.assembleLyrics(score) or "").strip(), ts


def run_job(task: str, item: dict, k: int, seed: int, out: str, sample_rate: int,
            seconds: float) -> dict:
    """Render one clip; returns ``{"row": ...}`` or ``{"failure": ...}``. Runs in a worker."""
    out_dir = Path(out)
    jid = job_id(task, item, k)
    row_path = out_dir / "rows" / f"{jid}.json"
    if row_path.exists():
        return {"row": json.loads(row_path.read_text()), "skipped": True}
    label = item.get("label")
    try:
        score, meter = _load_score(item)
        rng = np.random.default_rng(_job_seed(seed, task, item, k))
        if task == "vocal":
            mode, lyrics, ts = _vocal_facts(score)
            label = mode
            beat_q = 4.0 / ts.denominator if ts else 1.0  # chorales: the notated beat
            settings = render.settings_for(rng, render.VOCAL_PROGRAMS, render.VOCAL_BEAT_BPM)
        else:
            lyrics = None
            beat_q = render.beat_quarters(meter or "")
            settings = render.settings_for(rng, render.FOLK_PROGRAMS, render.BEAT_BPM)
        notes = render.score_notes(score)
        y, (s, e, p) = render.render_notes(notes, beat_q=beat_q, settings=settings,
                                           sample_rate=sample_rate, seconds=seconds)
        import soundfile as sf

        _atomic_bytes(out_dir / "audio" / f"{jid}.flac",
                      lambda t: sf.write(t, y, sample_rate, format="FLAC", subtype="PCM_16"))
        _atomic_bytes(out_dir / "midi" / f"{jid}.mid",
                      lambda t: render.write_midi(Path(t), s, e, p, program=settings["program"]))
        row = {
            "id": jid, "path": f"audio/{jid}.flac", "label": label,
            "title": item.get("title") if task == "folk" else None,
            "lyrics": lyrics if task == "vocal" else None,
            "midi_path": f"midi/{jid}.mid", "group": item["group"],
            "source": item["source"], "tune_index": item["tune_index"], "rendering": k,
            "program": settings["program"], "transpose": settings["transpose"],
            "tempo_bpm": settings["tempo_bpm"], "beat": beat_q,
            "soundfont": render.soundfont_path().name, "seed": seed,
            "repeats": notes.fallback or "expanded",
        }
        _atomic_bytes(row_path, lambda t: Path(t).write_text(json.dumps(row)))
        return {"row": row}
    except Exception as exc:  # noqa: BLE001 - recorded, counted, never silently dropped
        return {"failure": {"id": jid, "label": label, "source": item["source"],
                            "tune_index": item["tune_index"],
                            "reason": f"{type(exc).__name__}: {exc}"[:500]}}


def _jobs(task: str, limit: Optional[int]):
    items = recipes.load_recipe(task)
    jobs = [(it, k) for it in items for k in range(int(it.get("renderings", 1)))]
    if limit is not None and limit < len(jobs):
        # spread a small build over the classes: round-robin over labels in recipe order
        by_label: dict = {}
        for j in jobs:
            by_label.setdefault(j[0].get("label") or "?", []).append(j)
        picked, lists = [], list(by_label.values())
        i = 0
        while len(picked) < limit and any(lists):
            lst = lists[i % len(lists)]
            if lst:
                picked.append(lst.pop(0))
            i += 1
        jobs = picked
    return jobs


def build_dataset(task: str = "folk", out: Optional[Path] = None, *, limit: Optional[int] = None,
                  seed: int = 0, workers: Optional[int] = None, progress: bool = True) -> Path:
    """Render the built-in data set ``task`` into ``out`` and return its manifest path.

    Args:
        task: a key of ``TASKS``.
        out: output folder (default ``$MMENGINE_DATA_DIR/<task>`` or
            ``~/.cache/mmengine/data/<task>``).
        limit: render only this many clips, spread over the classes (quick runs, tests).
        seed: render and split seed.
        workers: processes (default: all cores).
        progress: show a progress bar.
    """
    from tqdm.auto import tqdm

    from ..._ext import require

    if task not in TASKS:
        raise ValueError(f"unknown data set {task!r}; choose from {', '.join(TASKS)}")
    for mod in ("music21", "tinysoundfont", "pretty_midi"):
        require(mod)
    out = Path(out) if out else default_dir(task)
    out.mkdir(parents=True, exist_ok=True)
    audio_cfg = AudioConfig()
    jobs = _jobs(task, limit)
    workers = workers or os.cpu_count() or 1
    t0 = time.perf_counter()
    rows, failures = [], []
    args = [(task, it, k, seed, str(out), audio_cfg.sample_rate, audio_cfg.clip_seconds)
            for it, k in jobs]
    bar = tqdm(total=len(args), desc=f"render {task}", unit="clip", disable=not progress)
    if workers == 1:
        results = (run_job(*a) for a in args)
        for r in results:
            (rows if "row" in r else failures).append(r.get("row") or r["failure"])
            bar.update()
    else:
        with ProcessPoolExecutor(max_workers=workers) as ex:
            futs = [ex.submit(run_job, *a) for a in args]
            for f in futs:
                r = f.result()
                (rows if "row" in r else failures).append(r.get("row") or r["failure"])
                bar.update()
    bar.close()
    wall = time.perf_counter() - t0
    return _finish(task, out, rows, failures, seed=seed, wall=wall, limit=limit)


def _finish(task, out: Path, rows, failures, *, seed, wall, limit) -> Path:
    from ..manifest import load_manifest
    from ..split import make_split, write_split
    from .card import write_card

    if not rows:
        raise RuntimeError(f"no clip of {task} could be rendered; see {out / 'failures.jsonl'}")
    rows.sort(key=lambda r: r["id"])
    manifest = out / "manifest.jsonl"
    _atomic_bytes(manifest, lambda t: Path(t).write_text(
        "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8"))
    _atomic_bytes(out / "failures.jsonl", lambda t: Path(t).write_text(
        "".join(json.dumps(f) + "\n" for f in failures)))
    ds = load_manifest(manifest)
    cfg = SplitConfig(seed=seed)
    assignment = make_split(ds, cfg)
    write_split(out / "manifest.split.json", assignment, seed=seed, ratios=cfg.ratios,
                grouped_by="group")
    write_card(task, out, rows, failures, assignment, wall_s=wall, limit=limit)
    return manifest
