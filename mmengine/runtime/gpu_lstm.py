"""GPU LSTM inference: thin wrappers over the Triton kernels (``triton_kernels``) and the CUDA
kernels of the compiled extension (``csrc/cuda``, reached through ``mmengine._C``).

``TritonLSTM(layers, dtype)`` and ``CudaLSTM(layers, dtype)`` hold the stacked weights
(``layers``: per layer (w_ih (4H, D), w_hh (4H, H), b_ih (4H,), b_hh (4H,)), as
``mmengine.models.reference.layers_from_torch`` returns them) pre-cast to ``dtype`` on the GPU;
``forward(x)`` runs the input projection of each layer as one torch GEMM and the recurrence in
one persistent kernel launch. Constructing either without what it needs raises
``BackendUnavailableError`` naming what is missing. Nothing here touches a GPU at import.
"""
from __future__ import annotations

from typing import Optional, Sequence, Tuple

import torch

from .. import _ext
from ..errors import BackendUnavailableError, OptionalDependencyError

LayerWeights = Tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]
WEIGHT_DTYPES = (torch.float32, torch.bfloat16, torch.float16)
CUDA_BUILD_HINT = "MMENGINE_CUDA=1 pip install -e . (needs the CUDA toolkit's nvcc)"


def _dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).replace("torch.", "")


def _no_gpu_reason() -> Optional[str]:
    if _ext.cuda_available():
        return None
    return (f"no CUDA device: torch {torch.__version__} sees no GPU "
            "(torch.cuda.is_available() is False)")


def _cuda_extension():
    """``mmengine._C`` when it was built with the CUDA kernels, else the reason it is unusable."""
    native = _ext.native_extension()
    if native is None:
        return None, f"the extension mmengine._C is not built; build it with: {CUDA_BUILD_HINT}"
    if not hasattr(native, "lstm_sequence_cuda"):
        return None, ("the extension mmengine._C was built without CUDA; rebuild it with: "
                      f"{CUDA_BUILD_HINT}")
    return native, None


def _pack(layers: Sequence[LayerWeights], dtype: torch.dtype, device) -> list:
    if dtype not in WEIGHT_DTYPES:
        raise ValueError(f"dtype must be one of {WEIGHT_DTYPES}, got {dtype}")
    if not layers:
        raise ValueError("layers is empty")
    packed = []
    for k, (w_ih, w_hh, b_ih, b_hh) in enumerate(layers):
        H = w_hh.shape[1]
        if w_hh.shape != (4 * H, H) or w_ih.shape[0] != 4 * H or b_ih.shape != (4 * H,) \
                or b_hh.shape != (4 * H,):
            raise ValueError(f"layer {k}: expected w_ih (4H, D), w_hh (4H, H), b_ih and b_hh "
                             f"(4H,), got {[tuple(t.shape) for t in (w_ih, w_hh, b_ih, b_hh)]}")
        if k and w_ih.shape[1] != layers[k - 1][1].shape[1]:
            raise ValueError(f"layer {k}: input size {w_ih.shape[1]} != previous hidden size")
        packed.append((
            w_ih.detach().to(device=device, dtype=dtype).contiguous(),
            w_hh.detach().to(device=device, dtype=dtype).contiguous(),
            b_ih.detach().to(device=device, dtype=torch.float32).contiguous(),
            b_hh.detach().to(device=device, dtype=torch.float32).contiguous(),
        ))
    return packed


