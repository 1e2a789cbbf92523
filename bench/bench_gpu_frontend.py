"""GPU front-end and end-to-end benchmarks: DALI GPU vs DALI CPU, files → probabilities on cuda.

Suite ``frontend`` (clips/s): B audio files (30 s at 22,050 Hz, FLAC by default) → log-Mel
(128, 1292) + MFCC (20, 1292) with n_fft 2048, hop 512 (``FrontendConfig()``), batch 1, 8, 64,
256, one DALI iteration per call (``batch_size=B``), decoding on the CPU in both:

* ``dali-cpu``: ``DaliFrontend(device="cpu").from_files`` (numpy in host memory).
* ``dali-gpu``: ``DaliFrontend(device="gpu").from_files_padded`` (decode/resample on the CPU,
  spectrogram → MFCC on the GPU, a ``(B, F, T)`` torch batch left on cuda:0 through DLPack),
  timed to ``torch.cuda.synchronize()``.
* ``dali-gpu-host``: the same GPU pipeline copied back to numpy (``from_files``): what the
  DLPack path saves.

TARGET: dali-gpu >= 20x dali-cpu clips/s (reported per batch as "vs dali-cpu"). Decoding stays
on the CPU (DALI's audio decoder is CPU-only), so at large batches the GPU contender may be
bound by decode; ``--source arrays`` times the features alone (waveforms already decoded, fed
through ``from_arrays`` / ``from_arrays_padded``) to separate the two.

Suite ``e2e`` (clips/s): B files → DALI GPU features → DLPack → classifier on cuda → class
probabilities (softmax, copied to the host: (B, C) floats). Classifier: the fusion model
(``mmengine.models.build_model(ModelConfig(), ...)``: MFCC + log-Mel stems, 2-layer LSTM 128,
4 classes, random weights, eval mode). Contenders:

* ``e2e-torch``: the whole model in torch (cuDNN LSTM).
* ``e2e-triton`` / ``e2e-cuda``: stems in torch, the recurrence in ``TritonLSTM`` /
  ``CudaLSTM`` (``mmengine/runtime/gpu_lstm.py``), head in torch; absent (with the reason) when
  triton or the CUDA extension is missing.
* ``e2e-host``: like ``e2e-torch`` but the features go GPU → host numpy → cuda (no DLPack).

Method (as ``bench/bench_native_lstm.py``): every contender runs warm in its own spawned process
(its own DALI thread pool and CUDA context; built and called twice per batch before timing);
contenders take turns round by round (A B C A B C ...) so that the machine's fast and slow
phases hit all alike; each turn times ``reps`` calls and keeps the best; reported: the median
over rounds of those round bests, clips/s = B / median, and the ratio to the suite's baseline
(dali-cpu, e2e-host). Without a CUDA device it prints "no GPU: skipped" and exits 0.

    python bench/bench_gpu_frontend.py [--suite frontend|e2e|all] [--rounds 5]
        [--batches 1 8 64 256] [--threads N] [--source files|arrays] [--format flac|wav]
        [--json out.json]
"""
from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

SR, SECONDS, N_CLASSES = 22050, 30.0, 4
SUITES = {
    "frontend": (["dali-cpu", "dali-gpu", "dali-gpu-host"], "dali-cpu"),
    "e2e": (["e2e-torch", "e2e-triton", "e2e-cuda", "e2e-host"], "e2e-host"),
}
TARGET = ("dali-gpu", "dali-cpu", 20.0)  # contender, baseline, minimum clips/s ratio


def gpu_missing_reason():
    """None when torch sees a CUDA device, else why not (checked before anything is spawned)."""
    try:
        import torch
    except ImportError as exc:
        return f"torch is not importable ({exc})"
    if not torch.cuda.is_available():
        return f"torch {torch.__version__} sees no CUDA device"
    return None


def make_audio(folder: Path, distinct: int, fmt: str) -> list:
    """``distinct`` 30 s clips at 22,050 Hz (noise + tones, seeded) written as ``fmt``."""
    import numpy as np
    import soundfile as sf

    paths = []
    t = np.arange(int(SECONDS * SR)) / SR
    for i in range(distinct):
        rng = np.random.default_rng(i)
        y = (0.05 * rng.standard_normal(t.size) + 0.3 * np.sin(2 * np.pi * (110.0 * (i + 1)) * t)
             + 0.1 * np.sin(2 * np.pi * (55.0 + 400.0 * t / SECONDS) * t)).astype(np.float32)
        p = folder / f"clip{i}.{fmt}"
        sf.write(p, y, SR, subtype="PCM_16")
        paths.append(str(p))
    return paths


