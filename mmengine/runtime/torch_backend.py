"""The torch backend (reference), and the GPU backends ``cuda`` / ``triton`` that share it.

Payload (``safetensors``): the model's state dict under its own keys; with ``dtype="bf16"``
the recurrent stack and head (``classifier.*``) are stored in bfloat16, everything else
(normalisation statistics, stems, BatchNorm) in float32. A ``native`` payload adds ``native.*``
arrays, which this backend ignores, so it can run a native file from the same weights.

Run: ``model.encode`` in float32 (torch: normalisation, stems, fusion, and the clip-level late
features), then the recurrence in the engine's dtype (``nn.LSTM``, or the GPU kernels of
``mmengine.runtime.gpu_lstm`` for ``cuda``/``triton``), pooling and the linear head over the
pooled vector and the late features.
"""
from __future__ import annotations

import logging
from typing import Callable, Dict, Mapping, Optional, Tuple

import numpy as np
import torch

from ..spec import rebuild_model
from .engine_file import EngineFile

log = logging.getLogger("mmengine.runtime")

WEIGHTS_FORMAT = "mmengine-weights/1"
NATIVE_PREFIX = "native."
TORCH_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def state_tensors(model, dtype: str) -> Dict[str, torch.Tensor]:
    """The state dict to store: contiguous CPU copies, ``classifier.*`` floats in ``dtype``."""
    out = {}
    for k, v in model.state_dict().items():
        v = v.detach().cpu()
        if k.startswith("classifier.") and v.is_floating_point():
            v = v.to(TORCH_DTYPES[dtype])
        out[k] = v.contiguous().clone()
    return out


def serialize(tensors: Mapping[str, torch.Tensor]) -> bytes:
    """safetensors bytes of ``tensors`` (metadata: the weights format)."""
    from safetensors.torch import save

    return save(dict(tensors), metadata={"format": WEIGHTS_FORMAT})


def build(model, header: Mapping, *, dtype: str = "fp32") -> Tuple[bytes, dict]:
    """Payload for ``--backend torch`` (and cuda, triton): (safetensors bytes, backend header
    options)."""
    return serialize(state_tensors(model, dtype)), {}


def parse_weights(ef: EngineFile) -> Tuple[Dict[str, torch.Tensor], Dict[str, np.ndarray]]:
    """Split a safetensors payload into (model state dict, ``native.*`` arrays)."""
    from safetensors.torch import load

    from ..errors import EngineFileError

    try:
        tensors = load(ef.payload)
    except Exception as exc:  # safetensors raises its own error type for bad bytes
        raise EngineFileError(ef.path, f"payload is not valid safetensors ({exc})") from exc
    state = {k: v for k, v in tensors.items() if not k.startswith(NATIVE_PREFIX)}
    native = {k[len(NATIVE_PREFIX):]: v.numpy() for k, v in tensors.items()
              if k.startswith(NATIVE_PREFIX)}
    return state, native


def load_model(ef: EngineFile, state: Optional[Mapping[str, torch.Tensor]] = None):
    """The engine's model in eval mode, float32, weights from the payload (or ``state``, the
    payload's state dict when the caller has parsed it already)."""
    from ..errors import EngineFileError

    if state is None:
        state = parse_weights(ef)[0]
    model = rebuild_model(ef.header["model"])
    expected = model.state_dict()
    bad = sorted(set(expected) ^ set(state))
    bad += [k for k in expected if k in state and tuple(state[k].shape) != tuple(expected[k].shape)]
    if bad:
        raise EngineFileError(ef.path, f"weights do not match the model description: {bad[:8]}")
    model.load_state_dict({k: v.float() if v.is_floating_point() else v
                           for k, v in state.items()}, strict=True)
    return model.eval()


def default_device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


