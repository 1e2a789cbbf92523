"""GPU LSTM benchmark: the Triton and CUDA persistent kernels and TensorRT against cuDNN.

Workload (the classifier's): 2-layer LSTM, input 148, hidden 128, T = 1292 and 646, batch 1, 8,
64, 256, weights fp32 and bf16. Every contender runs in this one process on the same inputs,
warm, interleaved round by round (the order rotating each round: the harness's
``interleaved_rounds``); each call is timed with CUDA events (not the harness's host clock or
its one process per contender: see ``bench_point``); the table gives medians, sequences/s, GFLOP/s from the formula
    FLOPs per sequence = Σ_layers 2·4H·(D + H)·T          (``mmengine.flops.recurrent_flops``)
and the ratio to cuDNN (>1: faster than cuDNN). Contenders that cannot run here are named in
the output with the reason.

TensorRT contender (``tensorrt``): the same LSTM (returning its last output) exported to ONNX
with the exporter settings of ``mmengine.export.export_onnx`` (TorchScript exporter, opset 17,
one ONNX ``LSTM`` op per layer, dynamic batch and frames) and compiled by
``mmengine.runtime.tensorrt_backend.build_plan`` into one plan per dtype ("fp32": TF32 off;
"bf16": ``BuilderFlag.BF16``, TensorRT 10 only) whose profile covers batch 1..max(--batches)
(opt ``--trt-opt-batch``) and frames 1..max(--steps) (opt = max); run with
``execute_async_v3`` on torch's current stream, torch CUDA tensors as buffers. Skipped, with the
reason, when tensorrt is not importable (or the build fails); ``--no-tensorrt`` skips it.

``--model-shape``: the LSTM of the default fusion model instead (``model_shape()``:
``ModelConfig()`` with every modality, on one window of ``AudioConfig().clip_seconds``; input
131, hidden 128, 2 layers, T = 646 when this was written), in place of ``--input-size``,
``--hidden``, ``--layers`` and ``--steps``.

Needs a CUDA GPU; without one it prints "no GPU: skipped" and exits 0:

    python bench/bench_gpu_lstm.py                  # full grid, 7 rounds
    python bench/bench_gpu_lstm.py --model-shape    # the default model's LSTM
    python bench/bench_gpu_lstm.py --batches 1 64 --steps 646 --rounds 5
Writes JSON (--json) and a markdown table (--markdown).
"""
from __future__ import annotations

import argparse
import json
import platform
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from mmengine.errors import MMEngineError  # noqa: E402
from mmengine.flops import recurrent_flops  # noqa: E402
from mmengine.harness import interleaved_rounds, median  # noqa: E402
from mmengine.models.reference import layers_from_torch  # noqa: E402
from mmengine.runtime.gpu_lstm import CudaLSTM, TritonLSTM  # noqa: E402

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}


def model_shape() -> dict:
    """The recurrence of the default fusion model (``ModelConfig()``, every modality present)
    on one window of ``AudioConfig().clip_seconds``: ``input_size``, ``hidden``, ``layers``
    and ``steps`` (frames after the stems' pooling). Built on the CPU, random weights."""
    from mmengine.config import AudioConfig, FrontendConfig, ModelConfig
    from mmengine.features.symbolic import SYMBOLIC_DIM
    from mmengine.models import build_model
    from mmengine.runtime.tensorrt_backend import window_frames

    fe = FrontendConfig()
    model = build_model(ModelConfig(), dict(n_mfcc=fe.n_mfcc, n_mels=fe.n_mels, text_dim=64,
                                            symbolic_dim=SYMBOLIC_DIM, n_classes=4,
                                            multilabel=False))
    rnn = model.classifier.rnn
    if not isinstance(rnn, torch.nn.LSTM):
        raise ValueError(f"the default model's recurrence is {type(rnn).__name__}, not an LSTM")
    return {"input_size": rnn.input_size, "hidden": rnn.hidden_size, "layers": rnn.num_layers,
            "steps": model.out_frames(window_frames(AudioConfig(), fe))}


