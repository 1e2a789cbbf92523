"""`mmengine classify ENGINE one.flac` in a fresh process: wall time and peak RSS (not in CI).

What a user pays for one file from the command line: interpreter start, imports, reading and
checking the engine, building the backend, decoding, features, the model, printing. Each run
is a new process (``os.wait4`` gives its own peak RSS); the engines take turns run by run,
each with the backend it was built for. Reported: median and min over the runs.

    python bench/bench_startup.py FILE ENGINE [ENGINE ...] [--runs 5] [--threads 2]
"""
from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import time


def one_run(cmd) -> tuple:
    """(wall seconds, peak RSS MiB) of one process running ``cmd``."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    proc.returncode = os.waitstatus_to_exitcode(status)
    err = proc.stderr.read().decode(errors="replace")
    proc.stderr.close()
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} exited {proc.returncode}:\n{err[-2000:]}")
    return wall, usage.ru_maxrss / 1024.0  # Linux: KiB


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("file")
    ap.add_argument("engines", nargs="+", metavar="ENGINE")
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args(argv)
    from mmengine.runtime.engine_file import read_header

    exe = shutil.which("mmengine") or sys.exit("the mmengine command is not on PATH")
    labels = {e: "{backend} {dtype}".format(**read_header(e)) for e in args.engines}
    runs = {e: [] for e in args.engines}
    for _ in range(args.runs):
        for e in args.engines:
            runs[e].append(one_run([exe, "classify", e, args.file, "--backend",
                                    read_header(e)["backend"], "--threads", str(args.threads)]))
    print(f"mmengine classify ENGINE {args.file} (fresh process each run, {args.runs} runs, "
          f"--threads {args.threads})")
    print(f"{'engine':14s} {'median s':>9s} {'min s':>7s} {'median MiB':>11s} {'max MiB':>8s}")
    for e, rs in runs.items():
        walls, rss = [r[0] for r in rs], [r[1] for r in rs]
        print(f"{labels[e]:14s} {statistics.median(walls):9.3f} {min(walls):7.3f} "
              f"{statistics.median(rss):11.1f} {max(rss):8.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
