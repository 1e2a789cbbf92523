"""pytest-benchmark: the front end (decode + log-Mel + MFCC of 30 s clips at 22,050 Hz), batch 2,
per contender in-process, plus the interleaved multi-process comparison
(``bench/run_peers.py --suite frontend`` is the full version)."""
from __future__ import annotations

import numpy as np
import pytest

from bench import contenders as C
from bench.conftest import benchmark_interleaved, make_or_skip

BATCH = 2
FACTORIES = {
    "librosa": C.librosa_factory,
    "dali-cpu": C.dali_cpu_factory,
    "torch": C.torch_frontend_factory,
    "native": C.native_frontend_factory,
    "native+chroma": C.native_chroma_frontend_factory,
}


@pytest.mark.parametrize("name", list(FACTORIES))
def test_frontend_contender(benchmark, name, clips, bench_threads):
    paths, desc = clips
    params = {"kind": "frontend", "clips": paths}
    info, fn, out = make_or_skip(FACTORIES[name], params, BATCH, threads=bench_threads)
    assert len(out) == BATCH
    for f in out:
        assert f["logmel"].shape == (128, C.FRAMES_30S) and f["mfcc"].shape == (20, C.FRAMES_30S)
        assert f["logmel"].dtype == np.float32 and np.isfinite(f["mfcc"]).all()
        assert ("chroma" in f) == (name == "native+chroma")
        if "chroma" in f:
            assert f["chroma"].shape == (12, C.FRAMES_30S) and np.isfinite(f["chroma"]).all()
    benchmark.group = f"frontend 30 s batch={BATCH}"
    benchmark.extra_info.update(info=info, clips=desc)
    benchmark.pedantic(fn, rounds=3, iterations=1, warmup_rounds=0)


def test_frontend_interleaved(benchmark, clips, bench_threads, bench_rounds):
    paths, desc = clips
    cons, wls = C.frontend_suite(paths, desc)
    result, _ = benchmark_interleaved(benchmark, cons, wls, [BATCH], rounds=bench_rounds,
                                      threads=bench_threads, target_s=0.5, max_reps=3,
                                      peak_in=None, suite="frontend")
    ok = [r for r in result["results"] if "skipped" not in r]
    assert {"librosa", "torch"} <= {r["contender"] for r in ok}, result["notes"]


def test_frontend_outputs_agree(clips, bench_threads):
    """Every front end computes librosa's features (dB; float32 rounding, DALI's decoder)."""
    paths, _ = clips
    params = {"kind": "frontend", "clips": paths}
    _, _, ref = make_or_skip(C.librosa_factory, params, BATCH, threads=bench_threads)
    for name, factory in FACTORIES.items():
        if name == "librosa":
            continue
        try:
            _, _, out = make_or_skip(factory, params, BATCH, threads=bench_threads)
        except pytest.skip.Exception:
            continue
        for a, b in zip(out, ref):
            for k in ("logmel", "mfcc"):
                d = np.abs(a[k] - b[k])
                assert np.percentile(d, 99) < 0.05 and d.max() < 1.0, (name, k, d.max())
