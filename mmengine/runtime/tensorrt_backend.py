"""The TensorRT backend (``pip install 'mmengine-music[tensorrt]'``, NVIDIA GPU), TensorRT 10 API.

Build (``mmengine build ... --backend tensorrt [--dtype fp32|fp16|bf16]``): the classifier is
exported to ONNX exactly as for the onnx backend (``mmengine.export.export_onnx``), parsed by
TensorRT's ``OnnxParser``, and compiled with ONE optimization profile covering

    batch   min_batch  ≤ opt_batch  ≤ max_batch
    frames  min_frames ≤ opt_frames ≤ max_frames   (default opt = max = frames of one
                                                    inference window, AudioConfig.clip_seconds)

for every input with those dims (``profile_shapes``). Precision: "fp32" clears TF32 (full fp32
math); "fp16"/"bf16" set ``BuilderFlag.FP16``/``BF16`` on a weakly typed network (TensorRT 10;
TensorRT ≥ 11 removed those flags and builds strongly typed networks: fp32 only here).

Payload: the serialized plan (``build_serialized_network``). The header records the TensorRT
version, precision, profile and the GPU it was built on: a plan runs only on the same GPU
architecture and TensorRT version; loading elsewhere fails with a message saying so.

Run: ``Runtime.deserialize_cuda_engine``, one execution context; per call
``set_input_shape`` + ``set_tensor_address`` for every I/O tensor (torch CUDA tensors as
buffers) and ``execute_async_v3`` on a torch CUDA stream. Batches above ``max_batch`` are split.
"""
from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, fields
from typing import Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np

from .. import _ext
from ..config import AudioConfig, FrontendConfig, from_dict
from ..errors import BackendUnavailableError, EngineFileError, OptionalDependencyError
from .engine_file import EngineFile

log = logging.getLogger("mmengine.runtime")

Shape = Tuple[int, ...]
PRECISIONS = ("fp32", "fp16", "bf16")


@dataclass(frozen=True)
class TensorRTSettings:
    """Build options of a TensorRT plan.

    Attributes:
        min_batch, opt_batch, max_batch: batch range of the optimization profile.
        min_frames, opt_frames, max_frames: frame range; None = frames of one inference window
            (``window_frames``), so opt = max = what the engine feeds.
        workspace_mib: builder workspace memory pool limit.
        optimization_level: builder optimization level 0-5 (None: TensorRT's default, 3).
    """

    min_batch: int = 1
    opt_batch: int = 16
    max_batch: int = 64
    min_frames: int = 1
    opt_frames: Optional[int] = None
    max_frames: Optional[int] = None
    workspace_mib: int = 1024
    optimization_level: Optional[int] = None

    @classmethod
    def from_options(cls, options: Mapping) -> "TensorRTSettings":
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(options) - known)
        if unknown:
            raise ValueError(f"unknown TensorRT option(s) {unknown}; valid: {sorted(known)}")
        return cls(**dict(options))


def window_frames(audio_cfg: AudioConfig, frontend_cfg: FrontendConfig) -> int:
    """Feature frames of one inference window (``clip_seconds`` at the front end's rate)."""
    n = int(round(audio_cfg.clip_seconds * frontend_cfg.sample_rate))
    return frontend_cfg.n_frames(n)


def resolved_ranges(settings: TensorRTSettings, frames: int) -> Dict[str, Tuple[int, int, int]]:
    """``{"batch": (min, opt, max), "frames": (min, opt, max)}``, checked min ≤ opt ≤ max."""
    s = settings
    opt_f = s.opt_frames if s.opt_frames is not None else frames
    max_f = s.max_frames if s.max_frames is not None else max(frames, opt_f)
    out = {"batch": (s.min_batch, s.opt_batch, s.max_batch),
           "frames": (s.min_frames, opt_f, max_f)}
    for dim, (lo, opt, hi) in out.items():
        if not 1 <= lo <= opt <= hi:
            raise ValueError(f"TensorRT profile {dim}: need 1 <= min <= opt <= max, "
                             f"got {lo}, {opt}, {hi}")
    return out


