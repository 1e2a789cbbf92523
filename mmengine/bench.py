"""``mmengine bench MODEL``: throughput and latency of an engine file on every backend that can
run it here, at several batch sizes, contenders interleaved round by round (this machine's
speed drifts by ~2x over seconds; a sequential comparison would credit that to a backend).

Reported per (backend, batch): sequences/s (median over rounds), p50/p99 latency of one call,
the ratio to ``torch`` at the same batch, and GFLOP/s of the LSTM stack (2·4H·(D+H)·T per layer
and sequence, the DESIGN.md formula). For peers outside mmengine (librosa, DALI, ONNX Runtime
on a hand-exported model) see ``bench/``.
"""
from __future__ import annotations

import json
import resource
import time
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import numpy as np


def lstm_flops(header: dict, frames: int) -> float:
    """FLOPs of the recurrent stack for one sequence of ``frames`` input frames: the model is
    rebuilt from the header (no weights needed) to read its LSTM sizes and the frame count
    after the stem."""
    import torch

    from .export import example_inputs, rebuild_model

    model = rebuild_model(header["model"])
    x = {k: torch.from_numpy(v) for k, v in
         example_inputs(header["io"]["inputs"], 1, frames).items()}
    with torch.no_grad():
        t_out = model.frontend_features(x).shape[1]
    total = 0.0
    for m in model.modules():
        if isinstance(m, (torch.nn.LSTM, torch.nn.GRU, torch.nn.RNN)):
            gates = {torch.nn.LSTM: 4, torch.nn.GRU: 3, torch.nn.RNN: 1}[type(m)]
            for k in range(m.num_layers):
                d = m.input_size if k == 0 else m.hidden_size
                total += 2.0 * gates * m.hidden_size * (d + m.hidden_size) * t_out
    return total


def benchmark_engine(model, *, batches: Sequence[int] = (1, 8, 64), rounds: int = 10,
                     backends: Optional[Sequence[str]] = None, frames: Optional[int] = None,
                     threads: Optional[int] = None, out_json=None) -> dict:
    """Time ``Engine.predict_features`` for each backend × batch, interleaved.

    Args:
        model: the ``.mme`` file.
        batches: batch sizes.
        rounds: timed rounds (after one warm-up call per contender).
        backends: names to compare (default: every available backend that can run the file).
        frames: input frames (default: the engine's window, e.g. 1,292 for 30 s).
        threads: threads for native / onnx (default: the backend's own default).
        out_json: write the result there too.
    """
    from .export import example_inputs
    from .runtime.engine import Engine
    from .runtime.registry import available_backends, BACKENDS
    from .runtime import engine_file

    header = engine_file.read_engine_file(model).header
    fmt = header.get("payload_format")
    names = list(backends) if backends else [
        b for b in available_backends() if not fmt or fmt in BACKENDS[b].payload_formats]
    engines = {b: Engine.load(model, b, threads=threads) for b in names}
    first = next(iter(engines.values()))
    T = frames or first.frontend_cfg.n_frames(first.window)
    rng = np.random.default_rng(0)
    inputs = {B: example_inputs(header["io"]["inputs"], B, T, rng) for B in batches}
    for b, eng in engines.items():  # warm-up: allocate buffers, pack, JIT
        for B in batches:
            eng.predict_features(inputs[B])
    times: Dict[str, Dict[int, List[float]]] = {b: {B: [] for B in batches} for b in engines}
    for _ in range(rounds):
        for B in batches:
            for b, eng in engines.items():
                t0 = time.perf_counter()
                eng.predict_features(inputs[B])
                times[b][B].append(time.perf_counter() - t0)
    flops = lstm_flops(header, T)
    rows = []
    for b in engines:
        for B in batches:
            ts = np.array(times[b][B])
            med = float(np.median(ts))
            rows.append({"backend": b, "batch": B, "frames": T, "seq_per_s": B / med,
                         "p50_ms": 1e3 * med, "p99_ms": 1e3 * float(np.percentile(ts, 99)),
                         "lstm_gflops": B * flops / med / 1e9})
    for r in rows:
        peer = next((x for x in rows if x["backend"] == "torch" and x["batch"] == r["batch"]), None)
        r["vs_torch"] = r["seq_per_s"] / peer["seq_per_s"] if peer else None
    result = {"model": str(model), "dtype": header.get("dtype"), "rounds": rounds,
              "threads": threads, "rows": rows,
              "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}
    if out_json:
        Path(out_json).write_text(json.dumps(result, indent=1))
    return result


def format_table(result: dict) -> str:
    """Markdown table of ``benchmark_engine`` output."""
    lines = [f"model {result['model']} ({result['dtype']}), {result['rounds']} interleaved rounds, "
             f"peak RSS {result['peak_rss_mb']:.0f} MB", "",
             "| backend | batch | frames | seq/s | p50 ms | p99 ms | LSTM GFLOP/s | vs torch |",
             "|---|---|---|---|---|---|---|---|"]
    for r in result["rows"]:
        vs = f"{r['vs_torch']:.2f}x" if r["vs_torch"] else "-"
        lines.append(f"| {r['backend']} | {r['batch']} | {r['frames']} | {r['seq_per_s']:.1f} | "
                     f"{r['p50_ms']:.2f} | {r['p99_ms']:.2f} | {r['lstm_gflops']:.1f} | {vs} |")
    return "\n".join(lines)
