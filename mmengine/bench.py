"""``mmengine bench MODEL``: throughput and latency of an engine file on every backend that can
run it here, at several batch sizes, through the benchmark harness (``mmengine.harness``).

Method: each backend runs warm in its OWN spawned process (``Engine.load`` there; the
callable is ``Engine.predict_features`` on random inputs of the engine's own shapes, built
and called twice per batch before any timing), the backends take turns round by round in a
rotating order (this machine's speed drifts by ~2x over seconds; a sequential comparison would
credit that to a backend), and each turn times up to ``max_reps`` consecutive calls (until
``target_s`` has passed) and keeps the best.

Reported per (backend, batch): sequences/s = batch / the median over rounds of those round
bests, p50/p99 latency over every timed call, the ratio to ``torch`` at the same batch (its
median / this one's), the backend process's peak RSS, and GFLOP/s of the recurrent stack
(``mmengine.flops.recurrent_flops``: Σ_layers 2·G·H·(D+H)·T per sequence, G = 4 for an LSTM)
and of the whole model (``mmengine.flops.model_flops``: stem convolutions, text projection,
recurrence, head). The sizes come from the engine header, so a native or ONNX engine is
benchmarked without torch (the ``torch`` backend is then simply unavailable). For peers
outside mmengine (librosa, DALI, ONNX Runtime on a hand-exported model) see ``bench/``.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Callable, Optional, Sequence

import numpy as np

from .config import BenchConfig

#: harness settings of one timing request (see ``mmengine.harness``)
TARGET_S, MAX_REPS = BenchConfig.target_s, BenchConfig.max_reps


def engine_factory(threads: Optional[int], engine: str, backend: str):
    """Harness factory (runs in the backend's own process): ``Engine.load(engine, backend,
    threads=threads)``; ``make(params, batch)`` returns ``predict_features`` on random inputs of
    ``params["frames"]`` frames (``export.example_inputs``, ``default_rng(batch)``: the same
    arrays in every process)."""
    from .export import example_inputs
    from .runtime.engine import Engine

    eng = Engine.load(engine, backend, threads=threads)
    specs = eng.header["io"]["inputs"]

    def make(params, batch):
        x = example_inputs(specs, batch, int(params["frames"]), np.random.default_rng(batch))
        return lambda: eng.predict_features(x)

    return (f"{eng.backend} backend, {eng.header.get('dtype')}, "
            f"threads {threads if threads else 'default'}"), make


def engine_flops(header: dict, frames: int) -> dict:
    """FLOPs per sequence of ``frames`` input frames of the engine's model, from its header
    alone: ``recurrence`` (the recurrent stack) and ``model`` (the whole model; None where it
    is not defined, e.g. a model other than the fusion one)."""
    from . import flops

    spec = header["model"]
    try:
        rec = flops.model_recurrent_flops(spec, frames)
    except (KeyError, ValueError, TypeError):
        rec = None
    try:
        model = flops.model_flops(spec, frames)["total"]
    except (KeyError, ValueError, TypeError):
        model = None
    return {"recurrence": rec, "model": model}


def benchmark_engine(model, *, batches: Sequence[int] = BenchConfig.batches,
                     rounds: int = BenchConfig.rounds,
                     backends: Optional[Sequence[str]] = None, frames: Optional[int] = None,
                     threads: Optional[int] = None, out_json=None, target_s: float = TARGET_S,
                     max_reps: int = MAX_REPS,
                     log: Optional[Callable[[str], None]] = None) -> dict:
    """Time ``Engine.predict_features`` for each backend × batch through the harness (one
    process per backend, interleaved round by round; see the module docstring).

    Args:
        model: the ``.mme`` file.
        batches: batch sizes.
        rounds: timed rounds (after two warm-up calls per backend and batch).
        backends: names to compare (default: every available backend that can run the file).
        frames: input frames (default: the engine's window, e.g. 1,292 for 30 s).
        threads: threads for native / onnx (default: the backend's own default).
        out_json: write the result there too.
        target_s, max_reps: one timing request runs up to ``max_reps`` calls, stopping once
            ``target_s`` has passed (at least one call).
        log: progress lines (default: none).
    Returns:
        ``{"model", "dtype", "frames", "rounds", "threads", "flops", "rows", "backends",
        "failed", "peak_rss_mb", "harness"}``: one row per (backend, batch) that was timed
        with ``backend``, ``batch``, ``frames``, ``seq_per_s``, ``p50_ms``, ``p99_ms``,
        ``lstm_gflops`` (the recurrent stack), ``model_gflops``, ``vs_torch`` (None without a
        torch row), ``peak_rss_mb`` (that backend's process, MiB); ``failed``
        {backend: reason} for backends that could not be loaded or timed; ``peak_rss_mb`` the
        largest of the backends' peaks; ``harness`` the harness's own result.
    """
    from .config import AudioConfig, FrontendConfig, from_dict
    from .harness import Contender, Workload, run_interleaved
    from .runtime import engine_file
    from .runtime.registry import BACKENDS, available_backends

    header = engine_file.read_engine_file(model).header
    fmt = header.get("payload_format")
    names = list(backends) if backends else [
        b for b in available_backends() if not fmt or fmt in BACKENDS[b].payload_formats]
    if frames is None:
        audio = from_dict(AudioConfig, header["audio"])
        frames = from_dict(FrontendConfig, header["frontend"]).n_frames(
            int(round(audio.clip_seconds * audio.sample_rate)))
    T = int(frames)
    fl = engine_flops(header, T)
    contenders = [Contender(b, "mmengine.bench:engine_factory",
                            {"engine": str(Path(model).resolve()), "backend": b})
                  for b in names]
    res = run_interleaved(contenders, [Workload("engine", {"frames": T}, "sequences")],
                          list(batches), rounds=rounds, threads=threads, target_s=target_s,
                          max_reps=max_reps, peak_in=None, suite=f"mmengine bench {model}",
                          log=log or (lambda m: None))
    rows, failed = [], {}
    for r in res["results"]:
        b = r["contender"]
        if "skipped" in r:
            failed.setdefault(b, r["skipped"])
            continue
        med = r["median_s"]
        rows.append({
            "backend": b, "batch": r["batch"], "frames": T, "seq_per_s": r["items_per_s"],
            "p50_ms": 1e3 * r["p50_s"], "p99_ms": 1e3 * r["p99_s"],
            "lstm_gflops": (r["batch"] * fl["recurrence"] / med / 1e9
                            if fl["recurrence"] is not None else None),
            "model_gflops": (r["batch"] * fl["model"] / med / 1e9
                             if fl["model"] is not None else None),
            "vs_torch": r["ratios"].get("torch"), "peak_rss_mb": r["peak_rss_mib"],
            "median_ms": 1e3 * med, "calls": r["calls"]})
    rss = [r["peak_rss_mb"] for r in rows]
    result = {"model": str(model), "dtype": header.get("dtype"), "frames": T, "rounds": rounds,
              "threads": threads, "target_s": target_s, "max_reps": max_reps,
              "flops": {"recurrence_per_sequence": fl["recurrence"],
                        "model_per_sequence": fl["model"]},
              "rows": rows, "backends": {b: i.get("info", "") for b, i in
                                         res["contenders"].items() if "skipped" not in i},
              "failed": failed, "peak_rss_mb": max(rss) if rss else None, "harness": res}
    if out_json:
        Path(out_json).write_text(json.dumps(result, indent=1, default=str))
    return result


def _f(x, spec: str) -> str:
    return "-" if x is None else format(x, spec)


def format_table(result: dict) -> str:
    """Markdown table of ``benchmark_engine`` output (failed backends listed below it)."""
    lines = [f"model {result['model']} ({result['dtype']}), {result['frames']} frames, "
             f"{result['rounds']} interleaved rounds, one process per backend; seq/s from the "
             f"median of each round's best call", "",
             "| backend | batch | frames | seq/s | p50 ms | p99 ms | LSTM GFLOP/s | "
             "model GFLOP/s | vs torch | peak RSS MiB |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in result["rows"]:
        vs = f"{r['vs_torch']:.2f}x" if r["vs_torch"] else "-"
        lines.append(f"| {r['backend']} | {r['batch']} | {r['frames']} | {r['seq_per_s']:.1f} | "
                     f"{r['p50_ms']:.2f} | {r['p99_ms']:.2f} | {_f(r['lstm_gflops'], '.1f')} | "
                     f"{_f(r['model_gflops'], '.1f')} | {vs} | {_f(r['peak_rss_mb'], '.0f')} |")
    if result.get("failed"):
        lines.append("")
        lines += [f"- {b}: not timed: {why}" for b, why in result["failed"].items()]
    return "\n".join(lines)
