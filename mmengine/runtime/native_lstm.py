"""The native CPU LSTM stack: packs weights for the C++ kernels of ``mmengine._C`` and runs them.

The whole LSTM stack runs in C++ (csrc/lstm/): per layer one GEMM for the input projection of
all time steps, then per step a fused recurrent cell over weights packed once, here. ISA
(scalar / AVX2 / AVX-512 / AVX512-BF16) is chosen at run time by the extension
(``mmengine._C.selected_isa()``, ``set_isa`` to force one).

Packed layout (one dict of numpy arrays, storable in safetensors; see csrc/lstm/lstm.h):
    ``meta``            int64 [format version, num_layers, input_size, hidden_size, dtype code]
    ``l{k}.w_ih``       fp32 (nb, K_in, 64) or bf16 bits as uint16 (nb, K_in/2, 64, 2)
    ``l{k}.w_hh``       fp32 (nb, Hp, 64)   or uint16 (nb, Hp/2, 64, 2)
    ``l{k}.bias``       fp32 (nb, 64) = b_ih + b_hh
with Hp = 16 * nb >= H, unit block j = units 16j..16j+15, gate column c = 16 * gate + unit
(gates i, f, g, o), K_in = input_size for layer 0 and Hp for later layers (rounded up to even
for bf16; padding is zero). bf16 pairs hold (k even, k odd) of the same column.

Example:
    >>> lstm = torch.nn.LSTM(148, 128, 2, batch_first=True)
    >>> net = NativeLSTM(layers_from_torch(lstm), dtype="bf16")
    >>> y, h_n, c_n = net.forward(np.zeros((1, 646, 148), np.float32))   # y (1, 128)
"""
from __future__ import annotations

from typing import Dict, Optional, Sequence, Tuple

import numpy as np

from .._ext import require_native_extension

FORMAT_VERSION = 1
DTYPES = {"fp32": 0, "bf16": 1}
UNIT_BLOCK = 16


def _f64(a) -> np.ndarray:
    """numpy float64 copy of an array or a CPU torch tensor."""
    if hasattr(a, "detach"):
        a = a.detach().cpu().double().numpy()
    return np.asarray(a, dtype=np.float64)


def bf16_bits(x: np.ndarray) -> np.ndarray:
    """float32 -> bfloat16 bit patterns (uint16), round to nearest even (as torch)."""
    b = np.ascontiguousarray(x, dtype=np.float32).view(np.uint32).astype(np.uint64)
    b = (b + 0x7FFF + ((b >> 16) & 1)) >> 16
    return b.astype(np.uint16)


def bf16_to_f32(bits: np.ndarray) -> np.ndarray:
    """bfloat16 bit patterns (uint16) -> float32."""
    return (bits.astype(np.uint32) << 16).view(np.float32)


def bf16_round(x: np.ndarray) -> np.ndarray:
    """float32 values rounded to the nearest bfloat16 (returned as float32)."""
    return bf16_to_f32(bf16_bits(x))