class TorchRunner:
    """Runs a ``FusionLSTM`` from numpy inputs to numpy logits.

    Args:
        model: the model (eval mode, float32).
        dtype: recurrent stack and head dtype (``torch.float32`` / ``torch.bfloat16``).
        device: torch device.
        recurrence: optional replacement of ``classifier.rnn``: ``fn(x (B, T', D)) ->
            top-layer outputs (B, T', H)`` (or ``(B, H)`` last state when only the last step
            is needed, see ``needs_sequence``).
        backend: name reported by ``Engine.backend``.
    """

    def __init__(self, model, *, dtype: torch.dtype = torch.float32, device: str = "cpu",
                 recurrence: Optional[Callable] = None, backend: str = "torch"):
        self.backend = backend
        self.device = torch.device(device)
        self.dtype = dtype
        self.model = model.eval().to(self.device)
        self.model.classifier.to(dtype)
        self.recurrence = recurrence

    @property
    def needs_sequence(self) -> bool:
        """True when pooling needs every step's output (``mean``), not just the last."""
        return self.model.classifier.needs_sequence

    #: ``__call__`` takes torch tensors as well as numpy arrays (no host round trip)
    accepts_torch = True

    def __call__(self, inputs: Mapping[str, np.ndarray]) -> np.ndarray:
        """inputs: name -> numpy array or torch tensor (see ``registry.Runner``). Returns
        logits (B, C) float32."""
        clf = self.model.classifier
        with torch.inference_mode():
            # torch tensors (e.g. DALI GPU features handed over by DLPack) stay where they are
            # when already on the runner's device; numpy arrays are copied over
            batch = {k: (v if isinstance(v, torch.Tensor)
                         else torch.from_numpy(np.ascontiguousarray(v))).to(self.device)
                     for k, v in inputs.items()}
            seq, late = self.model.encode(batch)
            x = seq.to(self.dtype)
            if self.recurrence is None:
                pooled = clf.pool(clf.rnn(x)[0])
            else:
                y = self.recurrence(x)
                pooled = y if y.dim() == 2 else clf.pool(y)
            logits = clf.head_logits(pooled.to(self.dtype), late)
        return logits.float().cpu().numpy()


def load(ef: EngineFile, *, backend: str = "torch", device: Optional[str] = None) -> TorchRunner:
    """Runner for a safetensors engine: ``backend`` "torch" (any device), or "cuda"/"triton"
    (GPU LSTM kernels from ``mmengine.runtime.gpu_lstm``)."""
    dtype = TORCH_DTYPES[ef.header["dtype"]]
    model = load_model(ef)
    if backend == "torch":
        return TorchRunner(model, dtype=dtype, device=device or default_device())
    return gpu_runner(model, backend, dtype)


def gpu_runner(model, backend: str, dtype: torch.dtype = torch.float32) -> TorchRunner:
    """A ``TorchRunner`` whose recurrence runs on the GPU kernels of ``backend`` ("cuda" or
    "triton"): the last step for "last" pooling, every step otherwise."""
    from ..models.reference import layers_from_torch
    from . import gpu_lstm

    cls = {"cuda": gpu_lstm.CudaLSTM, "triton": gpu_lstm.TritonLSTM}[backend]
    kernel = cls(layers_from_torch(model.classifier.rnn), dtype=dtype)
    if model.classifier.pooling == "last":
        def recurrence(x: torch.Tensor) -> torch.Tensor:
            return kernel(x)[0]
    else:
        recurrence = _sequence_fn(backend, kernel)
    return TorchRunner(model, dtype=torch.float32, device=str(kernel.device),
                       recurrence=recurrence, backend=backend)


def _sequence_fn(backend: str, kernel) -> Callable:
    """``fn(x (B, T', D)) -> top-layer outputs (B, T', H)`` float32 with the GPU kernels
    (for mean pooling): input projection of each layer as one GEMM, then the one-launch
    sequence kernel (``triton_kernels.lstm_sequence`` / ``gpu_lstm.cuda_lstm_sequence``)."""
    if backend == "triton":
        from triton_kernels import lstm_sequence as sequence
    else:
        from .gpu_lstm import cuda_lstm_sequence as sequence

    def run(x: torch.Tensor) -> torch.Tensor:
        inp = x.to(device=kernel.device, dtype=torch.float32)
        for w_ih, w_hh, b_ih, b_hh in kernel.layers:
            B, T, D = inp.shape
            gx = (inp.reshape(B * T, D).to(kernel.dtype) @ w_ih.T).float() + b_ih
            inp = sequence(gx.view(B, T, -1).contiguous(), w_hh, b_hh)[0]
        return inp

    return run
