"""Fused LSTM cell in Triton: gates = gx + h W_hhᵀ + b_hh, the four nonlinearities and the
state update in one kernel, plus its launcher ``lstm_cell``.

Gate order i, f, g, o (as ``torch.nn.LSTM``); the reference is
``mmengine.models.reference.lstm_cell_ref``. Weights may be fp32, bf16 or fp16; products are
accumulated in fp32 and the states h, c are fp32. Runs under ``TRITON_INTERPRET=1``.

The jit helpers ``sigmoid``, ``tanh``, ``matmul_acc`` and ``load_gate_weights`` are shared with
the persistent sequence kernel in ``lstm_seq.py``.
"""
from __future__ import annotations

from typing import Optional, Tuple

import torch

from mmengine._ext import require

triton = require("triton")  # OptionalDependencyError with the install command when missing
import triton.language as tl  # noqa: E402

#: weight dtypes the kernels accept (products are always accumulated in fp32)
WEIGHT_DTYPES = (torch.float32, torch.bfloat16, torch.float16)


@triton.jit
def sigmoid(x):
    """σ(x) in fp32; exp(-x) overflows to inf for very negative x and σ goes to 0 cleanly."""
    return 1.0 / (1.0 + tl.exp(-x))


@triton.jit
def tanh(x):
    """tanh(x) in fp32 through exp(-2|x|) ≤ 1, so nothing overflows."""
    e = tl.exp(-2.0 * tl.abs(x))
    t = (1.0 - e) / (1.0 + e)
    return tl.where(x < 0.0, -t, t)


@triton.jit
def matmul_acc(acc, h, w, USE_DOT: tl.constexpr, WIDEN_DOT: tl.constexpr):
    """acc (BB, BH) fp32 += h (BB, K) fp32 @ w (K, BH) in w's dtype.

    USE_DOT: ``tl.dot`` on tensor cores, needs BB, K, BH ≥ 16; for bf16/fp16 weights h is
    rounded to their dtype; fp32 weights use "tf32x3" (three TF32 products, about fp32
    accuracy; never plain TF32; "ieee" crashes LLVM's SLP vectorizer for sm_90 in triton 3.9).
    Otherwise a broadcast-multiply and reduction in fp32, h unrounded (for batch tiles below
    16 rows, where a dot would be mostly padding, and for fp32 weights, whose tf32x3 dot
    spills registers at the sizes used here).
    WIDEN_DOT: give the dot fp32 operands holding the same (rounded) values, for Triton's
    interpreter, which multiplies the raw bit patterns of bf16 operands (triton issue #11584).
    """
    if USE_DOT:
        hq = h.to(w.dtype)
        if WIDEN_DOT:
            acc = tl.dot(hq.to(tl.float32), w.to(tl.float32), acc=acc, input_precision="tf32x3")
        else:
            acc = tl.dot(hq, w, acc=acc, input_precision="tf32x3")
    else:
        acc += tl.sum(h[:, :, None] * w.to(tl.float32)[None, :, :], axis=1)
    return acc


@triton.jit
def load_gate_weights(w_ptr, gate, H, offs_k, offs_j, mask_k, mask_j, stride_w_r, stride_w_k):
    """Gate ``gate``'s rows of W_hh for hidden units ``offs_j`` and inputs ``offs_k``, laid out
    (K, BH): element [k, j] = W_hh[gate * H + j, k]; zero outside (mask_k, mask_j)."""
    ptrs = w_ptr + (gate * H + offs_j)[None, :] * stride_w_r + offs_k[:, None] * stride_w_k
    return tl.load(ptrs, mask=mask_k[:, None] & mask_j[None, :], other=0.0)