def _pack_matrix(w: np.ndarray, hidden: int, k_pad: int, dtype: str) -> np.ndarray:
    """(4H, K) gate-major weights -> packed (nb, K_pad, 64) fp32 or (nb, K_pad/2, 64, 2) uint16."""
    nb = -(-hidden // UNIT_BLOCK)
    k = w.shape[1]
    full = np.zeros((4, nb * UNIT_BLOCK, k_pad), np.float32)
    full[:, :hidden, :k] = w.reshape(4, hidden, k)
    # (gate, block, unit, k) -> (block, k, gate, unit) -> (block, k, 64)
    packed = full.reshape(4, nb, UNIT_BLOCK, k_pad).transpose(1, 3, 0, 2).reshape(nb, k_pad, 64)
    if dtype == "fp32":
        return np.ascontiguousarray(packed)
    pairs = packed.reshape(nb, k_pad // 2, 2, 64).transpose(0, 1, 3, 2)
    return np.ascontiguousarray(bf16_bits(np.ascontiguousarray(pairs)))


def _unpack_matrix(p: np.ndarray, hidden: int, k: int) -> np.ndarray:
    """Inverse of ``_pack_matrix``: packed -> (4H, K) float32."""
    if p.dtype == np.uint16:
        nb, k2 = p.shape[:2]
        p = bf16_to_f32(p).transpose(0, 1, 3, 2).reshape(nb, 2 * k2, 64)
    nb, k_pad, _ = p.shape
    full = p.reshape(nb, k_pad, 4, UNIT_BLOCK).transpose(2, 0, 3, 1).reshape(4, nb * UNIT_BLOCK, k_pad)
    return np.ascontiguousarray(full[:, :hidden, :k].reshape(4 * hidden, k))


def pack_lstm(layers: Sequence[Tuple], dtype: str = "fp32") -> Dict[str, np.ndarray]:
    """Pack a unidirectional LSTM stack for the native kernels.

    Args:
        layers: per layer (w_ih (4H, D_l), w_hh (4H, H), b_ih (4H,), b_hh (4H,)) as numpy
            arrays or torch tensors (``mmengine.models.reference.layers_from_torch``).
        dtype: "fp32" or "bf16" weight storage (accumulation is always fp32).
    Returns:
        dict of contiguous numpy arrays (see the module docstring for names and shapes).
    """
    if dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {sorted(DTYPES)}, got {dtype!r}")
    if not layers:
        raise ValueError("need at least one layer")
    hidden = _f64(layers[0][1]).shape[1]
    input_size = _f64(layers[0][0]).shape[1]
    nb = -(-hidden // UNIT_BLOCK)
    hp = nb * UNIT_BLOCK
    out: Dict[str, np.ndarray] = {
        "meta": np.array([FORMAT_VERSION, len(layers), input_size, hidden, DTYPES[dtype]], np.int64)
    }
    for k, (w_ih, w_hh, b_ih, b_hh) in enumerate(layers):
        w_ih, w_hh = _f64(w_ih), _f64(w_hh)
        d = input_size if k == 0 else hidden
        if w_ih.shape != (4 * hidden, d) or w_hh.shape != (4 * hidden, hidden):
            raise ValueError(
                f"layer {k}: expected w_ih (4H, {d}) and w_hh (4H, {hidden}) with H={hidden}, "
                f"got {w_ih.shape} and {w_hh.shape}"
            )
        k_in = d if k == 0 else hp
        if dtype == "bf16":
            k_in += k_in % 2
        out[f"l{k}.w_ih"] = _pack_matrix(w_ih.astype(np.float32), hidden, k_in, dtype)
        out[f"l{k}.w_hh"] = _pack_matrix(w_hh.astype(np.float32), hidden, hp, dtype)
        bias = np.zeros((4, hp), np.float64)
        bias[:, :hidden] = (_f64(b_ih) + _f64(b_hh)).reshape(4, hidden)
        out[f"l{k}.bias"] = np.ascontiguousarray(
            bias.reshape(4, nb, UNIT_BLOCK).transpose(1, 0, 2).reshape(nb, 64).astype(np.float32)
        )
    return out


def _meta(arrays: Dict[str, np.ndarray]) -> Tuple[int, int, int, str]:
    meta = np.asarray(arrays["meta"]).tolist()
    if len(meta) != 5 or meta[0] != FORMAT_VERSION:
        raise ValueError(f"packed LSTM format {meta[:1]} is not version {FORMAT_VERSION}")
    names = {v: k for k, v in DTYPES.items()}
    if meta[4] not in names:
        raise ValueError(f"unknown packed dtype code {meta[4]}")
    return int(meta[1]), int(meta[2]), int(meta[3]), names[meta[4]]


def unpack_lstm(arrays: Dict[str, np.ndarray]) -> list:
    """Inverse of ``pack_lstm``: per layer (w_ih, w_hh, bias) float32, bias = b_ih + b_hh
    (bf16 weights come back as their bf16 values)."""
    num_layers, input_size, hidden, _ = _meta(arrays)
    layers = []
    for k in range(num_layers):
        d = input_size if k == 0 else hidden
        bias = arrays[f"l{k}.bias"].reshape(-1, 4, UNIT_BLOCK).transpose(1, 0, 2).reshape(4, -1)
        layers.append(
            (
                _unpack_matrix(arrays[f"l{k}.w_ih"], hidden, d),
                _unpack_matrix(arrays[f"l{k}.w_hh"], hidden, hidden),
                np.ascontiguousarray(bias[:, :hidden].reshape(-1)),
            )
        )
    return layers


class NativeLSTM:
    """A packed LSTM stack run by the C++ kernels (zero initial states, batch_first).

    ``NativeLSTM(layers, dtype="fp32")`` packs torch/numpy layer weights;
    ``NativeLSTM.from_packed(arrays)`` takes the output of ``pack_lstm`` (e.g. read back from
    an engine file). One forward at a time per object (its work buffers are reused).
    """

    def __init__(self, layers: Optional[Sequence[Tuple]] = None, dtype: str = "fp32", *, _packed=None):
        arrays = _packed if _packed is not None else pack_lstm(layers, dtype)
        num_layers, input_size, hidden, dt = _meta(arrays)
        self.num_layers, self.input_size, self.hidden_size, self.dtype = num_layers, input_size, hidden, dt
        self._impl = require_native_extension().LSTM(
            num_layers,
            input_size,
            hidden,
            dt,
            [arrays[f"l{k}.w_ih"] for k in range(num_layers)],
            [arrays[f"l{k}.w_hh"] for k in range(num_layers)],
            [arrays[f"l{k}.bias"] for k in range(num_layers)],
        )

    @classmethod
    def from_packed(cls, arrays: Dict[str, np.ndarray]) -> "NativeLSTM":
        """Build from the dict returned by ``pack_lstm``."""
        return cls(_packed=arrays)

    def reserve(self, batch: int, steps: int, num_threads: Optional[int] = 0) -> None:
        """Allocate (and touch) the work buffers for inputs up to (batch, steps) now."""
        self._impl.reserve(batch, steps, int(num_threads or 0))

    def forward(
        self, x: np.ndarray, *, return_sequence: bool = False, num_threads: Optional[int] = 0
    ) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Run the stack.

        Args:
            x: (B, T, D) float32 inputs.
            return_sequence: return the top layer's outputs of every step instead of the last.
            num_threads: threads to use (0 or None: the OpenMP default).
        Returns:
            y: (B, H) top-layer hidden state after the last step, or (B, T, H) with
               ``return_sequence``; h_n, c_n: (L, B, H) final states of every layer.
        """
        x = np.ascontiguousarray(x, dtype=np.float32)
        if x.ndim != 3 or x.shape[2] != self.input_size:
            raise ValueError(f"x must be (batch, steps, {self.input_size}), got {x.shape}")
        y, h_n, c_n = self._impl.forward(x, return_sequence, int(num_threads or 0))
        if not return_sequence:
            y = h_n[-1].copy()
        return y, h_n, c_n

    __call__ = forward
