"""Native CPU LSTM vs torch.nn.LSTM eager on the standard classifier workload (not run in CI).

Workload: 2 layers, input 148, hidden 128, T = 646 steps, batch 1 / 8 / 64 (zero states).
FLOPs per call: B * T * sum_l 2 * 4H * (D_l + H)  (= 0.352 GFLOP per sequence here;
``mmengine.flops.recurrent_flops``).

Through the harness (``mmengine.harness.run_interleaved``) with the classifier suite's
contenders (``bench/contenders.py``: ``torch_eager_factory``, ``native_lstm_factory``): each
contender runs warm in its own process (two OpenMP runtimes in one process would spin against
each other); the contenders take turns round by round so that the machine's fast and slow
phases hit all of them alike; each turn times up to 5 calls (stopping once 0.25 s has passed)
and keeps the best; the table gives the median over rounds of those bests. "%peak" is against
torch's fp32 matmul (2048^3) measured in the torch process between rounds; note that on AMD Zen 5 this is well below the FMA issue bound
(2 x 512-bit FMA per cycle per core, ~269 GFLOP/s per core at 4.2 GHz, measured with a
register-only FMA loop). Numbers on a shared VM are indicative only.

    python bench/bench_native_lstm.py [--rounds 7] [--batches 1 8 64] [--threads 2]
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from mmengine.flops import recurrent_flops  # noqa: E402
from mmengine.harness import Contender, Workload, run_interleaved  # noqa: E402

D, H, L, T = 148, 128, 2, 646
KINDS = {"torch": ("bench.contenders:torch_eager_factory", {}),
         "native-fp32": ("bench.contenders:native_lstm_factory", {"dtype": "fp32"}),
         "native-bf16": ("bench.contenders:native_lstm_factory", {"dtype": "bf16"})}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--batches", type=int, nargs="+", default=[1, 8, 64])
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    flops = recurrent_flops(D, H, L, T)
    res = run_interleaved([Contender(k, f, kw) for k, (f, kw) in KINDS.items()],
                          [Workload(f"lstm-T{T}", {"kind": "lstm", "D": D, "H": H, "L": L,
                                                   "T": T}, "sequences", flops)],
                          args.batches, rounds=args.rounds, threads=args.threads,
                          target_s=0.25, max_reps=5, peak_in="torch", suite="native-lstm")
    peak = res["gemm_peak_flops"] or float("nan")
    print(f"threads={args.threads}  GEMM peak (torch fp32 2048^3, best of rounds): "
          f"{peak / 1e9:.0f} GFLOP/s")
    print("variants: " + ", ".join(f"{k}={v.get('info', v.get('skipped'))}"
                                   for k, v in res["contenders"].items()))
    print(f"{'batch':>5} {'contender':>12} {'ms (median of round-best)':>26} {'GFLOP/s':>8} "
          f"{'%peak':>6} {'vs torch':>8}")
    for r in res["results"]:
        if "skipped" in r:
            print(f"{r['batch']:>5} {r['contender']:>12} skipped: {r['skipped']}")
            continue
        vs = r["ratios"].get("torch", 1.0 if r["contender"] == "torch" else float("nan"))
        print(f"{r['batch']:>5} {r['contender']:>12} {r['median_s'] * 1e3:>26.3f} "
              f"{r['gflops']:>8.1f} {100 * r['gflops'] * 1e9 / peak:>5.0f}% {vs:>7.2f}x")


if __name__ == "__main__":
    main()
