"""Persistent LSTM sequence kernel in Triton: one launch runs all T steps of a layer; plus its
launchers ``lstm_sequence`` (one layer) and ``lstm_stack_triton`` (stacked layers, input GEMM in
torch/cuBLAS, recurrence here). Reference: ``mmengine.models.reference.lstm_layer_ref``.

Work split: program (pid_h, pid_g) owns hidden units [pid_h·BLOCK_H, +BLOCK_H) and the batch
tiles pid_g, pid_g + G, pid_g + 2G, … (G = grid size along axis 1). It loads its slice of W_hh
(4 gates × H × BLOCK_H) once, before the time loop, and keeps it in registers for all T steps.
The cell states c of its units live in ``c_T`` (only their owner reads or writes them); the
hidden states h_t of step t are written into ``y[:, t]`` and read back, all H of them, by
every program of the same pid_g at step t + 1.

Step synchronisation (GRID_SYNC): after step t, each program crosses a barrier with the other
programs of its pid_g: a CTA barrier (so the whole program's stores precede the next
instruction), an atomic add with release semantics on a per-group counter, a spin on an
acquire read of that counter until all n_h programs have arrived, a CTA barrier; the counter
only grows (target n_h·(steps done)), so it needs no reset within a launch, and the next
step's h is read with ``.cg`` loads (L2, never a stale L1 line).
Correctness of a spin barrier needs every program of a group resident at once. The launcher
guarantees it on a GPU: the grid never exceeds the number of SMs (one program per SM always
fits: a program is one CTA), and the launch is cooperative (``launch_cooperative_grid``), so the
driver refuses a grid that cannot be co-resident instead of letting it deadlock.
Triton's interpreter runs programs one after another, so a barrier across programs would wait
forever there: under the interpreter a persistent launch is only possible with one program per
group (BLOCK_H ≥ H); otherwise the same kernel runs one step per launch ("stepwise"), the
kernel boundary being the barrier.
"""
from __future__ import annotations

import functools
from typing import Optional, Sequence, Tuple

import torch

from mmengine._ext import require

triton = require("triton")  # OptionalDependencyError with the install command when missing
import triton.language as tl  # noqa: E402

from .lstm_cell import INTERPRETED, WEIGHT_DTYPES, load_gate_weights, matmul_acc, sigmoid, tanh

SCHEDULES = ("auto", "persistent", "stepwise")


