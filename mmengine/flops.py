"""FLOP counts of the recurrent stack and of the whole fusion model: ONE formula for every
benchmark (``mmengine bench``, ``bench/run_peers.py``, ``bench/bench_native_lstm.py``,
``bench/bench_gpu_lstm.py``), torch-free.

Recurrence (``recurrent_flops``): per sequence of ``T`` steps, over the layers ``l``,

    FLOPs = Σ_l 2 · G · H · (D_l + H) · T        (D_0 = input size, D_l = H for l > 0)

with ``G`` gates per cell (LSTM 4, GRU 3, plain RNN 1): the input GEMM (G·H x D_l) and the
recurrent GEMM (G·H x H) of every step, one multiply and one add per weight. Biases, the gate
nonlinearities and the cell update are not counted (O(G·H·T), under 1 % here).

The sizes come from the engine header's model description (``export.model_spec``: what
``Engine.header["model"]`` holds) without building the model (``recurrent_shape``,
``recurrent_steps``), so a benchmark of a native or ONNX engine needs no torch for them.

Whole model (``model_flops``): the same kind of count (2 per multiply-add of a weight) for
every convolution and linear layer between the front end's arrays and the logits: each
time-series stem's convolutions at the input frame rate (dilated design: the kernel-3 input
convolution and one kernel-3 convolution per dilation; strided design: its stride-2 stages),
the text projection (once per clip), the recurrence above at the pooled frame rate, the
key-template scores of the notes and of the chroma (``pitch_templates`` and
``audio_pitch_templates``, x 12 each), the audio meter head's template scores
(``audio_meter_templates`` x 2 rows x width x shifts) and the head. Not counted:
normalisation, BatchNorm, activations, residual adds, spectral flux, the chroma profile, the
audio meter profile (its lagged sums: about 1.2 M multiply-adds per 30 s clip, 71 lags x 13
rows x 1,292 frames), the pooling, and the front end (log-Mel / MFCC / chroma) itself.
"""
from __future__ import annotations

from typing import Dict, Mapping

from .config import AUDIO_METER_SHIFTS, AUDIO_METER_WIDTH

#: gates per recurrent cell (``ModelConfig.cell``); "none" has no recurrence
GATES = {"lstm": 4, "gru": 3, "rnn": 1, "none": 0}


def recurrent_flops(input_size: int, hidden: int, layers: int, steps: int,
                    cell: str = "lstm") -> float:
    """FLOPs of one sequence through a ``layers``-layer unidirectional ``cell`` stack
    (input ``input_size``, hidden ``hidden``, ``steps`` time steps): Σ_l 2·G·H·(D_l + H)·T
    (see the module docstring). Multiply by the batch for a call."""
    if cell not in GATES:
        raise ValueError(f"cell must be one of {tuple(GATES)}, got {cell!r}")
    g, h = GATES[cell], int(hidden)
    total, d = 0.0, int(input_size)
    for _ in range(int(layers)):
        total += 2.0 * g * h * (d + h) * int(steps)
        d = h
    return total


def _arch(spec: Mapping) -> dict:
    """Sizes of the fusion model described by ``spec`` (``export.model_spec``), torch-free."""
    from .spec import METER_START, PITCH_CLASS_ROWS, architecture

    if spec.get("arch", "fusion") != "fusion":
        raise ValueError(f"FLOPs are defined for the fusion model, not {spec.get('arch')!r}")
    a = architecture(spec)
    cfg = a["cfg"]
    width = dict(a["width"], text=int(cfg.text_dim))
    # model_spec stores fused_dim; older descriptions are computed as FusionLSTM does
    fused = int(spec.get("fused_dim") or sum(width[m] + 1 for m in a["sequence"]))
    a.update(width=width, fused=fused, meter_start=METER_START, pitch_rows=PITCH_CLASS_ROWS)
    return a


def recurrent_shape(spec: Mapping) -> dict:
    """``{"cell", "input_size", "hidden", "layers"}`` of the recurrence of the model that
    ``spec`` (an engine header's ``"model"``) describes, without torch."""
    a = _arch(spec)
    cfg = a["cfg"]
    return {"cell": str(cfg.cell), "input_size": a["fused"], "hidden": int(cfg.hidden_size),
            "layers": int(cfg.num_layers)}


def recurrent_steps(spec: Mapping, frames: int) -> int:
    """Steps of the recurrence for ``frames`` input frames (``FusionLSTM.out_frames``): the
    dilated design average-pools by ``pool_stride`` (ceil), the strided one halves per stage
    (ceil)."""
    cfg = _arch(spec)["cfg"]
    if cfg.stem == "dilated":
        return -(-int(frames) // int(cfg.pool_stride))
    n = int(frames)
    for _ in range(int(cfg.stem_stages)):
        n = (n + 1) // 2
    return n


def model_recurrent_flops(spec: Mapping, frames: int) -> float:
    """``recurrent_flops`` of the model ``spec`` describes, for one sequence of ``frames``
    input frames (the recurrence runs ``recurrent_steps(spec, frames)`` steps)."""
    s = recurrent_shape(spec)
    return recurrent_flops(s["input_size"], s["hidden"], s["layers"],
                           recurrent_steps(spec, frames), s["cell"])


def model_flops(spec: Mapping, frames: int) -> Dict[str, float]:
    """FLOPs of one window of ``frames`` input frames through the whole model ``spec``
    describes, by part: ``stems`` (the time-series stems' convolutions and the text
    projection), ``recurrence`` (``model_recurrent_flops``), ``head`` (key templates and the
    linear head) and ``total``. What is and is not counted: the module docstring."""
    a = _arch(spec)
    cfg, sizes, width = a["cfg"], a["sizes"], a["width"]
    T = int(frames)
    stems = 0.0
    for m in a["modalities"]:
        if m == "text":
            stems += 2.0 * sizes["text"] * width["text"]
            continue
        cin = (a["meter_start"] if (m == "symbolic" and a["meter_rows"]) else sizes[m]) + \
            (a["flux"] if (m == "mel" and cfg.stem == "dilated") else 0)
        w = width[m]
        if cfg.stem == "dilated":
            stems += 2.0 * 3 * w * (cin + w * len(cfg.dilations)) * T
        elif int(cfg.stem_stages) == 0:
            stems += 2.0 * cin * w * T
        else:
            n = T
            for s in range(int(cfg.stem_stages)):
                n = (n + 1) // 2
                stems += 2.0 * (5 if s == 0 else 3) * (cin if s == 0 else w) * w * n
    rec = model_recurrent_flops(spec, T)
    pooled = (a["fused"] if cfg.cell == "none" else int(cfg.hidden_size)) * \
        (2 if cfg.pooling == "meanmax" else 1)
    pitch = a["pitch"] if cfg.stem == "dilated" else 0  # FusionLSTM: key head with dilated only
    late = (int(cfg.text_dim) + 1 if a["late_text"] else 0) + pitch + a["meter_rows"] + \
        a["audio_pitch"] + a["audio_meter_dim"]
    head = 2.0 * (pooled + late) * a["n_classes"] + \
        2.0 * (pitch + a["audio_pitch"]) * a["pitch_rows"] + \
        2.0 * a["audio_meter"] * 2 * AUDIO_METER_WIDTH * AUDIO_METER_SHIFTS
    return {"stems": stems, "recurrence": rec, "head": head, "total": stems + rec + head}