def profile_shapes(inputs: Sequence[Mapping], settings: TensorRTSettings,
                   frames: int) -> Dict[str, Tuple[Shape, Shape, Shape]]:
    """Per input name, the (min, opt, max) shapes of the optimization profile.

    Args:
        inputs: ``header["io"]["inputs"]`` (shapes with "batch"/"frames" symbols).
        settings: the ranges.
        frames: frames of one inference window (``window_frames``).
    """
    ranges = resolved_ranges(settings, frames)
    out = {}
    for spec in inputs:
        shapes = []
        for k in range(3):
            shapes.append(tuple(ranges[d][k] if isinstance(d, str) else int(d)
                                for d in spec["shape"]))
        out[spec["name"]] = tuple(shapes)
    return out


def precision_plan(precision: str, builder_flags: Sequence[str]) -> dict:
    """How to get ``precision`` from a TensorRT whose ``BuilderFlag`` has ``builder_flags``.

    Returns:
        ``{"strongly_typed": bool, "set": [flag names], "clear": [flag names]}``.
    Raises:
        BackendUnavailableError: fp16/bf16 asked of a TensorRT without weak typing flags.
    """
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    have = set(builder_flags)
    if precision == "fp32":
        return {"strongly_typed": "TF32" not in have, "set": [],
                "clear": ["TF32"] if "TF32" in have else []}
    flag = precision.upper()
    if flag not in have:
        raise BackendUnavailableError(
            f"this TensorRT has no BuilderFlag.{flag} (weakly typed reduced precision was "
            "removed in TensorRT 11); build with --dtype fp32 or use TensorRT 10")
    return {"strongly_typed": False, "set": [flag], "clear": []}


def _require_trt():
    try:
        trt = _ext.require("tensorrt")
    except OptionalDependencyError as exc:
        raise BackendUnavailableError(f"backend 'tensorrt' is unavailable: {exc}") from exc
    if not _ext.cuda_available():
        raise BackendUnavailableError("TensorRT needs an NVIDIA GPU visible to a CUDA build of "
                                      "torch; none is visible")
    return trt


def build_plan(onnx_bytes: bytes, inputs: Sequence[Mapping], settings: TensorRTSettings,
               precision: str, frames: int) -> Tuple[bytes, dict]:
    """Compile ``onnx_bytes`` into a serialized TensorRT plan.

    Returns:
        (plan bytes, header options: TensorRT version, precision, profile, device).
    """
    trt = _require_trt()
    import torch

    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    plan = precision_plan(precision, [n for n in dir(trt.BuilderFlag) if n.isupper()])
    flags = 0
    if plan["strongly_typed"]:
        flags |= 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse(onnx_bytes):
        errors = [str(parser.get_error(i)) for i in range(parser.num_errors)]
        raise RuntimeError("TensorRT's ONNX parser refused the model: " + "; ".join(errors))
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, settings.workspace_mib << 20)
    for name in plan["set"]:
        config.set_flag(getattr(trt.BuilderFlag, name))
    for name in plan["clear"]:
        config.clear_flag(getattr(trt.BuilderFlag, name))
    if settings.optimization_level is not None:
        config.builder_optimization_level = int(settings.optimization_level)
    shapes = profile_shapes(inputs, settings, frames)
    network_inputs = {network.get_input(i).name for i in range(network.num_inputs)}
    profile = builder.create_optimization_profile()
    for name, (lo, opt, hi) in shapes.items():
        if name in network_inputs:
            profile.set_shape(name, lo, opt, hi)
    config.add_optimization_profile(profile)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise RuntimeError("TensorRT failed to build the engine (see the TensorRT log above)")
    major, minor = torch.cuda.get_device_capability()
    info = {"tensorrt_version": trt.__version__, "precision": precision,
            "strongly_typed": plan["strongly_typed"], "settings": asdict(settings),
            "profile": {k: [list(s) for s in v] for k, v in shapes.items()},
            "device": torch.cuda.get_device_name(), "compute_capability": f"{major}.{minor}"}
    return bytes(serialized), info


