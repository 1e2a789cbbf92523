"""pytest-benchmark: the classifier workload (2-layer LSTM, input 148, hidden 128) at T = 646,
batch 1, per contender in-process, plus the interleaved multi-process comparison
(``bench/run_peers.py --suite classifier`` is the full version)."""
from __future__ import annotations

import numpy as np
import pytest

from bench import contenders as C
from bench.conftest import benchmark_interleaved, make_or_skip

T, BATCH = 646, 1
PARAMS = {"kind": "lstm", "D": C.D_STD, "H": C.H_STD, "L": C.L_STD, "T": T}
FACTORIES = {
    "torch-eager": (C.torch_eager_factory, {}),
    "torch-bf16": (C.torch_eager_factory, {"bf16": True}),
    "onnxruntime": (C.onnxruntime_factory, {}),
    "native-fp32": (C.native_lstm_factory, {"dtype": "fp32"}),
    "native-bf16": (C.native_lstm_factory, {"dtype": "bf16"}),
}


def _last_hidden(out) -> np.ndarray:
    """(B, H) top-layer final hidden state from any contender's output."""
    if isinstance(out, list):  # onnxruntime: [h_n (L, B, H)]
        return np.asarray(out[0])[-1]
    if isinstance(out[1], tuple):  # torch: (y, (h_n, c_n))
        return out[1][0][-1].float().numpy()
    return np.asarray(out[0])  # native: (y (B, H), h_n, c_n)


@pytest.mark.parametrize("name", list(FACTORIES))
def test_classifier_contender(benchmark, name, bench_threads):
    factory, kw = FACTORIES[name]
    info, fn, out = make_or_skip(factory, PARAMS, BATCH, threads=bench_threads, **kw)
    h = _last_hidden(out)
    assert h.shape == (BATCH, C.H_STD) and np.isfinite(h).all()
    benchmark.group = f"classifier T={T} batch={BATCH}"
    benchmark.extra_info.update(info=info,
                                flops=C.recurrent_flops(C.D_STD, C.H_STD, C.L_STD, T) * BATCH)
    benchmark.pedantic(fn, rounds=5, iterations=1, warmup_rounds=1)


def test_classifier_outputs_agree(bench_threads):
    """Every fp32 contender computes the same LSTM (same seeded weights and inputs)."""
    ref = None
    for name in ("torch-eager", "onnxruntime", "native-fp32"):
        factory, kw = FACTORIES[name]
        _, _, out = make_or_skip(factory, {**PARAMS, "T": 32}, 2, threads=bench_threads, **kw)
        h = _last_hidden(out)
        if ref is None:
            ref = h
        else:
            np.testing.assert_allclose(h, ref, atol=2e-4, err_msg=name)


def test_classifier_interleaved(benchmark, bench_threads, bench_rounds):
    cons, wls = C.classifier_suite([T], model=False)
    result, info = benchmark_interleaved(benchmark, cons, wls, [BATCH], rounds=bench_rounds,
                                         threads=bench_threads, peak_in="torch-eager",
                                         suite="classifier")
    ok = [r for r in result["results"] if "skipped" not in r]
    assert any(r["contender"] == "torch-eager" for r in ok), info
    assert all(r["median_s"] > 0 and r["gflops"] > 0 for r in ok)