class _LastOutput(torch.nn.Module):
    """x (B, T, D) -> the LSTM's last output (B, H): what every contender returns."""

    def __init__(self, lstm: torch.nn.LSTM):
        super().__init__()
        self.lstm = lstm

    def forward(self, x):
        return self.lstm(x)[0][:, -1]


def lstm_onnx(lstm: torch.nn.LSTM, opset: int = 17) -> bytes:
    """ONNX of ``_LastOutput(lstm)`` in fp32 on the CPU: input "x" (batch, frames, D), output
    "y" (batch, H), exported like ``mmengine.export.export_onnx`` (TorchScript exporter)."""
    import copy
    import io
    import warnings

    module = _LastOutput(copy.deepcopy(lstm).float().cpu()).eval()
    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with torch.no_grad():
            torch.onnx.export(module, (torch.randn(2, 8, lstm.input_size),), buf, dynamo=False,
                              opset_version=opset, input_names=["x"], output_names=["y"],
                              dynamic_axes={"x": {0: "batch", 1: "frames"}, "y": {0: "batch"}},
                              do_constant_folding=True)
    return buf.getvalue()


class TensorRTLSTM:
    """A TensorRT plan of ``lstm_onnx`` run on torch CUDA tensors (no host copies).

    Args:
        plan: serialized plan (``tensorrt_backend.build_plan``).
    ``__call__(x)``: x (B, T, D) float32 on cuda -> (B, H), queued on torch's current stream.
    """

    def __init__(self, plan: bytes):
        from mmengine.runtime.tensorrt_backend import _require_trt

        trt = _require_trt()
        self.runtime = trt.Runtime(trt.Logger(trt.Logger.WARNING))
        self.engine = self.runtime.deserialize_cuda_engine(plan)
        if self.engine is None:
            raise RuntimeError("TensorRT could not deserialize the plan it just built")
        self.context = self.engine.create_execution_context()
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        inputs = [n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        (self.input,), (self.output,) = inputs, [n for n in names if n not in inputs]
        import numpy as np

        self.out_dtype = torch.from_numpy(
            np.empty(0, trt.nptype(self.engine.get_tensor_dtype(self.output)))).dtype

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        x = x.to(torch.float32).contiguous()
        if not self.context.set_input_shape(self.input, tuple(x.shape)):
            raise ValueError(f"x {tuple(x.shape)} is outside the plan's profile")
        self.context.set_tensor_address(self.input, x.data_ptr())
        y = torch.empty(tuple(self.context.get_tensor_shape(self.output)), dtype=self.out_dtype,
                        device=x.device)
        self.context.set_tensor_address(self.output, y.data_ptr())
        if not self.context.execute_async_v3(torch.cuda.current_stream().cuda_stream):
            raise RuntimeError("TensorRT execute_async_v3 failed")
        return y


def make_tensorrt(lstm: torch.nn.LSTM, dtype_name: str, max_batch: int, opt_batch: int,
                  max_frames: int):
    """A ``TensorRTLSTM`` for ``lstm`` at precision ``dtype_name`` ("fp32"/"bf16") whose profile
    covers batch 1..max_batch and frames 1..max_frames. Raises ``BackendUnavailableError`` /
    ``OptionalDependencyError`` / ``ImportError`` when TensorRT cannot be used here."""
    from mmengine.runtime.tensorrt_backend import TensorRTSettings, _require_trt, build_plan

    _require_trt()  # before the export: a clean skip without tensorrt
    settings = TensorRTSettings(min_batch=1, opt_batch=min(opt_batch, max_batch),
                                max_batch=max_batch, min_frames=1, opt_frames=max_frames,
                                max_frames=max_frames)
    inputs = [{"name": "x", "shape": ["batch", "frames", lstm.input_size], "dtype": "float32"}]
    plan, _ = build_plan(lstm_onnx(lstm), inputs, settings, dtype_name, max_frames)
    return TensorRTLSTM(plan)


def make_contenders(lstm: torch.nn.LSTM, dtype: torch.dtype, tensorrt: dict = None):
    """name -> callable(x) returning the last layer's last output (B, H); and absent names.

    ``tensorrt``: None (no TensorRT contender) or ``make_tensorrt``'s keyword arguments
    ``max_batch``, ``opt_batch``, ``max_frames``."""
    layers = layers_from_torch(lstm)
    trt_model, trt_reason = None, None
    if tensorrt is not None:  # export the fp32 weights before lstm.to(dtype) below
        dt_name = {v: k for k, v in DTYPES.items()}[dtype]
        try:
            trt_model = make_tensorrt(lstm, dt_name, **tensorrt)
        except (MMEngineError, ImportError, RuntimeError, ValueError) as exc:
            trt_reason = f"{type(exc).__name__}: {exc}"
    cudnn = lstm.to(dtype)

    def run_cudnn(x):
        return cudnn(x.to(dtype))[0][:, -1]

    contenders, absent = {"cudnn": run_cudnn}, {}
    for name, cls in (("triton", TritonLSTM), ("cuda", CudaLSTM)):
        try:
            model = cls(layers, dtype)
        except (MMEngineError, ImportError) as exc:
            absent[name] = str(exc)
            continue
        contenders[name] = lambda x, m=model: m.forward(x)[0]
    if trt_model is not None:
        contenders["tensorrt"] = trt_model
    elif trt_reason is not None:
        absent["tensorrt"] = trt_reason
    return contenders, absent


def time_call(fn, x) -> float:
    start, stop = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    fn(x)
    stop.record()
    stop.synchronize()
    return start.elapsed_time(stop)


def bench_point(contenders, x, rounds: int, warmup: int) -> dict:
    """Median ms per call of each contender, interleaved round by round in rotating order
    (``mmengine.harness.interleaved_rounds``), one CUDA-event-timed call per turn.

    In this process rather than ``harness.run_interleaved``'s one process per contender: the
    contenders share the GPU, its CUDA context and the input tensor (no CPU thread pools to
    keep apart), and a call is timed with CUDA events (``time_call``) on the device rather
    than with the host clock the harness's workers use."""
    with torch.inference_mode():
        for fn in contenders.values():
            for _ in range(warmup):
                fn(x)
        torch.cuda.synchronize()
        times = interleaved_rounds(list(contenders), [None], rounds,
                                   lambda name, _: time_call(contenders[name], x))
    return {name: median(times[(name, None)]) for name in contenders}


def max_diff(contenders, x) -> dict:
    """Max |contender - cuDNN| of the last output, in the same dtype (a sanity column)."""
    with torch.inference_mode():
        ref = contenders["cudnn"](x).float()
        return {n: (fn(x).float() - ref).abs().max().item() for n, fn in contenders.items()}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--batches", type=int, nargs="+", default=[1, 8, 64, 256])
    ap.add_argument("--steps", type=int, nargs="+", default=[1292, 646])
    ap.add_argument("--dtypes", nargs="+", choices=sorted(DTYPES), default=["fp32", "bf16"])
    ap.add_argument("--input-size", type=int, default=148)
    ap.add_argument("--hidden", type=int, default=128)
    ap.add_argument("--layers", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--no-tensorrt", action="store_true", help="leave the TensorRT contender out")
    ap.add_argument("--trt-opt-batch", type=int, default=64,
                    help="opt batch of the TensorRT profile (capped at max(--batches))")
    ap.add_argument("--cudnn-tf32", action="store_true",
                    help="let cuDNN use TF32 for fp32 (off by default: the kernels compute fp32)")
    ap.add_argument("--model-shape", action="store_true",
                    help="the default fusion model's LSTM (input, hidden, layers, T) instead of "
                         "--input-size/--hidden/--layers/--steps")
    ap.add_argument("--json", type=Path, default=ROOT / "bench" / "gpu_lstm_results.json")
    ap.add_argument("--markdown", type=Path, default=ROOT / "bench" / "gpu_lstm_results.md")
    args = ap.parse_args(argv)
    shape = "standard"
    if args.model_shape:
        shape = "model"
        m = model_shape()
        args.input_size, args.hidden, args.layers, args.steps = (
            m["input_size"], m["hidden"], m["layers"], [m["steps"]])
    print(f"bench_gpu_lstm: {shape} shape: {args.layers}-layer LSTM {args.input_size}->"
          f"{args.hidden}, T {args.steps}", flush=True)
    if not torch.cuda.is_available():
        print(f"bench_gpu_lstm: no GPU: skipped (torch {torch.__version__} sees no CUDA device)")
        return 0

    torch.manual_seed(0)
    torch.backends.cudnn.benchmark = True
    torch.backends.cudnn.allow_tf32 = args.cudnn_tf32
    rows, absent_all = [], {}
    for dt_name in args.dtypes:
        dtype = DTYPES[dt_name]
        lstm = torch.nn.LSTM(args.input_size, args.hidden, num_layers=args.layers,
                             batch_first=True).cuda().eval()
        trt_opts = None if args.no_tensorrt else {
            "max_batch": max(args.batches), "opt_batch": args.trt_opt_batch,
            "max_frames": max(args.steps)}
        contenders, absent = make_contenders(lstm, dtype, trt_opts)
        absent_all.update({f"{k} ({dt_name})": v for k, v in absent.items()})
        for steps in args.steps:
            flops = recurrent_flops(args.input_size, args.hidden, args.layers, steps)
            for batch in args.batches:
                x = torch.randn(batch, steps, args.input_size, device="cuda")
                med = bench_point(contenders, x, args.rounds, args.warmup)
                diffs = max_diff(contenders, x)
                for name, ms in med.items():
                    rows.append({
                        "dtype": dt_name, "T": steps, "batch": batch, "contender": name,
                        "median_ms": ms, "sequences_per_s": batch / (ms / 1e3),
                        "gflops": flops * batch / (ms / 1e3) / 1e9,
                        "vs_cudnn": med["cudnn"] / ms, "max_diff_vs_cudnn": diffs[name],
                    })
                print(" ".join(f"{dt_name} T={steps} B={batch} {n}={ms:.3f}ms"
                               for n, ms in med.items()), flush=True)

    meta = {
        "device": torch.cuda.get_device_name(), "torch": torch.__version__,
        "cuda": torch.version.cuda, "cudnn": torch.backends.cudnn.version(),
        "python": platform.python_version(), "rounds": args.rounds,
        "cudnn_tf32": args.cudnn_tf32,
        "workload": {"shape": shape, "input_size": args.input_size, "hidden": args.hidden,
                     "layers": args.layers},
        "flops_formula": "sum over layers of 2*4H*(D+H)*T per sequence",
        "absent": absent_all,
    }
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps({"meta": meta, "results": rows}, indent=2))
    lines = [f"# GPU LSTM: persistent kernels vs cuDNN ({meta['device']})", "",
             f"torch {meta['torch']}, CUDA {meta['cuda']}, cuDNN {meta['cudnn']} "
             f"(TF32 {'on' if args.cudnn_tf32 else 'off'}); "
             f"{args.layers}-layer LSTM {args.input_size}->{args.hidden} ({shape} shape); "
             "median of "
             f"{args.rounds} interleaved rounds; FLOPs = {meta['flops_formula']}.", "",
             "| dtype | T | batch | contender | median ms | seq/s | GFLOP/s | vs cuDNN | "
             "max diff vs cuDNN |", "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['dtype']} | {r['T']} | {r['batch']} | {r['contender']} | "
                     f"{r['median_ms']:.3f} | {r['sequences_per_s']:.1f} | {r['gflops']:.1f} | "
                     f"{r['vs_cudnn']:.2f}x | {r['max_diff_vs_cudnn']:.2e} |")
    if absent_all:
        lines += ["", "Absent contenders:"] + [f"- {k}: {v}" for k, v in absent_all.items()]
    args.markdown.write_text("\n".join(lines) + "\n")
    print(f"wrote {args.json} and {args.markdown}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
