"""The parallel, resumable builder of the built-in data sets.

Each rendering is one job: parse the score, take its notes, render a 30 s clip and its MIDI,
write ``audio/<id>.flac``, ``midi/<id>.mid`` and ``rows/<id>.json`` atomically (temporary
file + ``os.replace``, the row last). A rerun skips every job whose row exists with the same
seed and files, so an interrupted build continues where it stopped; a failed job goes to
``failures.jsonl`` with its reason and is counted per class in the data card. At the end
``manifest.jsonl``, ``manifest.split.json`` (grouped by tune, stratified, seeded) and
``DATA.md`` are written, and files of ids the recipe no longer has are removed.

Extra training renderings (``train_renderings=N``, ``mmengine data build TASK
--train-renderings N``): each tune whose group lies in the *training* split gets N more
renderings, indices ``renderings .. renderings + N - 1`` after the recipe's own, each with its
own seed (instrument, transposition, tempo) and a random loop start (``render.draw_loop_start``:
the clip starts at a note onset of the tune instead of its beginning). The split of the base
renderings is the persisted one (``manifest.split.json``; made first, from the base renderings
only, when there is none) and is only extended: every extra id goes to ``train``; validation and
test rows and files are never touched. A rebuild with a smaller N removes the extras above N.

Every random choice of a job comes from a generator seeded by ``job_seed`` (build seed, task,
source, tune index, rendering index): the same seed gives the same files on the same machine.
Ids are opaque (a hash of source and tune index): a file name says nothing about the label.
"""
from __future__ import annotations

import hashlib
import json
import os
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path
from typing import List, Optional, Sequence, Tuple

import numpy as np

from ...config import AudioConfig, CorpusConfig, SplitConfig
from ..safe_io import atomic_write
from . import recipes, render
from .recipes import TASKS, default_dir, default_manifest  # noqa: F401 (the builder's API)

FILE_KINDS = (("audio", ".flac"), ("midi", ".mid"), ("rows", ".json"))


def job_seed(seed: int, task: str, item: dict, k: int) -> int:
    """Seed of rendering ``k`` of ``item`` (64 bits of SHA-256 of its identity)."""
    key = f"{seed}|{task}|{item['source']}|{item['tune_index']}|{k}".encode()
    return int.from_bytes(hashlib.sha256(key).digest()[:8], "little")


def tune_stem(task: str, item: dict) -> str:
    """``<task>-<10 hex digits of the tune's hash>``: the part of a job id its tune fixes."""
    h = hashlib.sha256(f"{item['source']}|{item['tune_index']}".encode()).hexdigest()[:10]
    return f"{task}-{h}"


def job_id(task: str, item: dict, k: int) -> str:
    """``<task>-<10 hex digits of the tune's hash>-r<k>``: unique, says nothing of the label."""
    return f"{tune_stem(task, item)}-r{k}"


def _load_score(item: dict):
    """(music21 score, ABC meter string or None) of a recipe item."""
    from music21 import converter

    path = recipes.corpus_root() / item["source"]
    if path.suffix == ".abc":
        tunes = recipes.split_abc(path.read_text(encoding="latin-1"))
        if item["tune_index"] >= len(tunes):
            raise IndexError(f"{item['source']} has {len(tunes)} tunes, "
                             f"not {item['tune_index'] + 1}")
        tune = tunes[item["tune_index"]]
        return converter.parse(tune, format="abc"), recipes.abc_field(tune, "M")
    return converter.parse(str(path)), None


def _render_settings(task: str, score, meter: Optional[str], rng) -> Tuple[float, dict, object]:
    """(quarters per beat, render settings, lyrics or None) of one job."""
    if task == "vocal":
        from music21 import text

        ts = score.recurse().getElementsByClass("TimeSignature").first()
        beat_q = 4.0 / ts.denominator if ts else 1.0  # chorales: the notated beat
        lyrics = (text.assembleLyrics(score) or "").strip()
        if not lyrics:
            raise render.RenderError("no lyrics")
        return beat_q, render.settings_for(rng, render.VOCAL_PROGRAMS,
                                           render.VOCAL_BEAT_BPM), lyrics
    beat_q = render.beat_quarters(meter or "")
    return beat_q, render.settings_for(rng, render.FOLK_PROGRAMS, render.BEAT_BPM), None