@triton.jit
def lstm_seq_kernel(
    # pointers
    gx_ptr, w_ptr, b_ptr, h0_ptr, c0_ptr, y_ptr, hT_ptr, cT_ptr, sync_ptr,
    # sizes
    B, T, H, t_begin, t_end,
    # strides
    stride_gx_b, stride_gx_t, stride_w_r, stride_w_k, stride_h0_b, stride_c0_b,
    stride_y_b, stride_y_t, stride_hT_b, stride_cT_b,
    # meta-parameters
    HAS_BIAS: tl.constexpr, HAS_H0: tl.constexpr, HAS_C0: tl.constexpr,
    GRID_SYNC: tl.constexpr, USE_DOT: tl.constexpr, WIDEN_DOT: tl.constexpr,
    BLOCK_B: tl.constexpr, BLOCK_H: tl.constexpr, H_PAD: tl.constexpr,
):
    """Steps [t_begin, t_end) of one layer. The last dimension of every tensor has unit stride
    except W_hh's (stride_w_k). H_PAD = H rounded up to a power of two (≥ 16)."""
    pid_h = tl.program_id(0)
    pid_g = tl.program_id(1)
    n_h = tl.num_programs(0)
    n_g = tl.num_programs(1)
    offs_j = pid_h * BLOCK_H + tl.arange(0, BLOCK_H)
    offs_k = tl.arange(0, H_PAD)
    mask_j = offs_j < H
    mask_k = offs_k < H

    # this program's slice of W_hh, resident for every step: 4 × (H_PAD, BLOCK_H)
    w_i = load_gate_weights(w_ptr, 0, H, offs_k, offs_j, mask_k, mask_j, stride_w_r, stride_w_k)
    w_f = load_gate_weights(w_ptr, 1, H, offs_k, offs_j, mask_k, mask_j, stride_w_r, stride_w_k)
    w_g = load_gate_weights(w_ptr, 2, H, offs_k, offs_j, mask_k, mask_j, stride_w_r, stride_w_k)
    w_o = load_gate_weights(w_ptr, 3, H, offs_k, offs_j, mask_k, mask_j, stride_w_r, stride_w_k)
    if HAS_BIAS:
        b_i = tl.load(b_ptr + offs_j, mask=mask_j, other=0.0).to(tl.float32)
        b_f = tl.load(b_ptr + H + offs_j, mask=mask_j, other=0.0).to(tl.float32)
        b_g = tl.load(b_ptr + 2 * H + offs_j, mask=mask_j, other=0.0).to(tl.float32)
        b_o = tl.load(b_ptr + 3 * H + offs_j, mask=mask_j, other=0.0).to(tl.float32)
    else:
        b_i = tl.zeros((BLOCK_H,), dtype=tl.float32)
        b_f = tl.zeros((BLOCK_H,), dtype=tl.float32)
        b_g = tl.zeros((BLOCK_H,), dtype=tl.float32)
        b_o = tl.zeros((BLOCK_H,), dtype=tl.float32)

    n_tiles = tl.cdiv(B, BLOCK_B)
    for t in range(t_begin, t_end):
        for tile in range(pid_g, n_tiles, n_g):
            offs_b = tile * BLOCK_B + tl.arange(0, BLOCK_B)
            mask_b = offs_b < B
            mask_bk = mask_b[:, None] & mask_k[None, :]
            mask_bj = mask_b[:, None] & mask_j[None, :]
            own = offs_b[:, None] * stride_cT_b + offs_j[None, :]
            if t == 0:
                if HAS_H0:
                    h = tl.load(h0_ptr + offs_b[:, None] * stride_h0_b + offs_k[None, :],
                                mask=mask_bk, other=0.0).to(tl.float32)
                else:
                    h = tl.zeros((BLOCK_B, H_PAD), dtype=tl.float32)
                if HAS_C0:
                    c = tl.load(c0_ptr + offs_b[:, None] * stride_c0_b + offs_j[None, :],
                                mask=mask_bj, other=0.0).to(tl.float32)
                else:
                    c = tl.zeros((BLOCK_B, BLOCK_H), dtype=tl.float32)
            else:
                h_ptrs = y_ptr + offs_b[:, None] * stride_y_b + (t - 1) * stride_y_t + offs_k[None, :]
                h = tl.load(h_ptrs, mask=mask_bk, other=0.0, cache_modifier=".cg")
                c = tl.load(cT_ptr + own, mask=mask_bj, other=0.0)

            gx_row = gx_ptr + offs_b[:, None] * stride_gx_b + t * stride_gx_t + offs_j[None, :]
            a_i = tl.load(gx_row, mask=mask_bj, other=0.0).to(tl.float32) + b_i[None, :]
            a_f = tl.load(gx_row + H, mask=mask_bj, other=0.0).to(tl.float32) + b_f[None, :]
            a_g = tl.load(gx_row + 2 * H, mask=mask_bj, other=0.0).to(tl.float32) + b_g[None, :]
            a_o = tl.load(gx_row + 3 * H, mask=mask_bj, other=0.0).to(tl.float32) + b_o[None, :]
            a_i = matmul_acc(a_i, h, w_i, USE_DOT, WIDEN_DOT)
            a_f = matmul_acc(a_f, h, w_f, USE_DOT, WIDEN_DOT)
            a_g = matmul_acc(a_g, h, w_g, USE_DOT, WIDEN_DOT)
            a_o = matmul_acc(a_o, h, w_o, USE_DOT, WIDEN_DOT)

            c = sigmoid(a_f) * c + sigmoid(a_i) * tanh(a_g)
            h_new = sigmoid(a_o) * tanh(c)
            tl.store(cT_ptr + own, c, mask=mask_bj)
            tl.store(y_ptr + offs_b[:, None] * stride_y_b + t * stride_y_t + offs_j[None, :],
                     h_new, mask=mask_bj)
            if t == T - 1:
                tl.store(hT_ptr + offs_b[:, None] * stride_hT_b + offs_j[None, :], h_new, mask=mask_bj)
        if GRID_SYNC:
            if t + 1 < t_end:
                tl.debug_barrier()
                arrived = tl.atomic_add(sync_ptr + pid_g, 1, sem="release", scope="gpu") + 1
                target = n_h * (t - t_begin + 1)
                while arrived < target:
                    arrived = tl.atomic_add(sync_ptr + pid_g, 0, sem="acquire", scope="gpu")
                tl.debug_barrier()


@functools.lru_cache(maxsize=None)
def _sm_count_of(device_index: int) -> int:
    return torch.cuda.get_device_properties(device_index).multi_processor_count


def _sm_count(device: torch.device) -> int:
    index = device.index if device.index is not None else torch.cuda.current_device()
    return _sm_count_of(index)


