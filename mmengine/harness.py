"""The benchmark harness: every timing of mmengine and of ``bench/`` goes through it.

Two layers:

* Scheduling and statistics, usable on their own (stdlib only): ``rotation`` (the order of the
  contenders in round r: each round starts with the next one, so that no contender always
  follows the same peer), ``interleaved_rounds`` (round by round, for every key, every
  contender once, calling a ``measure(contender, key)`` the caller supplies: a worker's timing
  request, a fresh process, a launch, a CUDA-event timing), ``time_calls`` (up to ``max_reps``
  consecutive calls of a warm callable until ``target_s`` has passed), ``percentile``,
  ``summarize`` (median over rounds of the round bests, p50 / p99 over every call) and
  ``ratios``.
* ``run_interleaved``: warm callables, each contender in its OWN spawned process (two OpenMP /
  TBB / DALI thread pools in one process would spin against each other, and one contender's
  allocations would show in another's memory). Used by ``mmengine bench``, ``bench/run_peers.py``
  and the pytest benchmarks in ``bench/``, ``bench/bench_native_lstm.py`` and
  ``bench/bench_gpu_frontend.py``.

Method of ``run_interleaved``:

* The worker imports the contender's factory (``"module:function"``; spawned workers get the
  parent's ``sys.path``), which returns ``(info, make)``; ``make(workload_params, batch)``
  builds the callable for one (workload, batch) once, and the worker calls it twice (warm-up)
  before any timing.
* The harness then sends "time this key" requests round by round, contenders interleaved
  (round r: for every workload, for every batch: A B C A B C ..., in ``rotation(names, r)``
  order), so that the machine's fast and slow phases (about 2x apart, seconds long, on a
  shared VM) hit every contender alike; before each request it pauses ``SETTLE_S`` so that the
  previous contender's spinning thread pools stop. Each request is one ``time_calls``: up to
  ``max_reps`` consecutive calls (at least one, stopping once ``target_s`` has passed); the
  harness keeps the best call of the request ("round best").
* Reported per (workload, batch, contender) (``summarize``): the median over rounds of the
  round bests (``median_s``), throughput = batch / median_s (sequences/s or clips/s), p50 / p99
  over every individual call latency of all rounds, the worker's peak RSS while building and
  running that (workload, batch) (``VmHWM``, reset before every request with
  ``/proc/self/clear_refs``; it includes what the process holds for its other workloads; where
  the reset is impossible it is the process's lifetime peak, ``ru_maxrss``), GFLOP/s and the
  fraction of the GEMM peak where the workload has a FLOP count (``mmengine.flops``), and the
  ratio to every other contender of the same (workload, batch) (``ratios``):
  ``ratio[c][p] = median_s[p] / median_s[c]`` (> 1: c is faster than p).
* A contender whose factory fails is skipped (its reason in ``contenders`` and ``notes``); one
  whose build or call raises, or whose process dies, is dropped for that (workload, batch) and
  its row says why (``skipped``: the exception, or "worker died (...; exit code N)").
* GEMM peak (the ceiling, optional): torch fp32 ``2048^3`` matmul with the same thread count,
  measured between rounds in one worker (a named contender's, or a dedicated one), best over
  rounds.

No torch import at module level (``mmengine bench`` of a native or ONNX engine runs without
torch; only the GEMM peak probe needs it).

    from mmengine.harness import Contender, Workload, run_interleaved, markdown
    res = run_interleaved([Contender("a", "bench.contenders:torch_eager_factory")],
                          [Workload("T646", {"kind": "lstm", "T": 646, ...})], [1, 8])

Where the parts live (this module re-exports every public name): ``harness_stats``
(scheduling and statistics), ``harness_worker`` (the contender's process: ``_worker``, the RSS
and GEMM peak probes), ``harness_report`` (``machine_info``, ``markdown``, ``write_outputs``);
here, the harness side: ``Contender``, ``Workload`` and ``run_interleaved`` with its worker
handles.
"""
from __future__ import annotations

import math
import multiprocessing as mp
import time
from dataclasses import asdict, dataclass, field
from typing import Callable, Dict, List, Optional, Sequence

from .harness_report import (_describe, _fmt, machine_info, markdown,  # noqa: F401 (re-exported)
                             write_outputs)
from .harness_stats import (interleaved_rounds, median, percentile,  # noqa: F401 (re-exported)
                            ratios, rotation, summarize, time_calls)
from .harness_worker import (PEAK_N, _load_factory, _reset_peak_rss,  # noqa: F401 (re-exported)
                             _rss_mib, _worker, gemm_peak)