class _GpuLSTM:
    """Shared argument handling of the two wrappers."""

    backend = ""

    def __init__(self, layers: Sequence[LayerWeights], dtype: torch.dtype, device) -> None:
        self.dtype = dtype
        self.device = torch.device(device)
        self.layers = _pack(layers, dtype, self.device)
        self.input_size = self.layers[0][0].shape[1]
        self.hidden_size = self.layers[-1][1].shape[1]

    def _input(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 3 or x.shape[2] != self.input_size:
            raise ValueError(f"x must be (B, T, {self.input_size}), got {tuple(x.shape)}")
        if x.shape[1] == 0:
            raise ValueError("x has no time steps (T = 0): there is no last output")
        return x.to(device=self.device, dtype=torch.float32)

    def _projection(self, inp: torch.Tensor, w_ih: torch.Tensor, b_ih: torch.Tensor):
        B, T, D = inp.shape
        gx = (inp.reshape(B * T, D).to(self.dtype) @ w_ih.T).to(torch.float32) + b_ih
        return gx.view(B, T, -1)

    def __call__(self, x: torch.Tensor):
        return self.forward(x)

    def forward(self, x: torch.Tensor):
        raise NotImplementedError


class TritonLSTM(_GpuLSTM):
    """Stacked LSTM inference with the persistent Triton kernel.

    Needs triton and a CUDA GPU; with ``TRITON_INTERPRET=1`` set before triton is imported it
    runs in Triton's interpreter on the CPU instead (slow; for tests).
    """

    backend = "triton"

    def __init__(self, layers: Sequence[LayerWeights], dtype: torch.dtype = torch.float32,
                 **config) -> None:
        try:
            _ext.require("triton")
        except OptionalDependencyError as exc:
            reasons = [r for r in (str(exc), _no_gpu_reason()) if r]
            raise BackendUnavailableError("TritonLSTM cannot run: " + "; ".join(reasons)) from exc
        from triton_kernels import lstm_seq

        self._kernels = lstm_seq
        if lstm_seq.INTERPRETED:
            device = "cpu"
        else:
            reason = _no_gpu_reason()
            if reason:
                raise BackendUnavailableError(
                    f"TritonLSTM cannot run: {reason}. Use a CPU backend (native, torch, "
                    "onnxruntime), or set TRITON_INTERPRET=1 to run the kernels in Triton's "
                    "interpreter (slow, for tests).")
            device = "cuda"
        self.config = config
        super().__init__(layers, dtype, device)

    def forward(self, x: torch.Tensor):
        """x (B, T, D) -> (y_last (B, H), (h_n (L, B, H), c_n (L, B, H))), float32."""
        inp = self._input(x)
        hs, cs = [], []
        for w_ih, w_hh, b_ih, b_hh in self.layers:
            inp, h_T, c_T = self._kernels.lstm_sequence(
                self._projection(inp, w_ih, b_ih), w_hh, b_hh, **self.config)
            hs.append(h_T)
            cs.append(c_T)
        return inp[:, -1], (torch.stack(hs), torch.stack(cs))


class CudaLSTM(_GpuLSTM):
    """Stacked LSTM inference with the persistent CUDA kernel of ``mmengine._C``."""

    backend = "cuda"

    def __init__(self, layers: Sequence[LayerWeights], dtype: torch.dtype = torch.float32) -> None:
        native, ext_reason = _cuda_extension()
        reasons = [r for r in (_no_gpu_reason(), ext_reason) if r]
        if reasons:
            raise BackendUnavailableError("CudaLSTM cannot run: " + "; ".join(reasons))
        self._native = native
        super().__init__(layers, dtype, "cuda")

    def forward(self, x: torch.Tensor):
        """x (B, T, D) -> (y_last (B, H), (h_n (L, B, H), c_n (L, B, H))), float32."""
        inp = self._input(x)
        hs, cs = [], []
        for w_ih, w_hh, b_ih, b_hh in self.layers:
            inp, h_T, c_T = cuda_lstm_sequence(self._projection(inp, w_ih, b_ih), w_hh, b_hh,
                                               native=self._native)
            hs.append(h_T)
            cs.append(c_T)
        return inp[:, -1], (torch.stack(hs), torch.stack(cs))


def _require_cuda_extension():
    native, reason = _cuda_extension()
    reasons = [r for r in (_no_gpu_reason(), reason) if r]
    if reasons:
        raise BackendUnavailableError("the CUDA LSTM kernels cannot run: " + "; ".join(reasons))
    return native


def _check_cuda(name: str, t: Optional[torch.Tensor], shape, dtype=torch.float32):
    if t is None:
        return
    if t.shape != tuple(shape) or t.dtype != dtype or not t.is_cuda or not t.is_contiguous():
        raise ValueError(f"{name} must be a contiguous {dtype} CUDA tensor of shape "
                         f"{tuple(shape)}, got {t.dtype} {tuple(t.shape)} on {t.device}")


def cuda_lstm_cell(gx, h, c, w_hh, b_hh, *, native=None):
    """One fused step with the CUDA kernel. gx (B, 4H), h, c (B, H) float32; w_hh (4H, H)
    fp32/bf16/fp16; b_hh (4H,) float32 or None; all contiguous on the GPU.
    Returns (h', c'), each (B, H) float32."""
    native = native or _require_cuda_extension()
    B, H = h.shape
    _check_cuda("gx", gx, (B, 4 * H))
    _check_cuda("h", h, (B, H))
    _check_cuda("c", c, (B, H))
    _check_cuda("w_hh", w_hh, (4 * H, H), w_hh.dtype)
    _check_cuda("b_hh", b_hh, (4 * H,))
    h_out = torch.empty_like(h)
    c_out = torch.empty_like(c)
    native.lstm_cell_cuda(gx.data_ptr(), h.data_ptr(), c.data_ptr(), w_hh.data_ptr(),
                          b_hh.data_ptr() if b_hh is not None else 0, h_out.data_ptr(),
                          c_out.data_ptr(), B, H, _dtype_name(w_hh.dtype),
                          torch.cuda.current_stream(gx.device).cuda_stream)
    return h_out, c_out


def cuda_lstm_sequence(gx, w_hh, b_hh, h0=None, c0=None, *, native=None):
    """One layer over T steps with the persistent CUDA kernel. gx (B, T, 4H) float32; w_hh
    (4H, H) fp32/bf16/fp16; b_hh (4H,), h0, c0 (B, H) float32 or None; all contiguous on the
    GPU. Returns y (B, T, H), h_T (B, H), c_T (B, H), float32."""
    native = native or _require_cuda_extension()
    B, T, H4 = gx.shape
    H = H4 // 4
    _check_cuda("gx", gx, (B, T, 4 * H))
    _check_cuda("w_hh", w_hh, (4 * H, H), w_hh.dtype)
    _check_cuda("b_hh", b_hh, (4 * H,))
    _check_cuda("h0", h0, (B, H))
    _check_cuda("c0", c0, (B, H))
    y = torch.empty(B, T, H, device=gx.device, dtype=torch.float32)
    h_T = torch.empty(B, H, device=gx.device, dtype=torch.float32)
    c_T = torch.empty(B, H, device=gx.device, dtype=torch.float32)

    def ptr(t):
        return t.data_ptr() if t is not None else 0

    native.lstm_sequence_cuda(ptr(gx), ptr(w_hh), ptr(b_hh), ptr(h0), ptr(c0), ptr(y), ptr(h_T),
                              ptr(c_T), B, T, H, _dtype_name(w_hh.dtype),
                              torch.cuda.current_stream(gx.device).cuda_stream)
    return y, h_T, c_T