# ---------------------------------------------------------------------- contenders
def _frontend_factory(kind: str, opts: dict):
    """(info, make(batch) -> callable) for a front-end contender."""
    import numpy as np
    import torch

    from mmengine.config import FrontendConfig
    from mmengine.features.dali import DaliFrontend

    cfg = FrontendConfig()
    device = "cpu" if kind == "dali-cpu" else "gpu"
    files = opts["source"] == "files"
    to_device = kind == "dali-gpu"

    def make(batch):
        fe = DaliFrontend(cfg, device=device, batch_size=batch, num_threads=opts["threads"])
        if files:
            data = [opts["paths"][i % len(opts["paths"])] for i in range(batch)]
            run = fe.from_files_padded if to_device else fe.from_files
        else:
            waves = [np.asarray(w) for w in opts["waves"]]
            data = [waves[i % len(waves)] for i in range(batch)]
            run = fe.from_arrays_padded if to_device else fe.from_arrays
        if to_device:
            def call():
                out = run(data)
                torch.cuda.synchronize()
                return out
            return call
        return lambda: run(data)

    info = f"DALI {device}, {opts['threads']} threads, source {opts['source']}"
    return info, make


def _e2e_factory(kind: str, opts: dict):
    """(info, make(batch) -> callable) for an end-to-end contender."""
    import numpy as np
    import torch

    from mmengine.config import FrontendConfig, ModelConfig
    from mmengine.features.dali import DaliFrontend
    from mmengine.models import build_model

    torch.manual_seed(0)
    cfg = FrontendConfig()
    dims = dict(n_mfcc=cfg.n_mfcc, n_mels=cfg.n_mels, text_dim=0, symbolic_dim=0,
                n_classes=N_CLASSES, multilabel=False)
    model = build_model(ModelConfig(), dims).cuda().eval()
    info = f"fusion model {tuple(model.modalities)}, torch {torch.__version__} (cuDNN)"
    classify = lambda batch: torch.softmax(model(batch), dim=1)  # noqa: E731
    if kind in ("e2e-triton", "e2e-cuda"):
        from mmengine.models.reference import layers_from_torch
        from mmengine.runtime.gpu_lstm import CudaLSTM, TritonLSTM

        if model.cfg.cell != "lstm" or model.cfg.pooling != "last":
            raise RuntimeError("the LSTM wrappers need cell 'lstm' and pooling 'last'")
        lstm = (TritonLSTM if kind == "e2e-triton" else CudaLSTM)(
            layers_from_torch(model.classifier.rnn), torch.float32)
        info = f"fusion model stems in torch, recurrence {type(lstm).__name__} fp32"

        def classify(batch):
            y_last, _ = lstm.forward(model.frontend_features(batch))
            return torch.softmax(model.classifier.head(y_last), dim=1)

    via_host = kind == "e2e-host"

    def make(batch):
        fe = DaliFrontend(cfg, device="gpu", batch_size=batch, num_threads=opts["threads"])
        paths = [opts["paths"][i % len(opts["paths"])] for i in range(batch)]

        def call():
            with torch.inference_mode():
                if via_host:
                    feats = fe.from_files(paths)  # GPU → host numpy
                    x = {k: torch.from_numpy(np.stack([f[k] for f in feats])).cuda()
                         for k in ("logmel", "mfcc")}
                else:
                    x = fe.from_files_padded(paths)  # stays on cuda:0 (DLPack)
                return classify({"logmel": x["logmel"], "mfcc": x["mfcc"]}).cpu()
        return call

    return info + f"; DALI gpu, {opts['threads']} threads", make


def _worker(kind: str, opts: dict, conn) -> None:
    """Serve timing requests for one contender in this process (spawned)."""
    try:
        factory = _frontend_factory if kind.startswith("dali") else _e2e_factory
        info, make = factory(kind, opts)
    except Exception as exc:  # a contender that cannot run here is reported, not fatal
        conn.send(("absent", f"{type(exc).__name__}: {exc}"))
        return
    conn.send(("ready", info))
    runs = {}
    while True:
        msg = conn.recv()
        if msg is None:
            return
        batch, reps = msg
        try:
            if batch not in runs:
                runs[batch] = make(batch)
                for _ in range(2):
                    runs[batch]()
            times = []
            for _ in range(reps):
                t0 = time.perf_counter()
                runs[batch]()
                times.append(time.perf_counter() - t0)
            conn.send(("ok", times))
        except Exception as exc:
            conn.send(("error", f"{type(exc).__name__}: {exc}"))


