"""The one backend registry (STYLE.md habit 6).

Backends, fastest first (the order ``auto`` walks)::

    GPU machine (torch sees CUDA):  tensorrt > cuda > triton > torch > native > onnx
    CPU machine:                    native > onnx > torch

On a GPU machine ``torch`` runs on the GPU (cuDNN), ahead of the CPU backends.

``auto`` picks only a backend verified on the hardware class it would run on here ("cpu" or
"gpu", ``hardware_class``): ``VERIFIED`` records, per backend, the hardware classes where a run
passed its tests, with the date and the evidence. Until a GPU run has passed their tests, the
``cuda``, ``triton`` and ``tensorrt`` backends (and ONNX Runtime's CUDA provider) are opt-in:
``backend="cuda"`` loads them, ``auto`` passes over them (logged) and uses ``torch`` on a GPU.

``available_backends()`` lists the backends that import and can run here; ``get_backend(name)``
returns a backend's description or fails: ``UnknownBackendError`` listing the valid names, or
``BackendUnavailableError`` saying why and which command fixes it. ``select_backend`` resolves
``"auto"`` for an engine file: it skips backends that cannot run the file's payload (an ONNX
payload runs only on ``onnx``, a TensorRT plan only on ``tensorrt``, safetensors weights on
``native``/``cuda``/``triton``/``torch``) and unverified ones, logs its choice at INFO, and logs a
WARNING naming the reason whenever it does not use the backend the file was built for (never a
silent fallback).

Every probe is lazy: nothing here imports a GPU-only module at import time.
"""
from __future__ import annotations

import importlib
import importlib.util
import logging
from dataclasses import dataclass
from typing import Callable, Dict, List, Mapping, Optional, Protocol, Tuple

import numpy as np

from .. import _ext
from ..errors import BackendUnavailableError, UnknownBackendError

log = logging.getLogger("mmengine.runtime")

PREFERENCE_GPU = ("tensorrt", "cuda", "triton", "torch", "native", "onnx")
PREFERENCE_CPU = ("native", "onnx", "torch")
HARDWARE_CLASSES = ("cpu", "gpu")


class Runner(Protocol):
    """A loaded backend: maps model inputs to logits.

    ``inputs``: name -> array, as listed in the engine header's ``io.inputs`` (e.g. ``mfcc``
    (B, n_mfcc, T) float32, ``logmel`` (B, n_mels, T) float32, ``text`` (B, V) float32,
    ``text_mask`` (B,) bool). Returns logits (B, C) float32 (numpy).
    """

    backend: str

    def __call__(self, inputs: Mapping[str, np.ndarray]) -> np.ndarray: ...


@dataclass(frozen=True)
class BackendInfo:
    """What a backend is, what it runs and where it lives.

    Attributes:
        name: registry key.
        description: one line for listings.
        payload_formats: engine payloads it can run (``engine_file.PAYLOAD_FORMATS``).
        build_payload: the payload ``mmengine build --backend NAME`` writes (cuda and triton
            write the torch weights: their kernels take the LSTM weights as torch stores them).
        dtypes: ``--dtype`` values it builds.
        module: module with ``load(engine_file, **options) -> Runner`` (and ``build`` when it
            builds its own payload).
        gpu: needs a CUDA GPU.
        install: the command that makes it available.
    """

    name: str
    description: str
    payload_formats: Tuple[str, ...]
    build_payload: Optional[str]
    dtypes: Tuple[str, ...]
    module: str
    gpu: bool
    install: str

    def load_module(self):
        return importlib.import_module(self.module)


_GPU_FIX = ("run on a machine with an NVIDIA GPU and a CUDA build of torch "
            "(https://pytorch.org/get-started/locally/); on this machine use a CPU backend")