#: seconds the harness waits for one answer of a worker before giving it up
ANSWER_TIMEOUT_S = 900.0
PEAK_WORKER = "gemm-peak"


#: pause before each timing request, seconds (see run_interleaved)
SETTLE_S = 0.05


@dataclass(frozen=True)
class Contender:
    """A contender: ``factory`` ("module:function") is called in the worker as
    ``factory(threads=threads, **kwargs)`` and returns ``(info: str, make)`` with
    ``make(params: dict, batch: int) -> callable()``."""

    name: str
    factory: str
    kwargs: dict = field(default_factory=dict)


@dataclass(frozen=True)
class Workload:
    """A workload: ``params`` go to every contender's ``make`` (picklable); ``unit`` names one
    item ("sequences", "clips"); ``flops_per_item`` > 0 enables GFLOP/s and % of GEMM peak."""

    name: str
    params: dict
    unit: str = "items"
    flops_per_item: float = 0.0


# ----------------------------------------------------------------------------- harness side
class _Proc:
    def __init__(self, ctx, name: str, factory: str, kwargs: dict, threads: Optional[int]):
        self.name = name
        self.conn, child = ctx.Pipe()
        self.proc = ctx.Process(target=_worker, args=(factory, kwargs, threads, child),
                                daemon=True, name=f"bench-{name}")
        self.proc.start()
        child.close()
        self.error: Optional[str] = None
        self.info = ""
        self.rss = self.last_rss = 0.0

    def ask(self, msg):
        """Send ``msg``; return the answer's payload, or raise RuntimeError with the reason."""
        try:
            self.conn.send(msg)
            if not self.conn.poll(ANSWER_TIMEOUT_S):
                raise RuntimeError(f"no answer in {ANSWER_TIMEOUT_S:.0f} s")
            status, payload, rss = self.conn.recv()
        except (EOFError, BrokenPipeError, ConnectionResetError, OSError) as exc:
            raise RuntimeError(f"worker died ({type(exc).__name__}; exit code "
                               f"{self.proc.exitcode})") from exc
        self.rss, self.last_rss = max(self.rss, rss), rss
        if status != "ok":
            raise RuntimeError(payload)
        return payload

    def start(self) -> None:
        try:
            if not self.conn.poll(ANSWER_TIMEOUT_S):
                raise RuntimeError("no answer at start")
            status, payload, rss = self.conn.recv()
        except (EOFError, OSError) as exc:
            status, payload, rss = "error", f"worker died at start ({exc!r})", 0.0
        self.rss = rss
        if status == "ready":
            self.info = payload
        else:
            self.error = payload

    def close(self) -> None:
        try:
            if self.proc.is_alive():
                self.conn.send(None)
        except OSError:
            pass
        self.proc.join(timeout=30)
        if self.proc.is_alive():
            self.proc.terminate()
            self.proc.join(timeout=5)