def _recipe_fields(task: str, item: dict) -> dict:
    """Row fields that come from the recipe alone (no effect on audio or MIDI)."""
    return {"label": item.get("label"), "group": item["group"],
            "title": item.get("title") if task == "folk" else None}


def _done(out_dir: Path, task: str, jid: str, item: dict, seed: int,
          extra: bool = False) -> Optional[dict]:
    """The row of a finished job, or None when it must be rendered (again).

    A row is reused when its seed, render version and kind (base or extra rendering) match
    and its files exist; the fields that come from the recipe alone (label, title, group) are
    refreshed from ``item``.
    """
    row_path = out_dir / "rows" / f"{jid}.json"
    if not row_path.exists():
        return None
    row = json.loads(row_path.read_text(encoding="utf-8"))
    if (row.get("seed") != seed or row.get("render_version", 1) != render.RENDER_VERSION
            or bool(row.get("extra", False)) != extra
            or not all((out_dir / row[k]).exists() for k in ("path", "midi_path"))):
        return None
    fresh = _recipe_fields(task, item)
    if any(row.get(k) != v for k, v in fresh.items()):
        row.update(fresh)
        atomic_write(row_path, lambda t: Path(t).write_text(json.dumps(row, ensure_ascii=False),
                                                             encoding="utf-8"))
    return row


def run_job(task: str, item: dict, k: int, seed: int, out: str, sample_rate: int,
            seconds: float, extra: bool = False) -> dict:
    """Render one clip -> ``{"row": ...}`` (``"skipped": True`` when already done) or
    ``{"failure": {"id", "label", "source", "tune_index", "reason"}}``. Runs in a worker.

    ``extra``: an extra training rendering (``build_items(train_renderings=...)``): after the
    settings, the same generator draws a loop start (``render.draw_loop_start``); the row gains
    ``"extra": true`` and ``"loop_start_q"`` (quarters into the tune), the failure
    ``"extra": true``."""
    out_dir = Path(out)
    jid = job_id(task, item, k)
    done = _done(out_dir, task, jid, item, seed, extra)
    if done is not None:
        return {"row": done, "skipped": True}
    label = item.get("label")
    try:
        import soundfile as sf

        score, meter = _load_score(item)
        rng = np.random.default_rng(job_seed(seed, task, item, k))
        beat_q, settings, lyrics = _render_settings(task, score, meter, rng)
        notes = render.score_notes(score)
        loop_q = render.draw_loop_start(rng, notes) if extra else 0.0
        y, (s, e, p) = render.render_notes(notes, beat_q=beat_q, settings=settings,
                                           sample_rate=sample_rate, seconds=seconds,
                                           loop_start_q=loop_q)
        atomic_write(out_dir / "audio" / f"{jid}.flac",
                     lambda t: sf.write(t, y, sample_rate, format="FLAC", subtype="PCM_16"))
        atomic_write(out_dir / "midi" / f"{jid}.mid",
                     lambda t: render.write_midi(Path(t), s, e, p, program=settings["program"]))
        fields = _recipe_fields(task, item)
        row = {
            "id": jid, "path": f"audio/{jid}.flac", "label": fields["label"],
            "title": fields["title"], "lyrics": lyrics if task == "vocal" else None,
            "midi_path": f"midi/{jid}.mid", "group": fields["group"],
            "source": item["source"], "tune_index": item["tune_index"], "rendering": k,
            "program": settings["program"], "transpose": settings["transpose"],
            "tempo_bpm": settings["tempo_bpm"], "beat": beat_q,
            "soundfont": render.soundfont_path().name, "seed": seed,
            "repeats": notes.fallback or "expanded", "render_version": render.RENDER_VERSION,
        }
        if extra:
            row.update({"extra": True, "loop_start_q": loop_q})
        atomic_write(out_dir / "rows" / f"{jid}.json",
                     lambda t: Path(t).write_text(json.dumps(row, ensure_ascii=False),
                                                  encoding="utf-8"))
        return {"row": row}
    except Exception as exc:  # noqa: BLE001 - recorded, counted, never silently dropped
        failure = {"id": jid, "label": label, "source": item["source"],
                   "tune_index": item["tune_index"],
                   "reason": f"{type(exc).__name__}: {exc}"[:500]}
        if extra:
            failure["extra"] = True
        return {"failure": failure}


