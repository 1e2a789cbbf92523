"""pytest-benchmark fixtures of the peer benchmarks (``make bench`` = ``pytest -q bench``; not in
CI: ``tests/`` is the test suite).

Two kinds of test per suite:

* ``test_<contender>``: one contender in the pytest process, one small configuration, timed by
  ``benchmark.pedantic`` (pytest-benchmark's own timer, kept so that these tests compare with
  other pytest-benchmark runs; contenders that bring their own thread pools share the process
  here, so prefer the interleaved numbers).
* ``test_<suite>_interleaved``: the multi-process interleaved harness
  (``mmengine/harness.py``) with few rounds; its per-contender medians and ratios go to
  ``benchmark.extra_info`` (the pedantic timing of that test is the harness's own run time).

Options: ``--bench-rounds N`` (interleaved rounds, default 2), ``--bench-threads N`` (2).
"""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def pytest_addoption(parser):
    group = parser.getgroup("mmengine-bench")
    group.addoption("--bench-rounds", type=int, default=2,
                    help="rounds of the interleaved peer benchmarks (default 2)")
    group.addoption("--bench-threads", type=int, default=2,
                    help="threads of every contender (default 2)")


@pytest.fixture(scope="session")
def bench_threads(request) -> int:
    return int(request.config.getoption("--bench-threads"))


@pytest.fixture(scope="session")
def bench_rounds(request) -> int:
    return int(request.config.getoption("--bench-rounds"))


@pytest.fixture(scope="session")
def clips():
    """(paths, description) of up to 8 30 s clips (folk set if built, else synthetic)."""
    from bench.contenders import clip_paths

    return clip_paths(8)


def make_or_skip(factory, params: dict, batch: int, **kwargs):
    """``factory(**kwargs)`` → (info, make) → ``make(params, batch)``, warmed twice; skips the
    test when the contender cannot be built here (missing package, no native module...)."""
    from mmengine.errors import BackendUnavailableError

    try:
        info, make = factory(**kwargs)
        fn = make(params, batch)
    except (ImportError, BackendUnavailableError) as exc:
        pytest.skip(f"contender unavailable: {type(exc).__name__}: {exc}")
    out = fn()
    fn()
    return info, fn, out


def benchmark_interleaved(benchmark, contenders, workloads, batches, **kwargs):
    """One ``run_interleaved`` as the benchmark's single pedantic round (group "interleaved"),
    its figures recorded with ``record_interleaved``; returns ``(result, extra_info)``."""
    from mmengine.harness import run_interleaved

    result = {}

    def run():
        result.update(run_interleaved(contenders, workloads, batches, log=lambda m: None,
                                      **kwargs))

    benchmark.group = "interleaved"
    benchmark.pedantic(run, rounds=1, iterations=1)
    return result, record_interleaved(benchmark, result)


def record_interleaved(benchmark, result: dict) -> dict:
    """Put a harness result's medians, throughput and ratios into ``benchmark.extra_info``."""
    info = benchmark.extra_info
    info["suite"] = result["suite"]
    info["gemm_peak_gflops"] = (result["gemm_peak_flops"] or 0) / 1e9
    info["contenders"] = result["contenders"]
    for r in result["results"]:
        key = f"{r['workload']}/b{r['batch']}/{r['contender']}"
        if "skipped" in r:
            info[key] = {"skipped": r["skipped"]}
            continue
        info[key] = {k: r.get(k) for k in ("median_s", "items_per_s", "p50_s", "p99_s",
                                            "peak_rss_mib", "gflops", "frac_gemm_peak",
                                            "ratios")}
    return info