def run_suite(kinds, batches, rounds, opts):
    """{kind: {batch: [round-best seconds]}}, {kind: info}, {kind: reason absent}."""
    ctx = mp.get_context("spawn")
    procs, conns, infos, absent = {}, {}, {}, {}
    for kind in kinds:
        parent, child = ctx.Pipe()
        procs[kind] = ctx.Process(target=_worker, args=(kind, opts, child), daemon=True)
        procs[kind].start()
        status, info = parent.recv()
        if status == "ready":
            conns[kind], infos[kind] = parent, info
        else:
            absent[kind] = info
            procs[kind].join()
    best = {k: {b: [] for b in batches} for k in conns}
    for r in range(rounds):
        for b in batches:
            reps = 3 if b < 64 else 1
            order = list(conns)
            for kind in order[r % len(order):] + order[:r % len(order)]:
                if kind in absent:
                    continue
                conns[kind].send((b, reps))
                status, payload = conns[kind].recv()
                if status != "ok":
                    absent[kind] = f"batch {b}: {payload}"
                    continue
                best[kind][b].append(min(payload))
        print(f"round {r + 1}/{rounds} done", flush=True)
    for kind, conn in conns.items():
        conn.send(None)
        procs[kind].join(timeout=30)
    return {k: v for k, v in best.items() if k not in absent}, infos, absent


def report(suite, best, infos, absent, baseline, batches):
    """Print the table of one suite; returns its rows."""
    rows = []
    print(f"\n== {suite} ==")
    for kind, info in infos.items():
        print(f"  {kind}: {info}")
    print(f"{'batch':>5} {'contender':>14} {'ms/call (median)':>17} {'clips/s':>9} "
          f"{'vs ' + baseline:>14}")
    for b in batches:
        base = statistics.median(best[baseline][b]) if baseline in best else None
        for kind in best:
            t = statistics.median(best[kind][b])
            ratio = base / t if base else None
            rows.append({"suite": suite, "batch": b, "contender": kind, "median_s": t,
                         "clips_per_s": b / t, "vs_baseline": ratio})
            print(f"{b:>5} {kind:>14} {t * 1e3:>17.2f} {b / t:>9.1f} "
                  f"{(f'{ratio:.2f}x' if ratio else '-'):>14}")
    for kind, why in absent.items():
        print(f"  absent {kind}: {why}")
    return rows


def main(argv=None) -> int:
    """Run the chosen suites and print their tables; 0 also when skipped for want of a GPU."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--suite", choices=["frontend", "e2e", "all"], default="all")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--batches", type=int, nargs="+", default=[1, 8, 64, 256])
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 2,
                    help="DALI CPU threads (decode, resampling; the CPU contender's features)")
    ap.add_argument("--source", choices=["files", "arrays"], default="files",
                    help="frontend suite input: files (decode included) or decoded waveforms")
    ap.add_argument("--format", choices=["flac", "wav"], default="flac")
    ap.add_argument("--distinct", type=int, default=8, help="distinct clips (reused round robin)")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args(argv)
    reason = gpu_missing_reason()
    if reason:
        print(f"bench_gpu_frontend: no GPU: skipped ({reason})")
        return 0
    try:
        from mmengine.features.dali import _dali_gpu_count
        import nvidia.dali  # noqa: F401
    except ImportError as exc:
        print(f"bench_gpu_frontend: DALI is not installed ({exc}); pip install "
              "'mmengine-music[dali]'", file=sys.stderr)
        return 2
    if _dali_gpu_count() == 0:
        print("bench_gpu_frontend: no GPU: skipped (DALI sees no CUDA device)")
        return 0

    rows, summary = [], {}
    with tempfile.TemporaryDirectory(prefix="mmengine-gpu-bench-") as tmp:
        paths = make_audio(Path(tmp), args.distinct, args.format)
        opts = {"threads": args.threads, "paths": paths, "source": args.source}
        if args.source == "arrays":
            import soundfile as sf
            opts["waves"] = [sf.read(p, dtype="float32")[0] for p in paths]
        suites = ["frontend", "e2e"] if args.suite == "all" else [args.suite]
        for suite in suites:
            kinds, baseline = SUITES[suite]
            best, infos, absent = run_suite(kinds, args.batches, args.rounds, opts)
            rows += report(suite, best, infos, absent, baseline, args.batches)
            summary[suite] = {"contenders": infos, "absent": absent}
    fast, base, need = TARGET
    got = {r["batch"]: r["vs_baseline"] for r in rows if r["contender"] == fast}
    if got:
        verdict = ", ".join(f"B={b}: {v:.1f}x {'ok' if v and v >= need else 'MISSED'}"
                            for b, v in got.items())
        print(f"\ntarget {fast} >= {need:.0f}x {base} clips/s: {verdict}")
    if args.json:
        import torch
        meta = {"device": torch.cuda.get_device_name(), "torch": torch.__version__,
                "dali": __import__("nvidia.dali").dali.__version__, "threads": args.threads,
                "rounds": args.rounds, "source": args.source, "format": args.format,
                "clip_seconds": SECONDS, "sample_rate": SR, "target": list(TARGET)}
        args.json.write_text(json.dumps({"meta": meta, "suites": summary, "results": rows},
                                        indent=2))
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
