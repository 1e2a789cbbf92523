"""pytest-benchmark: end to end (30 s files → class probabilities with ``Engine.classify``),
batch 2: ``ours`` (native backend + native front end) and ``ours-decode+dali-features+ort``
(the engine's own decoding, DALI CPU features, ONNX Runtime)
in-process, plus the interleaved multi-process comparison (``bench/run_peers.py --suite e2e``).
Engines come from ``MMENGINE_BENCH_RUN`` (a trained run) or a random-weight model."""
from __future__ import annotations

import numpy as np
import pytest

from bench import contenders as C
from bench.conftest import benchmark_interleaved, make_or_skip

BATCH = 2


@pytest.fixture(scope="module")
def e2e(clips):
    paths, desc = clips
    cons, wls, edesc = C.e2e_suite(paths, desc)
    return cons, wls, edesc


@pytest.mark.parametrize("name", ["ours", "ours-decode+dali-features+ort"])
def test_e2e_contender(benchmark, name, e2e, bench_threads):
    cons, wls, edesc = e2e
    con = next(c for c in cons if c.name == name)
    info, fn, out = make_or_skip(C.engine_factory, wls[0].params, BATCH, threads=bench_threads,
                                 **con.kwargs)
    assert len(out) == BATCH and all(p.ok for p in out)
    for p in out:
        probs = np.asarray(p.windows)
        assert probs.ndim == 2 and np.allclose(probs.sum(axis=1), 1.0, atol=1e-4)
    benchmark.group = f"e2e 30 s batch={BATCH}"
    benchmark.extra_info.update(info=info, engines=edesc)
    benchmark.pedantic(fn, rounds=3, iterations=1, warmup_rounds=0)


def test_e2e_interleaved(benchmark, e2e, bench_threads, bench_rounds):
    cons, wls, edesc = e2e
    result, info = benchmark_interleaved(benchmark, cons, wls, [BATCH], rounds=bench_rounds,
                                         threads=bench_threads, target_s=0.5, max_reps=3,
                                         peak_in=None, suite="e2e")
    info["engines"] = edesc
    ok = [r for r in result["results"] if "skipped" not in r]
    assert {r["contender"] for r in ok} == {c.name for c in cons}, result


def test_e2e_outputs_agree(e2e, bench_threads):
    """Both engines hold the same model: their window probabilities agree."""
    cons, wls, _ = e2e
    probs = {}
    for con in cons:
        if not con.factory.endswith(":engine_factory"):
            continue  # the plain DALI + ORT peer returns bare probabilities, no windows
        _, _, out = make_or_skip(C.engine_factory, wls[0].params, BATCH, threads=bench_threads,
                                 **con.kwargs)
        probs[con.name] = np.concatenate([np.asarray(p.windows) for p in out])
    np.testing.assert_allclose(probs["ours"], probs["ours-decode+dali-features+ort"], atol=2e-3)