BACKENDS: Dict[str, BackendInfo] = {
    "tensorrt": BackendInfo(
        "tensorrt", "TensorRT plan built from the ONNX export (GPU)", ("tensorrt-plan",),
        "tensorrt-plan", ("fp32", "fp16", "bf16"), "mmengine.runtime.tensorrt_backend", True,
        _ext.install_hint("tensorrt")),
    "cuda": BackendInfo(
        "cuda", "CUDA C++ LSTM kernels from mmengine._C (GPU)", ("safetensors",), "safetensors",
        ("fp32", "bf16"), "mmengine.runtime.torch_backend", True,
        "MMENGINE_CUDA=1 pip install -e . (needs nvcc and a CUDA build of torch)"),
    "triton": BackendInfo(
        "triton", "Triton LSTM kernels (GPU)", ("safetensors",), "safetensors", ("fp32", "bf16"),
        "mmengine.runtime.torch_backend", True, _ext.install_hint("triton")),
    "native": BackendInfo(
        "native", "C++ LSTM kernels from mmengine._C (CPU, AVX-512/AVX2)", ("safetensors",),
        "safetensors", ("fp32", "bf16"), "mmengine.runtime.native_backend", False,
        "pip install -e . (builds mmengine._C; needs a C++17 compiler)"),
    "onnx": BackendInfo(
        "onnx", "ONNX Runtime (CPU; CUDA provider when present)", ("onnx",), "onnx",
        ("fp32",), "mmengine.runtime.onnx_backend", False, _ext.install_hint("onnx")),
    "torch": BackendInfo(
        "torch", "PyTorch eager (reference)", ("safetensors",), "safetensors",
        ("fp32", "bf16"), "mmengine.runtime.torch_backend", False, "pip install torch"),
}


@dataclass(frozen=True)
class Verification:
    """A run that passed a backend's tests on one hardware class.

    Attributes:
        date: when (ISO date).
        evidence: what ran and passed, where (tests, machine, command).
    """

    date: str
    evidence: str


_CI = "the CI tests (`.ci/run` -> `make test`, 2-core x86-64 CPU, no GPU)"

#: backend -> hardware class ("cpu"/"gpu") -> the run that verified it there. ``auto`` picks a
#: backend only where its entry holds the hardware class it would run on (``hardware_class``);
#: any backend still loads when named. Add an entry only after a run on that hardware class
#: passed the backend's tests (for a GPU: ``bench/gpu/run.sh``, its summary.json as evidence).
VERIFIED: Dict[str, Dict[str, Verification]] = {
    "native": {"cpu": Verification("2026-12-07", f"{_CI}: tests/test_native_lstm.py, "
                                   "test_frontend_native.py, test_engine.py against the float64 "
                                   "reference, every ISA forced, fp32 and bf16")},
    "onnx": {"cpu": Verification("2026-12-07", f"{_CI}: tests/test_onnx_export.py, "
                                 "test_engine.py, ONNX Runtime's CPU provider against torch")},
    "torch": {
        "cpu": Verification("2026-12-07", f"{_CI}: the reference path of every engine test"),
        # the rule (#17): on a GPU, auto uses torch's own cuDNN path until the GPU
        # backends have passed their tests there; this package's torch code has not yet run
        # on a GPU here (bench/gpu/run.sh checks it: tests/test_backend_verified.py)
        "gpu": Verification("2026-12-07", "PyTorch's own CUDA/cuDNN kernels (tested upstream); "
                            "the model code is device-agnostic and tested on the CPU; not yet "
                            "run on a GPU here"),
    },
    "cuda": {},  # compiled by nvcc and emulated on the CPU in CI; never run on a GPU yet
    "triton": {},  # run in Triton's interpreter and compiled in CI; never run on a GPU yet
    "tensorrt": {},  # never run: TensorRT is not installable here
}


def _torch_version() -> str:
    try:
        import torch
    except ImportError:
        return "not installed"
    return torch.__version__


#: a probe returns None (usable) or (reason, command that fixes it; None = the install hint)
Probe = Optional[Tuple[str, Optional[str]]]