def select_jobs(task: str, items: Sequence[dict],
                limit: Optional[int]) -> List[Tuple[dict, int]]:
    """Every (item, rendering index); with ``limit``, that many spread round-robin over the
    labels, first renderings first, pieces in the (pseudo-random, fixed) order of their ids,
    which mixes the collections."""
    jobs = [(it, k) for it in items for k in range(int(it.get("renderings", 1)))]
    if limit is None or limit >= len(jobs):
        return jobs
    by_label: dict = {}
    for j in sorted(jobs, key=lambda j: (j[1], job_id(task, *j))):
        by_label.setdefault(j[0].get("label") or "?", []).append(j)
    lists = [by_label[k] for k in sorted(by_label)]
    picked, i = [], 0
    while len(picked) < limit:
        lst = lists[i % len(lists)]
        if lst:
            picked.append(lst.pop(0))
        i += 1
    return picked


def default_workers() -> int:
    """The cores this process may run on."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


def build_dataset(task: str = CorpusConfig.task, out: Optional[Path] = None, *,
                  limit: Optional[int] = None, seed: int = CorpusConfig.seed,
                  workers: Optional[int] = None, progress: bool = True,
                  train_renderings: int = CorpusConfig.train_renderings) -> Path:
    """Render the built-in data set ``task`` into ``out``; returns the manifest path.

    Args:
        task: a key of ``TASKS``.
        out: output folder (default ``default_dir(task)``).
        limit: render only this many clips, spread over the classes (quick runs, tests).
        seed: render and split seed.
        workers: processes (default: the cores available to this process).
        progress: show a progress bar (tqdm).
        train_renderings: extra renderings of each tune of the training split (module
            docstring); 0 builds exactly what a build without them does (and removes the
            extras of an earlier build).

    Returns:
        ``<out>/manifest.jsonl``; next to it ``manifest.split.json``, ``failures.jsonl``,
        ``DATA.md``, ``audio/``, ``midi/`` and ``rows/``.

    Raises:
        ValueError: unknown task, or ``train_renderings`` negative.
    """
    if task not in TASKS:
        raise ValueError(f"unknown data set {task!r}; choose from {', '.join(TASKS)}")
    items = recipes.load_recipe(task)
    return build_items(task, items, out, limit=limit, seed=seed, workers=workers,
                       progress=progress, train_renderings=train_renderings)


def build_items(task: str, items: Sequence[dict], out: Optional[Path] = None, *,
                limit: Optional[int] = None, seed: int = CorpusConfig.seed,
                workers: Optional[int] = None, progress: bool = True,
                train_renderings: int = CorpusConfig.train_renderings) -> Path:
    """``build_dataset`` over explicit recipe ``items`` (same format as the shipped ones)."""
    from ..._ext import require

    if isinstance(train_renderings, bool) or not isinstance(train_renderings, int) \
            or train_renderings < 0:
        raise ValueError(f"train_renderings must be an integer >= 0, got {train_renderings!r}")
    for mod in ("music21", "tinysoundfont", "pretty_midi"):
        require(mod)
    out = Path(out) if out else default_dir(task)
    out.mkdir(parents=True, exist_ok=True)
    jobs = select_jobs(task, items, limit)
    asked = workers
    workers = max(1, min(workers or default_workers(), len(jobs)))
    t0 = time.perf_counter()
    results = _run_jobs(task, jobs, seed, out, workers, progress, extra=False)
    wall = time.perf_counter() - t0
    rows = [r["row"] for r in results if "row" in r]
    failures = sorted((r["failure"] for r in results if "failure" in r), key=lambda f: f["id"])
    reused = sum(1 for r in results if r.get("skipped"))
    keep = {job_id(task, it, k) for it, k in select_jobs(task, items, None)}
    stats = {"wall_s": wall, "rendered": len(rows) - reused, "reused": reused,
             "workers": workers, "limit": limit}
    if not train_renderings:
        return _finish(task, out, rows, failures, keep, seed=seed, stats=stats)

    assignment = _persisted_base_split(out, task, items, rows)
    if assignment is None:  # no usable split yet: the normal data set first, split on its own
        every_extra = {job_id(task, it, k) for it in items
                       for k in _extra_range(it, train_renderings)}
        _finish(task, out, list(rows), list(failures), keep | every_extra, seed=seed,
                stats=dict(stats))
        assignment = _persisted_base_split(out, task, items, rows)
        if assignment is None:
            raise RuntimeError(f"{out / 'manifest.split.json'} was not written as expected")
        t0 = time.perf_counter()
        stats.update(wall_s=0.0, rendered=0, reused=len(rows))
    extra_jobs = _extra_jobs(jobs, rows, assignment, train_renderings)
    t1 = time.perf_counter()
    extra_results = _run_jobs(task, extra_jobs, seed, out,
                              max(1, min(asked or default_workers(), max(1, len(extra_jobs)))),
                              progress, extra=True)
    extra_wall = time.perf_counter() - t1
    extra_rows = [r["row"] for r in extra_results if "row" in r]
    extra_reused = sum(1 for r in extra_results if r.get("skipped"))
    failures = sorted(failures + [r["failure"] for r in extra_results if "failure" in r],
                      key=lambda f: f["id"])
    assignment = {**assignment, **{r["id"]: "train" for r in extra_rows}}
    stats.update(wall_s=time.perf_counter() - t0,
                 rendered=stats["rendered"] + len(extra_rows) - extra_reused,
                 reused=stats["reused"] + extra_reused, train_renderings=train_renderings,
                 extra_rendered=len(extra_rows) - extra_reused, extra_reused=extra_reused,
                 extra_failed=len(extra_jobs) - len(extra_rows), extra_wall_s=extra_wall)
    return _finish(task, out, rows + extra_rows, failures,
                   keep | {job_id(task, it, k) for it, k in extra_jobs}, seed=seed,
                   stats=stats, assignment=assignment)


def _run_jobs(task: str, jobs: Sequence[Tuple[dict, int]], seed: int, out: Path, workers: int,
              progress: bool, *, extra: bool) -> List[dict]:
    """``run_job`` over ``jobs`` on ``workers`` processes (in this one when 1)."""
    from tqdm.auto import tqdm

    audio_cfg = AudioConfig()
    args = [(task, it, k, seed, str(out), audio_cfg.sample_rate, float(audio_cfg.clip_seconds),
             extra) for it, k in jobs]
    results: List[dict] = []
    desc = f"render {task}" + (" (extra)" if extra else "")
    with tqdm(total=len(args), desc=desc, unit="clip", disable=not progress) as bar:
        if workers == 1:
            for a in args:
                results.append(run_job(*a))
                bar.update()
        else:
            ex = ProcessPoolExecutor(max_workers=workers)
            try:
                futs = [ex.submit(run_job, *a) for a in args]
                for f in as_completed(futs):
                    results.append(f.result())
                    bar.update()
            finally:
                ex.shutdown(wait=True, cancel_futures=True)
    return results


def _extra_range(item: dict, n: int) -> range:
    """Rendering indices of the ``n`` extra training renderings of ``item``."""
    first = int(item.get("renderings", 1))
    return range(first, first + n)


def _extra_jobs(jobs: Sequence[Tuple[dict, int]], rows: Sequence[dict], assignment: dict,
                n: int) -> List[Tuple[dict, int]]:
    """(item, k) of the extra renderings: ``n`` per piece of ``jobs`` whose group is in the
    training split of ``assignment`` (pieces in the order of ``jobs``)."""
    split_of_group = {r["group"]: assignment[r["id"]] for r in rows}
    seen, out = set(), []
    for it, _ in jobs:
        key = (it["source"], it["tune_index"])
        if key in seen:
            continue
        seen.add(key)
        if split_of_group.get(it["group"]) == "train":
            out.extend((it, k) for k in _extra_range(it, n))
    return out


def _persisted_base_split(out: Path, task: str, items: Sequence[dict],
                          rows: Sequence[dict]) -> Optional[dict]:
    """The persisted split of the base renderings ``rows``, or None when there is none to keep.

    ``out/manifest.split.json`` is kept when it assigns every base row and every other id it
    holds is an extra rendering (index >= the item's ``renderings``) marked ``train``; any
    other file (missing, unreadable, made for other rows) means the split is made again from
    the base rows, as a build without extra renderings does.
    """
    from ...errors import SplitError
    from ..split import read_split

    path = out / "manifest.split.json"
    if not path.exists():
        return None
    try:
        assignment = read_split(path)["assignment"]
    except SplitError:
        return None
    ids = sorted(r["id"] for r in rows)
    if any(i not in assignment for i in ids):
        return None
    first_extra = {tune_stem(task, it): int(it.get("renderings", 1)) for it in items}
    for i in set(assignment).difference(ids):
        stem, _, k = i.rpartition("-r")
        if (assignment[i] != "train" or not k.isdigit() or stem not in first_extra
                or int(k) < first_extra[stem]):
            return None
    return {i: assignment[i] for i in ids}


def _prune(out: Path, keep: set) -> int:
    """Remove files of ids outside ``keep`` (a changed recipe) and stale temporaries."""
    removed = 0
    for sub, suffix in FILE_KINDS:
        d = out / sub
        if not d.is_dir():
            continue
        for p in d.iterdir():
            stale = p.name.startswith(".tmp-") or (p.suffix == suffix and p.stem not in keep)
            if p.is_file() and stale:
                p.unlink()
                removed += 1
    return removed


def _finish(task: str, out: Path, rows: List[dict], failures: List[dict], keep: set, *,
            seed: int, stats: dict, assignment: Optional[dict] = None) -> Path:
    """Write the manifest, failures, split (``assignment``, else made from ``rows``) and card;
    remove the files of ids outside ``keep``."""
    from ..manifest import load_manifest
    from ..split import make_split, write_split
    from .card import write_card

    if not rows:
        atomic_write(out / "failures.jsonl", lambda t: Path(t).write_text(
            "".join(json.dumps(f) + "\n" for f in failures)))
        raise RuntimeError(f"no clip of {task} could be rendered; see {out / 'failures.jsonl'}")
    rows.sort(key=lambda r: r["id"])
    manifest = out / "manifest.jsonl"
    atomic_write(manifest, lambda t: Path(t).write_text(
        "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8"))
    atomic_write(out / "failures.jsonl", lambda t: Path(t).write_text(
        "".join(json.dumps(f, ensure_ascii=False) + "\n" for f in failures), encoding="utf-8"))
    cfg = SplitConfig(seed=seed)
    if assignment is None:
        assignment = make_split(load_manifest(manifest), cfg)
    else:
        assignment = {r["id"]: assignment[r["id"]] for r in rows}
    write_split(out / "manifest.split.json", assignment, seed=seed, ratios=cfg.ratios,
                grouped_by="group")
    stats["pruned"] = _prune(out, keep)
    write_card(task, out, rows, failures, assignment, stats=stats)
    return manifest

