"""Native CPU LSTM vs torch.nn.LSTM eager on the standard classifier workload (not run in CI).

Workload: 2 layers, input 148, hidden 128, T = 646 steps, batch 1 / 8 / 64 (zero states).
FLOPs per call: B * T * sum_l 2 * 4H * (D_l + H)  (= 0.352 GFLOP per sequence here).

Each contender runs warm in its own process (two OpenMP runtimes in one process would spin
against each other); the contenders take turns round by round so that the machine's fast and
slow phases hit all of them alike. "%peak" is against torch's fp32 matmul (2048^3) measured in
the torch process between rounds; note that on AMD Zen 5 this is well below the FMA issue bound
(2 x 512-bit FMA per cycle per core, ~269 GFLOP/s per core at 4.2 GHz, measured with a
register-only FMA loop). Numbers on a shared VM are indicative only.

    python bench/bench_native_lstm.py [--rounds 7] [--batches 1 8 64] [--threads 2]
"""
from __future__ import annotations

import argparse
import multiprocessing as mp
import statistics
import time

D, H, L, T = 148, 128, 2, 646


def _flops(batch: int) -> float:
    return batch * T * sum(2 * 4 * H * ((D if k == 0 else H) + H) for k in range(L))


def _worker(kind: str, threads: int, conn) -> None:
    """Serve timing requests for one contender: kind 'torch', 'native-fp32', 'native-bf16'."""
    import numpy as np
    import torch

    torch.manual_seed(0)
    torch.set_num_threads(threads)
    lstm = torch.nn.LSTM(D, H, L, batch_first=True).eval()
    if kind.startswith("native"):
        from mmengine._ext import native
        from mmengine.models.reference import layers_from_torch
        from mmengine.runtime.native import NativeLSTM

        net = NativeLSTM(layers_from_torch(lstm), dtype=kind.split("-")[1])
        isa = native().selected_isa()

        def make_run(b):
            x = np.random.default_rng(b).standard_normal((b, T, D), dtype=np.float32)
            net.reserve(b, T, threads)
            return lambda: net.forward(x, num_threads=threads)
    else:
        isa = "oneDNN/MKL"

        def make_run(b):
            x = torch.randn(b, T, D)
            return lambda: lstm(x)

    runs = {}
    conn.send(isa)
    with torch.no_grad():
        while True:
            msg = conn.recv()
            if msg is None:
                return
            what, batch, reps = msg
            if what == "peak":
                a, b = torch.randn(2048, 2048), torch.randn(2048, 2048)
                a @ b
                t0 = time.perf_counter()
                for _ in range(reps):
                    a @ b
                conn.send(2 * 2048**3 * reps / (time.perf_counter() - t0))
                continue
            if batch not in runs:
                runs[batch] = make_run(batch)
                for _ in range(2):
                    runs[batch]()
            times = []
            for _ in range(reps):
                t0 = time.perf_counter()
                runs[batch]()
                times.append(time.perf_counter() - t0)
            conn.send(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--batches", type=int, nargs="+", default=[1, 8, 64])
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    ctx = mp.get_context("spawn")
    kinds = ["torch", "native-fp32", "native-bf16"]
    procs, conns, isas = {}, {}, {}
    for kind in kinds:
        parent, child = ctx.Pipe()
        procs[kind] = ctx.Process(target=_worker, args=(kind, args.threads, child), daemon=True)
        procs[kind].start()
        conns[kind] = parent
        isas[kind] = parent.recv()
    best = {(k, b): [] for k in kinds for b in args.batches}
    peaks = []
    for _ in range(args.rounds):
        for b in args.batches:
            reps = 5 if b < 64 else 2
            for kind in kinds:
                conns[kind].send(("run", b, reps))
                best[(kind, b)].append(min(conns[kind].recv()))
        conns["torch"].send(("peak", 0, 3))
        peaks.append(conns["torch"].recv())
    for kind in kinds:
        conns[kind].send(None)
        procs[kind].join()
    peak = max(peaks)
    print(f"threads={args.threads}  GEMM peak (torch fp32 2048^3, best of rounds): {peak / 1e9:.0f} GFLOP/s")
    print(f"variants: " + ", ".join(f"{k}={isas[k]}" for k in kinds))
    print(f"{'batch':>5} {'contender':>12} {'ms (median of round-best)':>26} {'GFLOP/s':>8} "
          f"{'%peak':>6} {'vs torch':>8}")
    for b in args.batches:
        t_torch = statistics.median(best[("torch", b)])
        for kind in kinds:
            t = statistics.median(best[(kind, b)])
            gf = _flops(b) / t
            print(f"{b:>5} {kind:>12} {t * 1e3:>26.3f} {gf / 1e9:>8.1f} {100 * gf / peak:>5.0f}% "
                  f"{t_torch / t:>7.2f}x")


if __name__ == "__main__":
    main()