def _needs_gpu() -> Probe:
    if _ext.cuda_available():
        return None
    return (f"it needs a CUDA GPU, and torch {_torch_version()} sees none "
            "(torch.cuda.is_available() is False)", _GPU_FIX)


def _probe_torch() -> Probe:
    return None if importlib.util.find_spec("torch") else ("torch is not installed", None)


def _probe_onnx() -> Probe:
    return None if _ext.has("onnxruntime") else ("onnxruntime is not installed", None)


def _native_module():
    """``mmengine.runtime.native_lstm`` or None when it cannot be imported."""
    try:
        return importlib.import_module("mmengine.runtime.native_lstm")
    except ImportError:
        return None


def _probe_native() -> Probe:
    mod = _ext.native_extension()
    if mod is None:
        return "the C++ extension mmengine._C is not built", None
    if not hasattr(mod, "LSTM"):
        return "mmengine._C was built without its LSTM kernels (rebuild it)", None
    if _native_module() is None:
        return "mmengine.runtime.native_lstm cannot be imported", None
    return None


def _probe_tensorrt() -> Probe:
    if not _ext.has("tensorrt"):
        return "TensorRT (the tensorrt Python package) is not installed", None
    return _needs_gpu()


def _probe_triton() -> Probe:
    if not _ext.has("triton"):
        return "triton is not installed", None
    return _needs_gpu()


def _probe_cuda() -> Probe:
    gpu = _needs_gpu()
    if gpu:
        return gpu
    mod = _ext.native_extension()
    if mod is None:
        return "the C++ extension mmengine._C is not built", None
    if not hasattr(mod, "lstm_sequence_cuda"):
        return "mmengine._C was built without its CUDA kernels", None
    return None


_PROBES: Dict[str, Callable[[], Probe]] = {
    "tensorrt": _probe_tensorrt, "cuda": _probe_cuda, "triton": _probe_triton,
    "native": _probe_native, "onnx": _probe_onnx, "torch": _probe_torch,
}


def _why(name: str) -> Optional[str]:
    """None when ``name`` runs here, else the reason and the command that fixes it."""
    probe = _PROBES[name]()
    if probe is None:
        return None
    reason, fix = probe
    return f"{reason}; fix: {fix or BACKENDS[name].install}"


def _onnx_uses_gpu() -> bool:
    """True when an ONNX engine would run on ONNX Runtime's CUDA provider here."""
    if not (_ext.cuda_available() and _ext.has("onnxruntime")):
        return False
    from .onnx_backend import CUDA, default_providers

    return CUDA in default_providers()


def hardware_class(name: str) -> str:
    """Where backend ``name`` runs on this machine: "gpu" or "cpu" (``torch`` runs on the GPU
    when torch sees one, ``onnx`` when its CUDA provider would be used)."""
    info = _check_name(name)
    if info.gpu:
        return "gpu"
    if name == "torch":
        return "gpu" if _ext.cuda_available() else "cpu"
    if name == "onnx":
        return "gpu" if _onnx_uses_gpu() else "cpu"
    return "cpu"


def unverified_reason(name: str) -> Optional[str]:
    """None when backend ``name`` is verified on the hardware class it would run on here
    (``VERIFIED``), else why ``auto`` passes over it (it still loads when named)."""
    hw = hardware_class(name)
    if hw in VERIFIED.get(name, {}):
        return None
    return (f"not verified on {hw} yet (no {hw} run has passed its tests; see "
            f"registry.VERIFIED), so 'auto' does not pick it; name it to use it: "
            f"backend={name!r}")


def preference_order() -> Tuple[str, ...]:
    """The order ``auto`` walks on this machine."""
    return PREFERENCE_GPU if _ext.cuda_available() else PREFERENCE_CPU


def available_backends() -> List[str]:
    """Backends that can run here, fastest first (verified or not)."""
    order = preference_order()
    order += tuple(n for n in PREFERENCE_GPU if n not in order)
    return [n for n in order if _PROBES[n]() is None]


