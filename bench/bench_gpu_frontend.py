"""GPU front-end and end-to-end benchmarks: DALI GPU vs DALI CPU, files → probabilities on cuda.

Suite ``frontend`` (clips/s): B audio files (30 s at 22,050 Hz, FLAC by default) → log-Mel
(128, 1292) + MFCC (20, 1292) with n_fft 2048, hop 512 (``FrontendConfig(chroma_bins=0)``: DALI
computes no chroma), batch 1, 8, 64,
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

Suite ``engine`` (clips/s; no DALI needed): B audio files → ``Engine.classify`` → predictions,
through the engine as users run it: one ``.mme`` file (``make_engine``: the fusion model above,
audio only, fp32, torch payload) loaded with ``frontend="torch", frontend_device="gpu"`` (the
torch front end on cuda: decode on the CPU, log-Mel/MFCC on the GPU) and ``batch_size=B``:

* ``engine-torch``: ``backend="torch"`` on cuda (cuDNN LSTM), the baseline.
* ``engine-cuda`` / ``engine-triton``: ``backend="cuda"`` / ``"triton"`` (the persistent
  kernels; named, since ``auto`` picks only verified backends); absent, with the reason, when
  the CUDA extension or triton is missing.

Method: ``mmengine/harness.py``'s, as the CPU peer suites: every contender runs warm in its own
spawned process (its own DALI thread pool and CUDA context; built and called twice per batch
before timing), contenders interleaved round by round in rotating order; reported per batch:
the median over rounds of each round's best call, clips/s, p50/p99, peak RSS and the ratio to
every other contender of the suite (the target reads "x vs dali-cpu" of dali-gpu). Without a
CUDA device it prints "no GPU: skipped" and exits 0.

The DALI suites need DALI (``pip install 'mmengine-music[dali]'``): ``--suite all`` without it
runs ``engine`` alone and names the suites it left out; ``--suite frontend`` or ``e2e`` without
it is an error (exit 2).

    python bench/bench_gpu_frontend.py [--suite frontend|e2e|engine|all] [--rounds 5]
        [--batches 1 8 64 256] [--threads N] [--source files|arrays] [--format flac|wav]
        [--json out.json]
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path
from typing import Optional

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

SR, SECONDS, N_CLASSES = 22050, 30.0, 4
SUITES = {
    "frontend": ["dali-cpu", "dali-gpu", "dali-gpu-host"],
    "e2e": ["e2e-torch", "e2e-triton", "e2e-cuda", "e2e-host"],
    "engine": ["engine-torch", "engine-cuda", "engine-triton"],
}
DALI_SUITES = ("frontend", "e2e")
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


def dali_missing_reason():
    """None when DALI imports and sees a CUDA device, else why the DALI suites cannot run."""
    try:
        import nvidia.dali  # noqa: F401

        from mmengine.features.dali import _dali_gpu_count
    except ImportError as exc:
        return f"DALI is not installed ({exc}); pip install 'mmengine-music[dali]'"
    if _dali_gpu_count() == 0:
        return "DALI sees no CUDA device"
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
# harness factories (mmengine/harness.py): factory(threads=..., **kwargs) -> (info, make), and
# make(workload_params, batch) -> the callable timed; each runs in its own spawned process.
def _waves(paths):
    import soundfile as sf

    return [sf.read(p, dtype="float32")[0] for p in paths]


def frontend_contender(threads: int, kind: str, paths: list, source: str):
    """A front-end contender: ``dali-cpu``, ``dali-gpu`` or ``dali-gpu-host``."""
    import torch

    from mmengine.config import FrontendConfig
    from mmengine.features.dali import DaliFrontend

    cfg = FrontendConfig(chroma_bins=0)  # DALI computes no chroma
    device = "cpu" if kind == "dali-cpu" else "gpu"
    files = source == "files"
    to_device = kind == "dali-gpu"
    waves = None if files else _waves(paths)  # decoded once, outside the timing

    def make(params, batch):
        fe = DaliFrontend(cfg, device=device, batch_size=batch, num_threads=threads)
        pool = paths if files else waves
        data = [pool[i % len(pool)] for i in range(batch)]
        if files:
            run = fe.from_files_padded if to_device else fe.from_files
        else:
            run = fe.from_arrays_padded if to_device else fe.from_arrays
        if to_device:
            def call():
                out = run(data)
                torch.cuda.synchronize()
                return out
            return call
        return lambda: run(data)

    return f"DALI {device}, {threads} threads, source {source}", make


def e2e_contender(threads: int, kind: str, paths: list, source: str = "files"):
    """An end-to-end contender: ``e2e-torch``, ``e2e-triton``, ``e2e-cuda`` or ``e2e-host``."""
    import numpy as np
    import torch

    from mmengine.config import FrontendConfig
    from mmengine.features.dali import DaliFrontend

    cfg = FrontendConfig(chroma_bins=0)  # DALI computes no chroma
    model = fusion_model().cuda()
    info = f"fusion model {tuple(model.modalities)}, torch {torch.__version__} (cuDNN)"
    classify = lambda batch: torch.softmax(model(batch), dim=1)  # noqa: E731
    if kind in ("e2e-triton", "e2e-cuda"):
        from mmengine.runtime.torch_backend import gpu_runner

        runner = gpu_runner(model, "triton" if kind == "e2e-triton" else "cuda")
        info = f"fusion model stems in torch, recurrence {kind[4:]} kernels fp32"

        def classify(batch):
            return torch.softmax(torch.from_numpy(runner(batch)), dim=1)

    via_host = kind == "e2e-host"

    def make(params, batch):
        fe = DaliFrontend(cfg, device="gpu", batch_size=batch, num_threads=threads)
        data = [paths[i % len(paths)] for i in range(batch)]

        def call():
            with torch.inference_mode():
                if via_host:
                    feats = fe.from_files(data)  # GPU → host numpy
                    x = {k: torch.from_numpy(np.stack([f[k] for f in feats])).cuda()
                         for k in ("logmel", "mfcc")}
                else:
                    x = fe.from_files_padded(data)  # stays on cuda:0 (DLPack)
                return classify({"logmel": x["logmel"], "mfcc": x["mfcc"]}).cpu()
        return call

    return info + f"; DALI gpu, {threads} threads", make


def fusion_model():
    """The classifier of the e2e and engine suites: ``ModelConfig()`` on the two audio streams,
    ``N_CLASSES`` classes, seeded random weights, eval mode, on the CPU."""
    import torch

    from mmengine.config import FrontendConfig, ModelConfig
    from mmengine.models import build_model

    torch.manual_seed(0)
    cfg = FrontendConfig(chroma_bins=0)  # DALI computes no chroma
    dims = dict(n_mfcc=cfg.n_mfcc, n_mels=cfg.n_mels, text_dim=0, symbolic_dim=0,
                n_classes=N_CLASSES, multilabel=False)
    return build_model(ModelConfig(), dims).eval()


def make_engine(folder: Path) -> Path:
    """``folder/engine.mme``: ``fusion_model()`` as an fp32 engine with a torch payload (the
    payload the torch, cuda and triton backends run); 30 s windows at 22,050 Hz."""
    from mmengine.config import AudioConfig, FrontendConfig
    from mmengine.export import build_engine_from_model

    return build_engine_from_model(fusion_model(), Path(folder) / "engine.mme", backend="torch",
                                   labels=[f"class{i}" for i in range(N_CLASSES)],
                                   audio_cfg=AudioConfig(clip_seconds=SECONDS, sample_rate=SR),
                                   frontend_cfg=FrontendConfig(sample_rate=SR))


def engine_contender(threads: int, kind: str, paths: list, engine: str, source: str = "files"):
    """An engine contender: ``engine-torch``, ``engine-cuda`` or ``engine-triton``: the engine
    file on that backend, the torch front end on the GPU, ``classify`` of B files."""
    from mmengine.runtime import Engine, ErrorEntry

    backend = kind.split("-", 1)[1]
    eng = Engine.load(engine, backend=backend, frontend="torch", frontend_device="gpu")

    def make(params, batch):
        data = [paths[i % len(paths)] for i in range(batch)]
        errors = [r for r in eng.classify(data, batch_size=batch, workers=threads)
                  if isinstance(r, ErrorEntry)]
        if errors:  # a call that fails on its inputs must not be timed as a fast one
            raise RuntimeError(f"{kind}: {len(errors)} of {batch} files failed: {errors[0]}")
        return lambda: eng.classify(data, batch_size=batch, workers=threads)

    return (f"Engine backend {backend} ({eng.header['dtype']}), torch front end on "
            f"{eng.frontend.device}, {threads} decode threads"), make


def run_suite(suite: str, batches, rounds: int, threads: int, paths: list, source: str,
              engine: Optional[Path] = None) -> dict:
    """One suite through ``mmengine.harness.run_interleaved`` (its result dict); ``engine``: the
    engine file of the ``engine`` suite."""
    from mmengine.harness import Contender, Workload, run_interleaved

    factory = f"bench.bench_gpu_frontend:{suite}_contender"
    extra = {"engine": str(engine)} if suite == "engine" else {}
    contenders = [Contender(k, factory, {"kind": k, "paths": paths, "source": source, **extra})
                  for k in SUITES[suite]]
    workload = Workload(f"{SECONDS:.0f} s clips", {"source": source}, unit="clips")
    return run_interleaved(contenders, [workload], batches, rounds=rounds, threads=threads,
                           target_s=0.25, max_reps=3, peak_in=None, suite=suite)


def main(argv=None) -> int:
    """Run the chosen suites and print their tables; 0 also when skipped for want of a GPU."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--suite", choices=[*SUITES, "all"], default="all")
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
    suites = list(SUITES) if args.suite == "all" else [args.suite]
    dali_missing = dali_missing_reason() if set(suites) & set(DALI_SUITES) else None
    if dali_missing:
        left_out = [s for s in suites if s in DALI_SUITES]
        suites = [s for s in suites if s not in DALI_SUITES]
        print(f"bench_gpu_frontend: suites {', '.join(left_out)} skipped: {dali_missing}",
              file=sys.stderr if not suites else sys.stdout, flush=True)
        if not suites:
            return 2

    from mmengine.harness import write_outputs

    results = []
    with tempfile.TemporaryDirectory(prefix="mmengine-gpu-bench-") as tmp:
        paths = make_audio(Path(tmp), args.distinct, args.format)
        engine = make_engine(Path(tmp)) if "engine" in suites else None
        for suite in suites:
            results.append(run_suite(suite, args.batches, args.rounds, args.threads, paths,
                                     args.source if suite == "frontend" else "files", engine))
    print(write_outputs(results, json_path=args.json))
    fast, base, need = TARGET
    got = {r["batch"]: r["ratios"].get(base) for res in results for r in res["results"]
           if r["contender"] == fast and "ratios" in r}
    if got:
        verdict = ", ".join(f"B={b}: {v:.1f}x {'ok' if v and v >= need else 'MISSED'}"
                            for b, v in got.items() if v is not None)
        print(f"\ntarget {fast} >= {need:.0f}x {base} clips/s: {verdict}")
    if args.json:
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