def run_interleaved(contenders: Sequence[Contender], workloads: Sequence[Workload],
                    batches: Sequence[int], *, rounds: int = 5, threads: Optional[int] = 2,
                    target_s: float = 0.25, max_reps: int = 5,
                    peak_in: Optional[str] = PEAK_WORKER, peak_reps: int = 3,
                    suite: str = "", log: Callable[[str], None] = print) -> dict:
    """Run every contender on every (workload, batch), interleaved; see the module docstring.

    Args:
        contenders: the contenders (names unique).
        workloads: the workloads; each contender's ``make`` gets ``workload.params``.
        batches: batch sizes (measured in this order).
        rounds: timed rounds.
        threads: threads of every contender and of the GEMM probe (passed to each factory as
            ``threads=``, and set as OMP/MKL/OpenBLAS_NUM_THREADS in each worker; None: the
            factories' and libraries' own defaults).
        target_s, max_reps: a timing request runs calls until ``target_s`` has passed or
            ``max_reps`` calls were made (at least one).
        peak_in: where to measure the GEMM peak between rounds: a contender's name, ``"gemm-peak"``
            (a dedicated worker) or None (not measured).
        suite: name stored in the result.
        log: progress lines.
    Returns:
        a JSON-able dict: ``suite``, ``settings``, ``contenders`` ({name: info / skipped
        reason}), ``gemm_peak_flops`` (best, and per round), ``results`` (one row per
        (workload, batch, contender) with ``median_s``, ``round_best_s``, ``p50_s``, ``p99_s``,
        ``items_per_s``, ``unit``, ``peak_rss_mib``, ``gflops``, ``frac_gemm_peak``,
        ``ratios`` {peer: median_s[peer] / median_s[this]}), ``notes``.
    """
    names = [c.name for c in contenders]
    if len(set(names)) != len(names):
        raise ValueError(f"contender names must be unique: {names}")
    ctx = mp.get_context("spawn")
    procs: Dict[str, _Proc] = {}
    notes: List[str] = []
    for c in contenders:
        procs[c.name] = _Proc(ctx, c.name, c.factory, dict(c.kwargs), threads)
    if peak_in == PEAK_WORKER:
        procs[PEAK_WORKER] = _Proc(ctx, PEAK_WORKER, "", {}, threads)
    for p in procs.values():
        p.start()
        if p.error:
            log(f"[{suite}] skipping {p.name}: {p.error}")
            notes.append(f"{p.name} skipped: {p.error}")
    live = [c.name for c in contenders if not procs[c.name].error]
    keys = [(w.name, b) for w in workloads for b in batches]
    wl = {w.name: w for w in workloads}
    failed: Dict[tuple, str] = {}  # (contender, workload, batch) -> reason
    rss: Dict[tuple, float] = {}
    try:
        # build and warm every (contender, workload, batch) once, before any timing
        for k in keys:
            for c in live:
                try:
                    procs[c].ask(("prepare", k, wl[k[0]].params, k[1]))
                    rss[(c, k)] = procs[c].last_rss
                except RuntimeError as exc:
                    failed[(c, k)] = str(exc)
                    log(f"[{suite}] {c} cannot run {k[0]} batch {k[1]}: {exc}")
        peaks: List[float] = []
        t_round = [time.perf_counter()]

        def measure(c, k):
            # the previous contender's worker threads get SETTLE_S to stop spinning (ORT's and
            # OpenMP's pools spin for a while after a call and would steal this one's cores)
            time.sleep(SETTLE_S)
            try:
                got = procs[c].ask(("run", k, target_s, max_reps))
            except RuntimeError as exc:
                failed[(c, k)] = str(exc)
                log(f"[{suite}] {c} failed on {k[0]} batch {k[1]}: {exc}")
                return None
            rss[(c, k)] = max(rss.get((c, k), 0.0), procs[c].last_rss)
            return got

        def after_round(r):
            nonlocal peak_in
            if peak_in is not None and peak_in in procs and not procs[peak_in].error:
                try:
                    peaks.append(procs[peak_in].ask(("peak", peak_reps)))
                except RuntimeError as exc:
                    notes.append(f"GEMM peak probe failed in {peak_in}: {exc}")
                    peak_in = None
            now = time.perf_counter()
            log(f"[{suite}] round {r + 1}/{rounds} done in {now - t_round[0]:.1f} s")
            t_round[0] = now

        got = interleaved_rounds(live, keys, rounds, measure,
                                 skip=lambda c, k: (c, k) in failed, after_round=after_round)
        times = {ck: [t for t in v if t is not None] for ck, v in got.items()}
    finally:
        for p in procs.values():
            p.close()
    peak = max(peaks) if peaks else math.nan
    results = []
    for wname, b in keys:
        w = wl[wname]
        stats = {c: summarize(times[(c, (wname, b))]) for c in live
                 if (c, (wname, b)) not in failed and times[(c, (wname, b))]}
        rel = ratios({c: st["median_s"] for c, st in stats.items()})
        for c in names:
            row = {"workload": wname, "batch": b, "contender": c, "unit": w.unit}
            if c not in stats:
                row["skipped"] = procs[c].error or failed.get((c, (wname, b)), "no timings")
                results.append(row)
                continue
            m = stats[c]["median_s"]
            row.update(stats[c], items_per_s=b / m,
                       peak_rss_mib=rss.get((c, (wname, b)), procs[c].rss), ratios=rel[c])
            if w.flops_per_item > 0:
                gf = w.flops_per_item * b / m
                row["gflops"] = gf / 1e9
                row["frac_gemm_peak"] = gf / peak if peak == peak else None
            results.append(row)
    return {
        "suite": suite,
        "settings": {"rounds": rounds, "batches": list(batches), "threads": threads,
                     "target_s": target_s, "max_reps": max_reps, "peak_in": peak_in},
        "workloads": [asdict(w) for w in workloads],
        "contenders": {c: ({"skipped": procs[c].error} if procs[c].error else
                           {"info": procs[c].info, "factory": next(x.factory for x in contenders
                                                                   if x.name == c)})
                       for c in names},
        "gemm_peak_flops": peak if peak == peak else None,
        "gemm_peak_rounds": peaks,
        "results": results,
        "notes": notes,
    }