def seq_config(B: int, H: int, weight_dtype: torch.dtype) -> dict:
    """Default tiles for (B, H) and the weight dtype.

    The W_hh slice a program keeps (4 × H_PAD × BLOCK_H elements) is bounded by 16 Ki fp32 or
    32 Ki 16-bit elements (64 KiB, 64 registers a thread at 8 warps; 16 warps above 8 Ki fp32 /
    16 Ki 16-bit). With 16-bit weights, batches of 16 rows or more use ``tl.dot`` on 16-row
    tiles (BLOCK_H ≥ 16); otherwise a reduction over batch tiles of at most 8 Ki products per
    gate (see ``matmul_acc``). ptxas (sm_90) reports no spills for these choices at H = 128,
    256, 512 except 24 bytes for bf16 at H = 512, B ≥ 16.
    Untuned on hardware: ``bench/bench_gpu_lstm.py`` is the place to tune these numbers.
    """
    h_pad = max(16, triton.next_power_of_2(max(H, 1)))
    budget = 16384 if weight_dtype == torch.float32 else 32768
    use_dot = B >= 16 and weight_dtype != torch.float32
    block_h = max(1, min(triton.next_power_of_2(max(H, 1)), budget // (4 * h_pad), 16))
    if use_dot:
        block_h = 16
        block_b = 16
    else:
        block_b = max(1, min(triton.next_power_of_2(max(B, 1)), 8192 // (h_pad * block_h)))
    w_elems = 4 * h_pad * block_h
    num_warps = 8 if w_elems * (2 if weight_dtype == torch.float32 else 1) <= 16384 else 16
    return {"block_b": block_b, "block_h": block_h, "use_dot": use_dot, "num_warps": num_warps}


def lstm_sequence(
    gx: torch.Tensor,
    w_hh: torch.Tensor,
    b_hh: Optional[torch.Tensor],
    h0: Optional[torch.Tensor] = None,
    c0: Optional[torch.Tensor] = None,
    *,
    schedule: str = "auto",
    block_b: Optional[int] = None,
    block_h: Optional[int] = None,
    use_dot: Optional[bool] = None,
    num_warps: Optional[int] = None,
    groups: Optional[int] = None,
) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Run one LSTM layer's recurrence over all T steps.

    Args:
        gx: (B, T, 4H) input projection x W_ihᵀ + b_ih of every step (read as fp32).
        w_hh: (4H, H) recurrent weights, fp32 / bf16 / fp16 (fp32 accumulation).
        b_hh: (4H,) recurrent bias, or None.
        h0, c0: (B, H) initial states, or None for zeros.
        schedule: "persistent" (one launch, programs synchronised between steps), "stepwise"
            (one launch per step) or "auto": persistent, except where its programs could not
            all be resident (more than the GPU's SMs; several programs per group under Triton's
            interpreter, see the module docstring), where it is stepwise.
        block_b, block_h, use_dot, num_warps: tile overrides (defaults from ``seq_config``).
        groups: programs along the batch axis (default: as many as fit, see module docstring).
    Returns:
        y (B, T, H) float32 hidden states of every step, h_T (B, H), c_T (B, H) float32.
    """
    if gx.dim() != 3 or gx.shape[2] % 4:
        raise ValueError(f"gx must be (B, T, 4H), got {tuple(gx.shape)}")
    if schedule not in SCHEDULES:
        raise ValueError(f"schedule must be one of {SCHEDULES}, got {schedule!r}")
    B, T, H4 = gx.shape
    H = H4 // 4
    if w_hh.shape != (4 * H, H):
        raise ValueError(f"w_hh must be (4H, H) = ({4 * H}, {H}), got {tuple(w_hh.shape)}")
    if w_hh.dtype not in WEIGHT_DTYPES:
        raise ValueError(f"w_hh dtype must be one of {WEIGHT_DTYPES}, got {w_hh.dtype}")
    if b_hh is not None and b_hh.shape != (4 * H,):
        raise ValueError(f"b_hh must be (4H,) = ({4 * H},), got {tuple(b_hh.shape)}")
    for name, s in (("h0", h0), ("c0", c0)):
        if s is not None and s.shape != (B, H):
            raise ValueError(f"{name} must be (B, H) = ({B}, {H}), got {tuple(s.shape)}")
    for name, s in (("w_hh", w_hh), ("b_hh", b_hh), ("h0", h0), ("c0", c0)):
        if s is not None and s.device != gx.device:
            raise ValueError(f"{name} is on {s.device}, gx on {gx.device}")

    dev = gx.device
    y = torch.empty(B, T, H, device=dev, dtype=torch.float32)
    h_T = torch.zeros(B, H, device=dev, dtype=torch.float32)
    c_T = torch.zeros(B, H, device=dev, dtype=torch.float32)
    if T == 0 or B == 0 or H == 0:
        if h0 is not None:
            h_T.copy_(h0)
        if c0 is not None:
            c_T.copy_(c0)
        return y, h_T, c_T

    cfg = seq_config(B, H, w_hh.dtype)
    block_b = block_b or cfg["block_b"]
    block_h = block_h or cfg["block_h"]
    use_dot = cfg["use_dot"] if use_dot is None else use_dot
    num_warps = num_warps or cfg["num_warps"]
    h_pad = max(16, triton.next_power_of_2(H))
    if use_dot and min(block_b, block_h) < 16:
        raise ValueError("use_dot needs block_b and block_h of at least 16")
    n_h = triton.cdiv(H, block_h)
    n_tiles = triton.cdiv(B, block_b)
    if groups is None:
        groups = n_tiles if INTERPRETED else min(n_tiles, max(1, _sm_count(dev) // n_h))
    groups = max(1, min(groups, n_tiles))
    if schedule == "auto":
        if n_h > 1 and T > 1 and (INTERPRETED or n_h * groups > _sm_count(dev)):
            schedule = "stepwise"
        else:
            schedule = "persistent"
    if schedule == "persistent" and n_h > 1 and T > 1:
        if INTERPRETED:
            raise ValueError(
                f"a persistent launch with {n_h} programs per group would deadlock in Triton's "
                "interpreter (it runs programs one after another): use block_h >= H or "
                "schedule='stepwise'")
        if n_h * groups > _sm_count(dev):
            raise ValueError(f"a persistent grid of {n_h} x {groups} programs exceeds the "
                             f"{_sm_count(dev)} SMs: its programs cannot all be resident")

    gx = gx.contiguous()
    w_hh = w_hh.contiguous()
    b_hh = b_hh.contiguous() if b_hh is not None else None
    h0c = h0.to(torch.float32).contiguous() if h0 is not None else None
    c0c = c0.to(torch.float32).contiguous() if c0 is not None else None
    dummy = gx
    sync = torch.zeros(groups, device=dev, dtype=torch.int32)
    spans = [(0, T)] if schedule == "persistent" else [(t, t + 1) for t in range(T)]
    grid_sync = schedule == "persistent" and n_h > 1 and T > 1
    extra = {"launch_cooperative_grid": True} if grid_sync and not INTERPRETED else {}
    for t_begin, t_end in spans:
        lstm_seq_kernel[(n_h, groups)](
            gx, w_hh, b_hh if b_hh is not None else dummy,
            h0c if h0c is not None else dummy, c0c if c0c is not None else dummy,
            y, h_T, c_T, sync,
            B, T, H, t_begin, t_end,
            gx.stride(0), gx.stride(1), w_hh.stride(0), w_hh.stride(1),
            h0c.stride(0) if h0c is not None else 0, c0c.stride(0) if c0c is not None else 0,
            y.stride(0), y.stride(1), h_T.stride(0), c_T.stride(0),
            HAS_BIAS=b_hh is not None, HAS_H0=h0c is not None, HAS_C0=c0c is not None,
            GRID_SYNC=grid_sync, USE_DOT=use_dot, WIDEN_DOT=INTERPRETED,
            BLOCK_B=block_b, BLOCK_H=block_h, H_PAD=h_pad,
            num_warps=num_warps, **extra,
        )
    return y, h_T, c_T


def lstm_stack_triton(
    x: torch.Tensor,
    layers: Sequence[Tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]],
    dtype: Optional[torch.dtype] = None,
    **config,
) -> Tuple[torch.Tensor, Tuple[torch.Tensor, torch.Tensor]]:
    """Stacked LSTM with zero initial states, like ``lstm_stack_ref``.

    Per layer: the input projection of all T steps in one torch GEMM (cuBLAS on a GPU) in
    ``dtype`` (default: the weights' dtype), then the recurrence in ``lstm_sequence`` with
    W_hh in ``dtype``. Biases and states stay fp32.

    Args:
        x: (B, T, D) inputs.
        layers: per layer (w_ih (4H, D), w_hh (4H, H), b_ih (4H,), b_hh (4H,)).
        dtype: weight dtype, fp32 / bf16 / fp16.
        config: passed to ``lstm_sequence`` (schedule, tiles).
    Returns:
        y (B, T, H) float32 of the last layer, and (h_n, c_n) each (L, B, H) float32.
    """
    if x.dim() != 3:
        raise ValueError(f"x must be (B, T, D), got {tuple(x.shape)}")
    B, T, _ = x.shape
    hs, cs = [], []
    inp = x
    for w_ih, w_hh, b_ih, b_hh in layers:
        wdt = dtype or w_hh.dtype
        H = w_hh.shape[1]
        flat = inp.reshape(B * T, inp.shape[2]).to(wdt)
        gx = (flat @ w_ih.to(wdt).T).to(torch.float32) + b_ih.to(torch.float32)
        inp, h_T, c_T = lstm_sequence(gx.view(B, T, 4 * H), w_hh.to(wdt),
                                      b_hh.to(torch.float32), **config)
        hs.append(h_T)
        cs.append(c_T)
    return inp, (torch.stack(hs), torch.stack(cs))