@triton.jit
def lstm_cell_kernel(
    # pointers
    gx_ptr, h_ptr, c_ptr, w_ptr, b_ptr, h_out_ptr, c_out_ptr,
    # sizes
    B, H,
    # strides
    stride_gx_b, stride_h_b, stride_c_b, stride_w_r, stride_w_k, stride_ho_b, stride_co_b,
    # meta-parameters
    HAS_BIAS: tl.constexpr, USE_DOT: tl.constexpr, WIDEN_DOT: tl.constexpr,
    BLOCK_B: tl.constexpr, BLOCK_H: tl.constexpr, BLOCK_K: tl.constexpr,
):
    """Program (pid_h, pid_b) computes h', c' for hidden units [pid_h·BLOCK_H, +BLOCK_H) of
    batch rows [pid_b·BLOCK_B, +BLOCK_B), looping over the H inputs in BLOCK_K chunks.
    The last dimension of gx, h, c, h_out, c_out has unit stride."""
    pid_h = tl.program_id(0)
    pid_b = tl.program_id(1)
    offs_b = pid_b * BLOCK_B + tl.arange(0, BLOCK_B)
    offs_j = pid_h * BLOCK_H + tl.arange(0, BLOCK_H)
    mask_b = offs_b < B
    mask_j = offs_j < H
    mask_bj = mask_b[:, None] & mask_j[None, :]

    acc_i = tl.zeros((BLOCK_B, BLOCK_H), dtype=tl.float32)
    acc_f = tl.zeros((BLOCK_B, BLOCK_H), dtype=tl.float32)
    acc_g = tl.zeros((BLOCK_B, BLOCK_H), dtype=tl.float32)
    acc_o = tl.zeros((BLOCK_B, BLOCK_H), dtype=tl.float32)
    for k0 in range(0, H, BLOCK_K):
        offs_k = k0 + tl.arange(0, BLOCK_K)
        mask_k = offs_k < H
        h = tl.load(h_ptr + offs_b[:, None] * stride_h_b + offs_k[None, :],
                    mask=mask_b[:, None] & mask_k[None, :], other=0.0).to(tl.float32)
        w = load_gate_weights(w_ptr, 0, H, offs_k, offs_j, mask_k, mask_j, stride_w_r, stride_w_k)
        acc_i = matmul_acc(acc_i, h, w, USE_DOT, WIDEN_DOT)
        w = load_gate_weights(w_ptr, 1, H, offs_k, offs_j, mask_k, mask_j, stride_w_r, stride_w_k)
        acc_f = matmul_acc(acc_f, h, w, USE_DOT, WIDEN_DOT)
        w = load_gate_weights(w_ptr, 2, H, offs_k, offs_j, mask_k, mask_j, stride_w_r, stride_w_k)
        acc_g = matmul_acc(acc_g, h, w, USE_DOT, WIDEN_DOT)
        w = load_gate_weights(w_ptr, 3, H, offs_k, offs_j, mask_k, mask_j, stride_w_r, stride_w_k)
        acc_o = matmul_acc(acc_o, h, w, USE_DOT, WIDEN_DOT)

    gx_row = gx_ptr + offs_b[:, None] * stride_gx_b + offs_j[None, :]
    acc_i += tl.load(gx_row, mask=mask_bj, other=0.0).to(tl.float32)
    acc_f += tl.load(gx_row + H, mask=mask_bj, other=0.0).to(tl.float32)
    acc_g += tl.load(gx_row + 2 * H, mask=mask_bj, other=0.0).to(tl.float32)
    acc_o += tl.load(gx_row + 3 * H, mask=mask_bj, other=0.0).to(tl.float32)
    if HAS_BIAS:
        acc_i += tl.load(b_ptr + offs_j, mask=mask_j, other=0.0).to(tl.float32)[None, :]
        acc_f += tl.load(b_ptr + H + offs_j, mask=mask_j, other=0.0).to(tl.float32)[None, :]
        acc_g += tl.load(b_ptr + 2 * H + offs_j, mask=mask_j, other=0.0).to(tl.float32)[None, :]
        acc_o += tl.load(b_ptr + 3 * H + offs_j, mask=mask_j, other=0.0).to(tl.float32)[None, :]

    c = tl.load(c_ptr + offs_b[:, None] * stride_c_b + offs_j[None, :], mask=mask_bj, other=0.0)
    c_new = sigmoid(acc_f) * c.to(tl.float32) + sigmoid(acc_i) * tanh(acc_g)
    h_new = sigmoid(acc_o) * tanh(c_new)
    tl.store(c_out_ptr + offs_b[:, None] * stride_co_b + offs_j[None, :], c_new, mask=mask_bj)
    tl.store(h_out_ptr + offs_b[:, None] * stride_ho_b + offs_j[None, :], h_new, mask=mask_bj)


def is_interpreted(kernel) -> bool:
    """True when ``kernel`` runs in Triton's interpreter (triton imported with TRITON_INTERPRET=1)."""
    return type(kernel).__name__ == "InterpretedFunction"


