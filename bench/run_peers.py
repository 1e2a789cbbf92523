"""Peer benchmarks: mmengine's engines against librosa, DALI CPU, torch eager and ONNX Runtime
(not run in CI; ``make bench`` runs the pytest versions in this folder).

Suites (``bench/contenders.py``):

* ``classifier``: 2-layer LSTM, input 148, hidden 128, x (B, T, 148) float32 at T = 1,292 and
  T = 646 (30 s at 22,050 Hz, hop 512), plus the trained model's own shape (fused width,
  T' after the conv stem; ``MMENGINE_BENCH_RUN`` = a run folder, else the default config):
  ``torch-eager`` (oneDNN fp32), ``torch-bf16`` (CPU autocast), ``onnxruntime`` (the same LSTM
  exported to ONNX), ``native-fp32``, ``native-bf16`` (``mmengine.runtime.native_lstm``).
  Sequences/s, GFLOP/s and the fraction of the measured fp32 GEMM peak.
* ``model``: the whole model, the engine's inputs (MFCC, log-Mel, TF-IDF, notes, every
  modality present, T = 1,292 frames: one 30 s window) → logits: ``native-fp32`` and
  ``native-bf16`` (``mmengine._C.FusionGraph``: every layer in C++), ``onnxruntime`` (the
  ONNX export of the same model), ``torch-eager`` (fp32) and ``torch-bf16`` (CPU autocast).
  Windows/s.
* ``decode``: B 30 s FLAC files → float32 samples: ``native`` (our C++ decoder),
  ``soundfile`` (libsndfile), ``dali`` (DALI's CPU decoder). Clips/s.
* ``frontend``: B 30 s FLAC files → log-Mel (128 x 1,292) + MFCC (20 x 1,292):
  ``librosa`` (one process, 1 thread), ``librosa-pool`` (a pool of ``--threads`` processes,
  what a librosa user does on several cores), ``dali-cpu``, ``dali-plain``, ``torch``,
  ``native``, ``native+chroma`` (the native front end with the default pitch stream, which the
  peers do not compute: its cost). Clips/s.
* ``e2e``: B files → class probabilities, ``Engine.classify(paths, batch_size=B)``:
  ``ours`` (native backend + native front end), ``ours-decode+dali-features+ort`` (the
  engine's own decoding, DALI CPU features, ONNX Runtime) and ``dali-plain+ort`` (DALI decodes
  and computes the features, ONNX Runtime runs the model). Clips/s.

Method (``mmengine/harness.py``): every contender runs warm in its own spawned process (built and
called twice per (workload, batch) before timing); contenders take turns round by round
(A B C A B C ...) so the machine's fast/slow phases (~2x apart on a shared VM) hit all alike;
each turn times up to a few calls and keeps the best; reported: median over rounds of those
round bests, throughput = batch / median, p50 / p99 over all calls, the worker's peak RSS,
ratio to every other contender (median of the peer / median of this row), and for the LSTM
the fraction of the torch fp32 2048^3 GEMM peak measured between rounds with the same threads.
Numbers on a shared VM are indicative only.

    python bench/run_peers.py [--suite classifier|model|decode|frontend|e2e|all] [--rounds 5]
        [--batches 1 8 64] [--frames 1292 646] [--threads 2] [--json out.json] [--md out.md]
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench import contenders as C  # noqa: E402
from mmengine.harness import run_interleaved, write_outputs  # noqa: E402

SUITES = ("classifier", "model", "decode", "frontend", "e2e")


def run_suite(suite: str, *, rounds: int, batches, frames, threads: int, model_shape: bool = True,
              log=print) -> dict:
    """Run one suite (see the module docstring) and return the harness result."""
    if suite == "classifier":
        cons, wls = C.classifier_suite(frames, model=model_shape)
        return run_interleaved(cons, wls, batches, rounds=rounds, threads=threads,
                               peak_in="torch-eager", suite=suite, log=log)
    if suite == "model":
        cons, wls, mdesc = C.model_suite()
        res = run_interleaved(cons, wls, batches, rounds=rounds, threads=threads,
                              target_s=0.5, max_reps=3, suite=suite, log=log)
        res["notes"].append(f"engines: {mdesc}")
        return res
    clips, desc = C.clip_paths(max(batches))
    if suite in ("frontend", "decode"):
        cons, wls = (C.frontend_suite if suite == "frontend" else C.decode_suite)(clips, desc)
        res = run_interleaved(cons, wls, batches, rounds=rounds, threads=threads,
                              target_s=0.5, max_reps=3, suite=suite, log=log)
    elif suite == "e2e":
        cons, wls, edesc = C.e2e_suite(clips, desc)
        res = run_interleaved(cons, wls, batches, rounds=rounds, threads=threads,
                              target_s=0.5, max_reps=3, suite=suite, log=log)
        res["notes"].append(f"engines: {edesc}")
    else:
        raise ValueError(f"unknown suite {suite!r}; choose from {SUITES}")
    res["notes"].append(f"audio: {desc}")
    return res


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog="\n".join(__doc__.splitlines()[1:]))
    ap.add_argument("--suite", choices=SUITES + ("all",), default="all")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--batches", type=int, nargs="+", default=[1, 8, 64])
    ap.add_argument("--frames", type=int, nargs="+", default=[C.FRAMES_30S, 646],
                    help="LSTM steps of the standard classifier workload")
    ap.add_argument("--no-model-shape", action="store_true",
                    help="skip the classifier workload at the model's own shape")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json", help="write the results (and machine info) here")
    ap.add_argument("--md", help="write the Markdown tables here")
    args = ap.parse_args(argv)
    suites = SUITES if args.suite == "all" else (args.suite,)
    results = []
    for s in suites:
        print(f"== {s}: rounds={args.rounds} batches={args.batches} threads={args.threads}",
              flush=True)
        results.append(run_suite(s, rounds=args.rounds, batches=args.batches, frames=args.frames,
                                 threads=args.threads, model_shape=not args.no_model_shape,
                                 log=lambda m: print(m, flush=True)))
    print()
    print(write_outputs(results, args.json, args.md))
    return 0


if __name__ == "__main__":
    sys.exit(main())
