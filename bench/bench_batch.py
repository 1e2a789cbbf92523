"""Batch classification on Ray against ``Engine.classify`` in one process (not run in CI).

Contenders, over the same N folk clips (30 s FLAC, from the built-in data set):

* ``inproc-1t``, ``inproc-2t``: one warm ``Engine`` (loaded once, with 1 or 2 threads: backend,
  front end and decoding threads) classifying the N files in one ``Engine.classify`` call
  (also its CPU seconds per 100 clips: the engine's own work).
* ``ray-AxT``: ``mmengine.batch_classify(..., ray=True, workers=A, threads=T)`` on a local Ray
  cluster started once for the whole benchmark (``ray.init(num_cpus=CPUS)``); every run starts
  its actor pool (each actor loads the engine once) and writes a fresh JSONL RESULTS, as a user
  run does. Reported three ways: ``wall`` (N / the call's classification time, start-up included)
  and ``steady``, the marginal rate of a long run: each round also runs the first N/2 clips,
  and steady = (N - N/2) / (time of N - time of N/2), so the fixed start-up (cluster
  connection, actors started, engine loaded: a few seconds) cancels out. In-process: steady =
  wall (nothing to start). ``in-run``: the rate after the first committed batch within the
  full run (``BatchSummary.steady_items_per_s``; with A actors it counts up to A - 1 batches
  begun before that commit, so it leans in Ray's favour by up to (A - 1) x batch / N). Also
  the CPU seconds per 100 clips that Ray's own processes (GCS, raylet, Ray Data's helper
  actors, idle workers) and this driver spent during the full run: the CPU Ray takes beside
  the actors (which have exited when it is read).

Rounds are interleaved (``mmengine.harness.interleaved_rounds``: each round starts with the
next contender), after one untimed warm-up round (page cache, Ray's worker pool); tables give
the median over rounds (``harness.median``), and ratios of medians. A contender's turn is a
whole run (a Ray cluster's actors started, a manifest classified, results written), timed
around the call and read from its ``BatchSummary``, not a warm callable the harness's workers
could time call by call; the long-track profile times its repeated calls with
``harness.time_calls``. Targets (issue 14): Ray overhead at equal total threads <= 15 % (``ray-1x2`` steady vs
``inproc-2t``), and 2 actors >= 1.7x one actor of one thread each (``ray-2x1`` vs ``ray-1x1``).

    python bench/bench_batch.py --engine folk.mme [--clips 200] [--rounds 3] [--batch-size 8]
        [--json out.json]

Run it under the bench lock (``flock /tmp/mmengine-bench.lock python bench/bench_batch.py
...``); on a shared machine say what else ran.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from mmengine.harness import interleaved_rounds, median, time_calls  # noqa: E402


def folk_clips(n: int):
    from mmengine.data.corpus import default_dir

    files = sorted((default_dir("folk") / "audio").glob("*.flac"))[:n]
    if len(files) < n:
        raise SystemExit(f"only {len(files)} folk clips (build them: mmengine data build folk)")
    return files


def stage_profile(engine_path, files, reps: int = 2) -> dict:
    """Milliseconds per 30 s clip on one thread, best of ``reps`` passes over ``files``:
    decode (``load_audio``), front end (``compute_serial`` of its windows), and the whole
    ``Engine.classify`` (workers=1); ``rest`` = whole - decode - front end (the model, and
    the text/symbolic inputs and glue). Its own timer: the decode and front-end times are
    sums of per-file stage times inside one pass, not calls of one callable."""
    from mmengine.data.audio import load_audio, windows
    from mmengine.runtime import Engine

    eng = Engine.load(engine_path, threads=1)
    best = {}
    for _ in range(reps):
        t = {"decode": 0.0, "features": 0.0}
        for f in files:
            t0 = time.perf_counter()
            y = load_audio(str(f), eng.audio_cfg)
            t1 = time.perf_counter()
            eng.frontend.compute_serial(windows(y, eng.window))
            t["decode"] += t1 - t0
            t["features"] += time.perf_counter() - t1
        t0 = time.perf_counter()
        eng.classify([str(f) for f in files], workers=1)
        t["whole"] = time.perf_counter() - t0
        for k, v in t.items():
            best[k] = min(best.get(k, float("inf")), 1000 * v / len(files))
    best["rest"] = best["whole"] - best["decode"] - best["features"]
    return best


def long_tracks(files, work: Path, minutes: float = 4.0) -> dict:
    """A library-like track: ``minutes`` of folk clips end to end, at 44,100 Hz stereo, as
    FLAC and as MP3 (libsndfile); returns {format: path}."""
    import numpy as np
    import soundfile as sf
    import soxr

    parts, n = [], 0
    for f in files:
        y, sr = sf.read(str(f), dtype="float32")
        parts.append(y)
        n += len(y)
        if n >= minutes * 60 * sr:
            break
    y = soxr.resample(np.concatenate(parts)[:int(minutes * 60 * sr)], sr, 44100)
    st = np.stack([y, 0.9 * y], axis=1)
    out = {}
    for fmt in ("flac", "mp3"):
        p = work / f"track.{fmt}"
        sf.write(str(p), st, 44100, format=fmt.upper())
        out[fmt] = p
    return out


def track_profile(engine_path, tracks: dict, reps: int = 3) -> dict:
    """Per long track on one thread, best of ``reps`` consecutive calls
    (``harness.time_calls``): bytes, decode ms (``load_audio``: decode, mix, resample to the
    engine's rate) and whole ``Engine.classify`` ms."""
    from mmengine.data.audio import load_audio
    from mmengine.runtime import Engine

    eng = Engine.load(engine_path, threads=1)
    out = {}
    for fmt, p in tracks.items():
        got = []
        dec = min(time_calls(lambda: load_audio(str(p), eng.audio_cfg), float("inf"), reps))
        whole = min(time_calls(lambda: got.append(eng.classify([str(p)], workers=1)[0]),
                               float("inf"), reps))
        r = got[-1]
        out[fmt] = {"bytes": p.stat().st_size, "windows": len(r.windows),
                    "decode_ms": 1000 * dec, "whole_ms": 1000 * whole}
    return out


def driver_profile(work: Path, n: int = 100_000, batch: int = 32) -> dict:
    """The driver's own cost per row, with synthetic rows of the real shape: committing
    shards of ``batch`` rows (JSON, fsync, rename) and assembling Parquet and JSONL. Its own
    timer: one pass of ``n`` rows is the measurement (rows/s over the pass), not repeated
    calls."""
    from mmengine.batch import BatchInput, ResultStore

    ident = {"engine_sha256": "0" * 64, "engine_version": "0.1.0"}
    items = [BatchInput(id=f"track-{i:07d}", path=f"/library/a/b/track-{i:07d}.mp3")
             for i in range(n)]

    def row(it):
        return {"id": it.id, "path": it.path, "label": "reel", "score": 0.61,
                "top_k": [{"label": "reel", "score": 0.61}, {"label": "jig", "score": 0.3},
                          {"label": "air", "score": 0.09}], "windows": 8,
                "error_type": None, "error": None, **ident}

    out = {}
    for fmt in ("jsonl", "parquet"):
        with ResultStore(work / f"driver.{fmt}", ident) as store:
            t0 = time.perf_counter()
            for s in range(0, n, batch):
                store.commit([row(it) for it in items[s:s + batch]])
            t1 = time.perf_counter()
            store.finish(items)
            t2 = time.perf_counter()
        out[fmt] = {"commit_rows_per_s": n / (t1 - t0), "assemble_rows_per_s": n / (t2 - t1),
                    "bytes_per_row": (work / f"driver.{fmt}").stat().st_size / n}
        (work / f"driver.{fmt}").unlink()
    return out


def cpu_seconds() -> dict:
    """CPU seconds (user + system) so far of this process ("driver"), of Ray Data's actors
    running ``BatchClassifier`` ("actors") and of every other Ray process ("ray")."""
    hz = os.sysconf("SC_CLK_TCK")
    out = {"driver": 0.0, "actors": 0.0, "ray": 0.0}
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            cmd = (d / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            st = (d / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        t = (int(st[11]) + int(st[12])) / hz
        if int(d.name) == os.getpid():
            out["driver"] += t
        elif "MapBatches(BatchClassifier)" in cmd:
            out["actors"] += t
        elif "ray" in cmd:
            out["ray"] += t
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--engine", required=True, help="engine file (.mme)")
    p.add_argument("--clips", type=int, default=200)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--batch-size", type=int, default=8, help="inputs per actor call")
    p.add_argument("--cpus", type=int, default=2, help="CPUs of the local Ray cluster")
    p.add_argument("--contenders", default="inproc-1t,inproc-2t,ray-1x1,ray-1x2,ray-2x1")
    p.add_argument("--profile", type=int, default=20,
                   help="clips of the one-thread stage profile (0: none)")
    p.add_argument("--track-minutes", type=float, default=4.0,
                   help="length of the library-like track profiled (0: none)")
    p.add_argument("--driver-rows", type=int, default=100_000,
                   help="synthetic rows of the driver profile (0: none)")
    p.add_argument("--json", help="write the raw numbers here")
    args = p.parse_args(argv)

    import ray

    from mmengine.batch import batch_classify, read_results
    from mmengine.runtime import Engine

    files = folk_clips(args.clips)
    work = Path(tempfile.mkdtemp(prefix="bench-batch-"))
    manifest = work / "clips.jsonl"
    manifest.write_text("".join(json.dumps({"id": f.name, "path": str(f)}) + "\n"
                                for f in files))
    half = work / "half.jsonl"
    half.write_text("".join(json.dumps({"id": f.name, "path": str(f)}) + "\n"
                            for f in files[:len(files) // 2]))
    names = args.contenders.split(",")
    profile = stage_profile(args.engine, files[:args.profile]) if args.profile else {}
    if profile:
        print("one thread, ms per 30 s clip: " + ", ".join(f"{k} {v:.1f}"
                                                         for k, v in profile.items()),
              flush=True)
    tracks = (track_profile(args.engine, long_tracks(folk_clips(max(args.clips, 16)), work,
                                                     args.track_minutes))
              if args.track_minutes else {})
    for fmt, v in tracks.items():
        print(f"{args.track_minutes:g} min 44.1 kHz stereo {fmt}: {v['bytes'] / 1e6:.1f} MB, "
              f"{v['windows']} windows, one thread: decode {v['decode_ms']:.0f} ms, whole "
              f"classify {v['whole_ms']:.0f} ms", flush=True)
    driver = driver_profile(work, args.driver_rows) if args.driver_rows else {}
    for fmt, v in driver.items():
        print(f"driver {fmt}: commit {v['commit_rows_per_s']:.0f} rows/s, assemble "
              f"{v['assemble_rows_per_s']:.0f} rows/s, {v['bytes_per_row']:.0f} B/row",
              flush=True)
    engines = {}
    for name in names:
        if name.startswith("inproc-"):
            t = int(name.split("-")[1].rstrip("t"))
            engines[name] = (Engine.load(args.engine, threads=t), t)
    ray.init(num_cpus=args.cpus, include_dashboard=False, logging_level="WARNING")
    labels = {}
    runs = [0]

    def run(name):
        if name in engines:
            eng, t = engines[name]
            t0, c0 = time.perf_counter(), time.process_time()
            res = eng.classify([str(f) for f in files], workers=t)
            dt, cpu = time.perf_counter() - t0, time.process_time() - c0
            labels[name] = {f.name: r.label for f, r in zip(files, res)}
            return {"wall": len(files) / dt, "steady": len(files) / dt, "in_run": len(files) / dt,
                    "startup_s": 0.0,
                    "ray_cpu_s_per_100": 0.0,
                    "engine_cpu_s_per_100": 100 * cpu / len(files)}
        a, t = (int(v) for v in name.split("-")[1].split("x"))
        seconds = {}
        for source, n in ((half, len(files) // 2), (manifest, len(files))):
            runs[0] += 1
            out = work / f"{name}-{runs[0]}.jsonl"
            cpu0 = cpu_seconds()
            s = batch_classify(args.engine, source, out, ray=True, workers=a, threads=t,
                               batch_size=args.batch_size, progress=False)
            cpu1 = cpu_seconds()
            cpu = {k: cpu1[k] - cpu0[k] for k in cpu0}
            assert s.failed == 0 and s.classified == n, s.format()
            if n == len(files):
                labels[name] = {r["id"]: r["label"] for r in read_results(out)}
            out.unlink()
            seconds[n] = (s, cpu)
        (full, cpu), (part, _) = seconds[len(files)], seconds[len(files) // 2]
        return {"wall": full.items_per_s,
                "steady": (full.classified - part.classified) / (full.seconds - part.seconds),
                "in_run": full.steady_items_per_s,
                "startup_s": full.startup_s,
                # Ray's own work (daemons + this driver) per 100 clips of the full run
                "ray_cpu_s_per_100": 100 * (cpu["ray"] + cpu["driver"]) / len(files),
                "engine_cpu_s_per_100": float("nan")}  # the actors have exited by then

    print(f"{len(files)} clips, contenders {names}, batch size {args.batch_size}, "
          f"{args.cpus} CPUs; warm-up round", flush=True)
    for name in names:
        run(name)
    done = [0]

    def measure(name, _):
        got = run(name)
        done[0] += 1
        print(f"round {(done[0] - 1) // len(names) + 1} {name:10s} wall {got['wall']:6.2f} "
              f"items/s, steady "
              f"{got['steady']:6.2f} items/s, in-run {got['in_run']:6.2f}, start-up "
              f"{got['startup_s']:.1f} s, CPU s per 100 clips: Ray + driver "
              f"{got['ray_cpu_s_per_100']:.2f}, engine {got['engine_cpu_s_per_100']:.2f}",
              flush=True)
        return got

    timed = interleaved_rounds(names, [None], args.rounds, measure)
    results = {n: timed[(n, None)] for n in names}
    ray.shutdown()
    ref = labels[names[0]]
    agree = {n: sum(labels[n][k] == ref[k] for k in ref) / len(ref) for n in names}

    keys = ("wall", "steady", "in_run", "startup_s", "ray_cpu_s_per_100",
            "engine_cpu_s_per_100")
    med = {n: {k: median([x[k] for x in results[n]]) for k in keys} for n in names}
    lines = ["| contender | wall items/s | steady items/s | in-run items/s | start-up s | "
             "Ray + driver CPU s / 100 clips | engine CPU s / 100 clips | labels = "
             f"{names[0]} |",
             "|---|---|---|---|---|---|---|---|"]
    for n in names:
        lines.append(f"| {n} | {med[n]['wall']:.2f} | {med[n]['steady']:.2f} | "
                     f"{med[n]['in_run']:.2f} | "
                     f"{med[n]['startup_s']:.1f} | {med[n]['ray_cpu_s_per_100']:.2f} | "
                     f"{med[n]['engine_cpu_s_per_100']:.2f} | {agree[n]:.3f} |")
    ratios = {}

    def ratio(a, b, key):
        if a in med and b in med:
            ratios[f"{a}/{b} {key}"] = med[a][key] / med[b][key]

    for key in ("steady", "in_run", "wall"):
        ratio("ray-1x2", "inproc-2t", key)
        ratio("ray-1x1", "inproc-1t", key)
        ratio("ray-2x1", "ray-1x1", key)
        ratio("ray-2x1", "inproc-2t", key)
    lines.append("")
    lines += [f"- {k}: {v:.3f}" for k, v in ratios.items()]
    print("\n".join(lines))
    if args.json:
        Path(args.json).write_text(json.dumps({"clips": len(files), "rounds": results,
                                               "median": med, "ratios": ratios,
                                               "label_agreement": agree,
                                               "stage_ms_per_clip_1thread": profile,
                                               "long_track_1thread": tracks,
                                               "driver": driver,
                                               "batch_size": args.batch_size,
                                               "cpus": args.cpus}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