#: this process runs kernels in Triton's interpreter (decided when triton was first imported)
INTERPRETED = is_interpreted(lstm_cell_kernel)


def _check_weights(w_hh: torch.Tensor, b_hh: Optional[torch.Tensor], H: int, device) -> None:
    if w_hh.shape != (4 * H, H):
        raise ValueError(f"w_hh must be (4H, H) = ({4 * H}, {H}), got {tuple(w_hh.shape)}")
    if w_hh.dtype not in WEIGHT_DTYPES:
        raise ValueError(f"w_hh dtype must be one of {WEIGHT_DTYPES}, got {w_hh.dtype}")
    if b_hh is not None and b_hh.shape != (4 * H,):
        raise ValueError(f"b_hh must be (4H,) = ({4 * H},), got {tuple(b_hh.shape)}")
    for name, t in (("w_hh", w_hh), ("b_hh", b_hh)):
        if t is not None and t.device != device:
            raise ValueError(f"{name} is on {t.device}, the inputs on {device}")


def cell_config(B: int, H: int, weight_dtype: torch.dtype = torch.float32) -> dict:
    """Default tiles: for 16-bit weights and B ≥ 16 a dot over 16-row batch tiles, else a
    reduction over small batch tiles (see ``matmul_acc``)."""
    use_dot = B >= 16 and weight_dtype != torch.float32
    block_b = 16 if use_dot else min(triton.next_power_of_2(max(B, 1)), 4)
    return {"block_b": block_b, "block_h": 16 if use_dot else 32, "block_k": 32, "use_dot": use_dot}


def lstm_cell(
    gx: torch.Tensor,
    h: torch.Tensor,
    c: torch.Tensor,
    w_hh: torch.Tensor,
    b_hh: Optional[torch.Tensor],
    *,
    block_b: Optional[int] = None,
    block_h: Optional[int] = None,
    block_k: Optional[int] = None,
    use_dot: Optional[bool] = None,
    num_warps: int = 4,
) -> Tuple[torch.Tensor, torch.Tensor]:
    """One fused LSTM step.

    Args:
        gx: (B, 4H) input projection x W_ihᵀ + b_ih (any float dtype; read as fp32).
        h, c: (B, H) previous states.
        w_hh: (4H, H) recurrent weights, fp32 / bf16 / fp16 (fp32 accumulation).
        b_hh: (4H,) recurrent bias, or None.
        block_b, block_h, block_k, use_dot: tile overrides (defaults from ``cell_config``);
            ``use_dot`` needs every block ≥ 16.
    Returns:
        (h', c'), each (B, H) float32.
    """
    B, H = h.shape
    if gx.shape != (B, 4 * H) or c.shape != (B, H):
        raise ValueError(f"expected gx (B, 4H) = ({B}, {4 * H}) and c (B, H) = ({B}, {H}), "
                         f"got {tuple(gx.shape)} and {tuple(c.shape)}")
    _check_weights(w_hh, b_hh, H, gx.device)
    cfg = cell_config(B, H, w_hh.dtype)
    block_b = block_b or cfg["block_b"]
    block_h = block_h or cfg["block_h"]
    block_k = block_k or cfg["block_k"]
    use_dot = cfg["use_dot"] if use_dot is None else use_dot
    if use_dot and min(block_b, block_h, block_k) < 16:
        raise ValueError("use_dot needs block_b, block_h and block_k of at least 16")
    gx, h, c = (t.contiguous() for t in (gx, h, c))
    b_hh = b_hh.contiguous() if b_hh is not None else None
    h_out = torch.empty(B, H, device=gx.device, dtype=torch.float32)
    c_out = torch.empty(B, H, device=gx.device, dtype=torch.float32)
    if B == 0 or H == 0:
        return h_out, c_out
    grid = (triton.cdiv(H, block_h), triton.cdiv(B, block_b))
    lstm_cell_kernel[grid](
        gx, h, c, w_hh, b_hh if b_hh is not None else w_hh, h_out, c_out,
        B, H,
        gx.stride(0), h.stride(0), c.stride(0), w_hh.stride(0), w_hh.stride(1),
        h_out.stride(0), c_out.stride(0),
        HAS_BIAS=b_hh is not None, USE_DOT=use_dot, WIDEN_DOT=INTERPRETED,
        BLOCK_B=block_b, BLOCK_H=block_h, BLOCK_K=block_k,
        num_warps=num_warps,
    )
    return h_out, c_out
