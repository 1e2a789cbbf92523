"""Reference LSTM: plain PyTorch, float64-capable, readable. Every fast LSTM path (C++,
CUDA, Triton, ONNX Runtime, TensorRT) is tested against these functions.

Conventions (same as ``torch.nn.LSTM``, ``batch_first=True``):
    gate order i, f, g, o in the 4H dimension;
    i = σ(x W_iiᵀ + b_ii + h W_hiᵀ + b_hi), f likewise, g = tanh(...), o = σ(...)
    c' = f * c + i * g;  h' = o * tanh(c')
"""
from __future__ import annotations

from typing import List, Optional, Sequence, Tuple

import torch

LayerWeights = Tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]


def lstm_cell_ref(
    gates_x: torch.Tensor, h: torch.Tensor, c: torch.Tensor, w_hh: torch.Tensor, b_hh: torch.Tensor
) -> Tuple[torch.Tensor, torch.Tensor]:
    """One step. ``gates_x`` (B, 4H) is the input projection x W_ihᵀ + b_ih; h, c (B, H);
    w_hh (4H, H); b_hh (4H,). Returns (h', c'), each (B, H)."""
    gates = gates_x + h @ w_hh.T + b_hh
    i, f, g, o = gates.chunk(4, dim=-1)
    c_new = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
    h_new = torch.sigmoid(o) * torch.tanh(c_new)
    return h_new, c_new


def lstm_layer_ref(
    x: torch.Tensor,
    w_ih: torch.Tensor,
    w_hh: torch.Tensor,
    b_ih: torch.Tensor,
    b_hh: torch.Tensor,
    h0: Optional[torch.Tensor] = None,
    c0: Optional[torch.Tensor] = None,
) -> Tuple[torch.Tensor, Tuple[torch.Tensor, torch.Tensor]]:
    """One LSTM layer over a sequence.

    Args:
        x: (B, T, D) inputs.
        w_ih: (4H, D); w_hh: (4H, H); b_ih, b_hh: (4H,).
        h0, c0: (B, H) initial states (zeros when None).
    Returns:
        y (B, T, H) hidden states of every step, and (h_T, c_T) each (B, H).
    """
    B, T, _ = x.shape
    H = w_hh.shape[1]
    h = x.new_zeros(B, H) if h0 is None else h0
    c = x.new_zeros(B, H) if c0 is None else c0
    gx = x @ w_ih.T + b_ih  # (B, T, 4H): the input projection of all steps in one GEMM
    ys: List[torch.Tensor] = []
    for t in range(T):
        h, c = lstm_cell_ref(gx[:, t], h, c, w_hh, b_hh)
        ys.append(h)
    y = torch.stack(ys, dim=1) if ys else x.new_zeros(B, 0, H)
    return y, (h, c)


def lstm_stack_ref(
    x: torch.Tensor, layers: Sequence[LayerWeights]
) -> Tuple[torch.Tensor, Tuple[torch.Tensor, torch.Tensor]]:
    """Stacked LSTM (zero initial states). ``layers`` is a list of (w_ih, w_hh, b_ih, b_hh).
    Returns the last layer's outputs (B, T, H) and final states stacked (L, B, H)."""
    hs, cs = [], []
    for w_ih, w_hh, b_ih, b_hh in layers:
        x, (h, c) = lstm_layer_ref(x, w_ih, w_hh, b_ih, b_hh)
        hs.append(h)
        cs.append(c)
    return x, (torch.stack(hs), torch.stack(cs))


def layers_from_torch(lstm: torch.nn.LSTM) -> List[LayerWeights]:
    """Extract per-layer (w_ih, w_hh, b_ih, b_hh) from a unidirectional ``nn.LSTM``."""
    if lstm.bidirectional or lstm.proj_size:
        raise ValueError("only unidirectional LSTMs without projection are supported")
    return [
        (
            getattr(lstm, f"weight_ih_l{k}").detach(),
            getattr(lstm, f"weight_hh_l{k}").detach(),
            getattr(lstm, f"bias_ih_l{k}").detach(),
            getattr(lstm, f"bias_hh_l{k}").detach(),
        )
        for k in range(lstm.num_layers)
    ]


def tolerance(ref64: torch.Tensor, torch_out: torch.Tensor, dtype: torch.dtype) -> float:
    """STYLE.md rule: twice PyTorch's own error in ``dtype`` against float64, plus a floor
    (fp32 1e-4, bf16/fp16 5e-2)."""
    floor = 1e-4 if dtype == torch.float32 else 5e-2
    err = (torch_out.double() - ref64.double()).abs().max().item() if ref64.numel() else 0.0
    return 2.0 * err + floor
