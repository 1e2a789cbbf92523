"""The worker side of ``run_interleaved``: what runs in each contender's spawned process
(``_worker``: import the factory, build and warm each (workload, batch), answer timing requests
with ``time_calls``), the peak-RSS probes it reports with every answer (``_rss_mib``,
``_reset_peak_rss``) and the GEMM peak probe (``gemm_peak``). Separate from the harness side
(``mmengine.harness``, which re-exports these names) because it is the code of the other
process: ``multiprocessing`` starts ``_worker`` there by its qualified name, and it imports
only this module and the statistics, never torch at module level.
"""
from __future__ import annotations

import importlib
import math
import os
import resource
import time
from typing import Callable, Dict, Optional

from .harness_stats import time_calls

#: matrix size of the GEMM peak probe (torch fp32 ``PEAK_N^3`` matmul)
PEAK_N = 2048


# ----------------------------------------------------------------------------- worker side
def _rss_mib() -> float:
    """Peak resident set size of this process in MiB: ``VmHWM`` of /proc/self/status where
    there is one, else ``ru_maxrss``. (On Linux ``ru_maxrss`` survives fork + exec: a spawned
    worker would report at least its parent's peak, e.g. the parent's torch import.)"""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024.0
    except (OSError, ValueError, IndexError):
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # KiB on Linux


def _reset_peak_rss() -> bool:
    """Reset this process's peak RSS to its current RSS (Linux >= 4.0: ``clear_refs`` 5), so
    that the next ``_rss_mib`` covers only what ran since. False where that is impossible."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def gemm_peak(threads: Optional[int], reps: int = 3, n: int = PEAK_N) -> float:
    """FLOP/s of torch fp32 ``n^3`` matmul with ``threads`` threads (torch's default when
    None; best of ``reps``)."""
    import torch

    if threads:
        torch.set_num_threads(threads)
    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b
    best = math.inf
    for _ in range(max(1, reps)):
        t0 = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - t0)
    return 2.0 * n**3 / best


def _load_factory(spec: str) -> Callable:
    mod, _, fn = spec.partition(":")
    return getattr(importlib.import_module(mod), fn)


def _worker(factory: str, kwargs: dict, threads: Optional[int], conn) -> None:
    """Serve requests for one contender until ``None`` arrives (see the module docstring).
    ``threads`` None: the thread-count variables are left as they are."""
    if threads:
        for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
            os.environ[var] = str(threads)
    try:
        if factory:
            info, make = _load_factory(factory)(threads=threads, **kwargs)
        else:
            info, make = "", None
        conn.send(("ready", str(info), _rss_mib()))
    except BaseException as exc:  # noqa: BLE001 - reported to the harness, which skips it
        conn.send(("error", f"{type(exc).__name__}: {exc}", _rss_mib()))
        return
    runs: Dict[object, Callable] = {}
    while True:
        msg = conn.recv()
        if msg is None:
            return
        try:
            if msg[0] in ("prepare", "run"):
                _reset_peak_rss()
            if msg[0] == "prepare":
                _, key, params, batch = msg
                fn = make(params, batch)
                for _ in range(2):
                    fn()
                runs[key] = fn
                conn.send(("ok", None, _rss_mib()))
            elif msg[0] == "run":
                _, key, target_s, max_reps = msg
                conn.send(("ok", time_calls(runs[key], target_s, max_reps), _rss_mib()))
            elif msg[0] == "peak":
                conn.send(("ok", gemm_peak(threads, msg[1]), _rss_mib()))
            else:
                conn.send(("error", f"unknown request {msg[0]!r}", _rss_mib()))
        except Exception as exc:  # noqa: BLE001
            conn.send(("error", f"{type(exc).__name__}: {exc}", _rss_mib()))