def build(model, header: Mapping, *, dtype: str = "fp32", **options) -> Tuple[bytes, dict]:
    """Payload for ``--backend tensorrt``: (plan bytes, backend header options)."""
    from ..spec import export_onnx

    settings = TensorRTSettings.from_options(options)
    _require_trt()
    inputs = header["io"]["inputs"]
    frames = window_frames(from_dict(AudioConfig, header["audio"]),
                           from_dict(FrontendConfig, header["frontend"]))
    return build_plan(export_onnx(model, inputs), inputs, settings, dtype, frames)


class TensorRTRunner:
    """Runs a deserialized plan; inputs and outputs through torch CUDA tensors."""

    backend = "tensorrt"

    def __init__(self, plan: bytes, header: Mapping, path: str = "<plan>"):
        trt = _require_trt()
        import torch

        self._trt, self._torch = trt, torch
        self.logger = trt.Logger(trt.Logger.WARNING)
        self.runtime = trt.Runtime(self.logger)
        self.engine = self.runtime.deserialize_cuda_engine(plan)
        opts = header.get("backend_options") or {}
        if self.engine is None:
            raise EngineFileError(path, "TensorRT could not deserialize the plan: it was built "
                                  f"with TensorRT {opts.get('tensorrt_version')} on "
                                  f"{opts.get('device')} (sm {opts.get('compute_capability')}), "
                                  f"this is TensorRT {trt.__version__} on "
                                  f"{torch.cuda.get_device_name()}; rebuild it here with "
                                  "`mmengine build ... --backend tensorrt`")
        self.context = self.engine.create_execution_context()
        self.stream = torch.cuda.Stream()
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        self.input_names = [n for n in names
                            if self.engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        self.output_names = [n for n in names if n not in self.input_names]
        self.max_batch = int(opts.get("settings", {}).get("max_batch", 0)) or None
        self.profile = opts.get("profile", {})

    def _run(self, inputs: Mapping[str, np.ndarray]) -> np.ndarray:
        torch, trt = self._torch, self._trt
        keep = []
        for name in self.input_names:
            dt = trt.nptype(self.engine.get_tensor_dtype(name))
            t = torch.from_numpy(np.ascontiguousarray(inputs[name], dtype=dt)).cuda()
            keep.append(t)
            if not self.context.set_input_shape(name, tuple(t.shape)):
                raise ValueError(f"input {name!r} of shape {tuple(t.shape)} is outside the "
                                 "plan's optimization profile "
                                 f"{self.profile.get(name)} (min, opt, max)")
            self.context.set_tensor_address(name, t.data_ptr())
        outs = []
        for name in self.output_names:
            shape = tuple(self.context.get_tensor_shape(name))
            dt = trt.nptype(self.engine.get_tensor_dtype(name))
            o = torch.from_numpy(np.empty(shape, dtype=dt)).cuda()
            self.context.set_tensor_address(name, o.data_ptr())
            outs.append(o)
        torch.cuda.current_stream().synchronize()
        if not self.context.execute_async_v3(self.stream.cuda_stream):
            raise RuntimeError("TensorRT execute_async_v3 failed")
        self.stream.synchronize()
        return outs[0].float().cpu().numpy()

    def __call__(self, inputs: Mapping[str, np.ndarray]) -> np.ndarray:
        """inputs: name -> array (see ``registry.Runner``). Returns logits (B, C) float32."""
        B = len(next(iter(inputs.values())))
        step = self.max_batch or B
        parts: List[np.ndarray] = []
        for s in range(0, B, step):
            parts.append(self._run({k: v[s:s + step] for k, v in inputs.items()}))
        return np.concatenate(parts, axis=0)


def load(ef: EngineFile) -> TensorRTRunner:
    return TensorRTRunner(ef.payload, ef.header, ef.path)
