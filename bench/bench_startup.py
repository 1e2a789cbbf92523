"""`mmengine classify ENGINE one.flac` in a fresh process: wall time and peak RSS (not in CI).

What a user pays for one file from the command line: interpreter start, imports, reading and
checking the engine, building the backend, decoding, features, the model, printing. Each run
is a new process (``os.wait4`` gives its own peak RSS); the engines take turns run by run
(``mmengine.harness.interleaved_rounds``, each round starting with the next engine), each with
the backend it was built for. Reported: median and min over the runs.

Its own timer (``one_run``) rather than the harness's warm workers: what is measured is the
cold start of a fresh process, which a warm callable timed repeatedly cannot show.

    python bench/bench_startup.py FILE ENGINE [ENGINE ...] [--runs 5] [--threads 2]
"""
from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from mmengine.harness import interleaved_rounds, median  # noqa: E402


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
    got = interleaved_rounds(
        args.engines, [args.file], args.runs,
        lambda e, f: one_run([exe, "classify", e, f, "--backend", read_header(e)["backend"],
                              "--threads", str(args.threads)]))
    runs = {e: got[(e, args.file)] for e in args.engines}
    print(f"mmengine classify ENGINE {args.file} (fresh process each run, {args.runs} runs, "
          f"--threads {args.threads})")
    print(f"{'engine':14s} {'median s':>9s} {'min s':>7s} {'median MiB':>11s} {'max MiB':>8s}")
    for e, rs in runs.items():
        walls, rss = [r[0] for r in rs], [r[1] for r in rs]
        print(f"{labels[e]:14s} {median(walls):9.3f} {min(walls):7.3f} "
              f"{median(rss):11.1f} {max(rss):8.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