def _check_name(name: str) -> BackendInfo:
    if name not in BACKENDS:
        raise UnknownBackendError(f"unknown backend {name!r}; valid backends: "
                                  f"{', '.join(PREFERENCE_GPU)} (or 'auto')")
    return BACKENDS[name]


def get_backend(name: str) -> BackendInfo:
    """The description of backend ``name``, checked to be usable here.

    Raises:
        UnknownBackendError: ``name`` is not a backend (the message lists the valid ones).
        BackendUnavailableError: it cannot run here (the message says why and what to run).
    """
    info = _check_name(name)
    reason = _why(name)
    if reason:
        raise BackendUnavailableError(f"backend {name!r} is unavailable: {reason}. "
                                      f"Available here: {', '.join(available_backends())}")
    return info


def _able(fmt) -> List[str]:
    """Backends that can run a ``fmt`` payload, fastest first."""
    return [n for n in PREFERENCE_GPU if fmt in BACKENDS[n].payload_formats]


def _accepts(info: BackendInfo, header: Mapping) -> Optional[str]:
    """None when ``info`` can run the engine described by ``header``, else why not."""
    fmt = header.get("payload_format")
    if fmt not in info.payload_formats:
        why = (f"its {fmt} payload (built for {header.get('backend')!r}) runs on "
               f"{', '.join(_able(fmt))} only")
        if info.build_payload:
            why += f"; rebuild it with `mmengine build CHECKPOINT --backend {info.name}`"
        return why
    cell = (header.get("model") or {}).get("cell", "lstm")
    if info.name in ("native", "cuda", "triton") and cell != "lstm":
        return f"its kernels run LSTM cells only, this model uses {cell!r}"
    return None


def select_backend(header: Mapping, requested: str = "auto") -> str:
    """Resolve ``requested`` (a name or ``"auto"``) for an engine with ``header``.

    Raises:
        UnknownBackendError, BackendUnavailableError: as ``get_backend``; also when the file's
            payload cannot run on the requested backend, or (auto) on any backend here.
    """
    built_for = header.get("backend")
    if requested != "auto":
        info = _check_name(requested)
        why = _accepts(info, header)
        if why:
            raise BackendUnavailableError(f"backend {requested!r} cannot run this engine: {why}")
        get_backend(requested)
        log.info("engine backend: %s (requested; file built for %s)", requested, built_for)
        return requested

    order = preference_order()
    fmt = header.get("payload_format")
    able = _able(fmt)
    skipped: List[str] = []
    unverified: List[str] = []  # could run the file here, but not verified on this hardware
    for name in order:
        if name not in able:
            continue
        why = _accepts(BACKENDS[name], header) or _why(name)
        if why is None:
            why = unverified_reason(name)
            if why is None:
                break
            unverified.append(name)
        skipped.append(f"{name}: {why}")
    else:
        skipped += [f"{n}: {_why(n) or 'not used without a GPU'}" for n in able if n not in order]
        raise BackendUnavailableError(
            f"no backend here can run this engine: its {fmt} payload (built for {built_for!r}) "
            f"runs on {', '.join(able)} only:\n  " + "\n  ".join(skipped)
            + f"\nRebuild it for a backend available here ({', '.join(available_backends())})"
            " with `mmengine build CHECKPOINT --backend NAME`")
    log.info("engine backend: %s (auto, order %s; file built for %s)", name,
             " > ".join(order), built_for)
    if unverified:
        log.info("auto passed over %s: not verified on this hardware (registry.VERIFIED); "
                 "name one with backend= to use it", ", ".join(unverified))
    reason = None
    if built_for != name and built_for in BACKENDS:
        reason = (_accepts(BACKENDS[built_for], header) or _why(built_for)
                  or unverified_reason(built_for))
    if reason:
        log.warning("engine built for %r runs on %r instead, from the same weights: %s",
                    built_for, name, reason)
    return name
