"""The first layer of the benchmark harness, usable on its own (stdlib only): the order of the
contenders (``rotation``, ``interleaved_rounds``), timing a warm callable (``time_calls``) and
the statistics of the timings (``percentile``, ``median``, ``summarize``, ``ratios``). Separate
from the process running (``mmengine.harness``, which re-exports every name here) because every
interleaved measurement uses it: the harness's workers, and the benchmarks in ``bench/`` that
time fresh processes, launches or CUDA events themselves.
"""
from __future__ import annotations

import math
import statistics
import time
from typing import Callable, Dict, List, Optional, Sequence, Tuple


# ----------------------------------------------------------------------------- scheduling
def rotation(names: Sequence[str], r: int) -> List[str]:
    """The contenders' order in round ``r`` (0-based): ``names`` rotated left by ``r``, so that
    each round starts with the next contender and none always follows the same peer."""
    names = list(names)
    if not names:
        return names
    k = r % len(names)
    return names[k:] + names[:k]


def interleaved_rounds(names: Sequence[str], keys: Sequence, rounds: int,
                       measure: Callable[[str, object], object], *,
                       skip: Optional[Callable[[str, object], bool]] = None,
                       after_round: Optional[Callable[[int], None]] = None
                       ) -> Dict[Tuple[str, object], list]:
    """Round by round, for every key, every contender once in ``rotation(names, r)`` order:
    ``measure(name, key)``; returns ``{(name, key): [one result per round]}``.

    The loop of every interleaved measurement (``run_interleaved``'s worker requests, fresh
    processes, training launches, CUDA-event timings): the caller's ``measure`` does the
    timing and returns what it measured (a list of call times for ``summarize``, a number, a
    record). ``skip(name, key)`` true leaves that measurement out (e.g. after a failure);
    ``after_round(r)`` runs after each round (a GEMM probe, a progress line)."""
    out: Dict[Tuple[str, object], list] = {(n, k): [] for n in names for k in keys}
    for r in range(rounds):
        order = rotation(names, r)
        for k in keys:
            for n in order:
                if skip is not None and skip(n, k):
                    continue
                out[(n, k)].append(measure(n, k))
        if after_round is not None:
            after_round(r)
    return out


def time_calls(fn: Callable[[], object], target_s: float = 0.25, max_reps: int = 5,
               clock: Callable[[], float] = time.perf_counter) -> List[float]:
    """Seconds of up to ``max_reps`` consecutive calls of ``fn`` (at least one), stopping once
    ``target_s`` has passed since the first call began."""
    times: List[float] = []
    start = clock()
    while len(times) < max(1, max_reps) and (not times or clock() - start < target_s):
        t0 = clock()
        fn()
        times.append(clock() - t0)
    return times


# ----------------------------------------------------------------------------- statistics
def percentile(xs: Sequence[float], q: float) -> float:
    """The ``q``-th percentile of ``xs`` (linear interpolation, as ``numpy.percentile``);
    NaN for no values."""
    xs = sorted(xs)
    if not xs:
        return math.nan
    k = (len(xs) - 1) * q / 100.0
    lo, hi = math.floor(k), math.ceil(k)
    return xs[lo] + (xs[hi] - xs[lo]) * (k - lo)


def median(xs: Sequence[float]) -> float:
    """Median of ``xs`` (NaN for no values)."""
    return statistics.median(xs) if len(xs) else math.nan


def summarize(rounds: Sequence[Sequence[float]]) -> dict:
    """Statistics of one contender on one key from its per-round call times (seconds):
    ``median_s`` (median over rounds of each round's best call), ``round_best_s``, ``p50_s``
    and ``p99_s`` (over every call of every round), ``calls``."""
    bests = [min(t) for t in rounds if len(t)]
    calls = [x for t in rounds for x in t]
    return {"median_s": median(bests), "round_best_s": bests, "p50_s": percentile(calls, 50),
            "p99_s": percentile(calls, 99), "calls": len(calls)}


def ratios(medians: Dict[str, float]) -> Dict[str, Dict[str, float]]:
    """``{c: {p: medians[p] / medians[c]}}`` for every pair of contenders (> 1: c is faster
    than p; with throughputs instead of times the ratio reads the other way)."""
    return {c: {p: medians[p] / m for p in medians if p != c} for c, m in medians.items()}
