"""A model's description and its ONNX export, below the engine builder and the backends.

``architecture``/``unsupported_reason``/``state_shapes``: the parts and state-dict shapes of
the default design, torch-free (the C++ graph, the FLOP count and the engine-file schema read
them).

``model_spec``/``rebuild_model``: the architecture as JSON and back; ``input_spec`` /
``output_spec``: the engine's io lists; ``example_inputs``: arrays of those shapes;
``export_onnx``: the classifier (normalisation, stems, fusion, recurrence, pooling, head) as
ONNX. ``mmengine.export`` (engine files) and the backends that consume ONNX
(``runtime.onnx_backend``, ``runtime.tensorrt_backend``) both import it from here, so that no
backend imports the engine builder.
"""
from __future__ import annotations

import io
import logging
import warnings
from typing import Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np

from .config import (AUDIO_METER_BINS, AUDIO_METER_WIDTH, INPUT_ORDER, MODALITIES,
                     MODALITY_INPUTS, FrontendConfig, model_config_from_stored, to_dict,
                     uses_chroma)

log = logging.getLogger("mmengine.export")

ONNX_OPSET = 17
OUTPUT_NAME = "logits"
BATCH, FRAMES = "batch", "frames"


# ------------------------------------------------------------------------- model description
def model_spec(model) -> dict:
    """JSON description that ``rebuild_model`` turns back into the same architecture."""
    from .models.fusion import FusionLSTM

    if not isinstance(model, FusionLSTM):
        raise TypeError(f"engines are built from FusionLSTM models, got {type(model).__name__}")
    cfg = model.cfg
    return {"arch": cfg.arch, "config": to_dict(cfg), "dims": dict(model.dims),
            "modalities": list(model.modalities), "cell": cfg.cell, "pooling": cfg.pooling,
            "hidden_size": cfg.hidden_size, "num_layers": cfg.num_layers,
            "stem": cfg.stem, "stem_stages": cfg.stem_stages, "pool_stride": cfg.pool_stride,
            "fused_dim": int(model.fused_dim), "late_dim": int(model.classifier.late_dim)}


def rebuild_model(spec: Mapping):
    """A fresh (untrained) model of the architecture in ``spec`` (see ``model_spec``), in eval
    mode, through ``mmengine.models.build_model``; load weights with ``load_state_dict``."""
    from .models import build_model

    if spec.get("arch") != "fusion":
        raise ValueError(f"unsupported model architecture {spec.get('arch')!r} (engines hold "
                         "fusion models)")
    return build_model(model_config_from_stored(dict(spec["config"])), dict(spec["dims"])).eval()


def input_spec(model, frontend_cfg: FrontendConfig) -> List[dict]:
    """The model's inputs: ``[{"name", "shape", "dtype"}]`` with symbolic ``"batch"`` and
    ``"frames"`` dims, e.g. ``{"name": "mfcc", "shape": ["batch", 20, "frames"],
    "dtype": "float32"}``. A model without any audio modality still gets ``logmel`` (the batch
    and frame count are read from it)."""
    dims = model.dims
    names = [n for m in model.modalities for n in MODALITY_INPUTS[m]]
    if not {"mfcc", "logmel"} & set(names):
        names.append("logmel")
    if getattr(model, "reads_chroma", False):
        names.append("chroma")
    shapes = {"mfcc": [BATCH, dims["n_mfcc"], FRAMES], "logmel": [BATCH, dims["n_mels"], FRAMES],
              "chroma": [BATCH, dims.get("n_chroma", 0), FRAMES],
              "text": [BATCH, dims["text_dim"]], "text_mask": [BATCH],
              "symbolic": [BATCH, dims["symbolic_dim"], FRAMES], "symbolic_mask": [BATCH]}
    if dims["n_mfcc"] != frontend_cfg.n_mfcc or dims["n_mels"] != frontend_cfg.n_mels:
        raise ValueError(f"model expects n_mfcc={dims['n_mfcc']}, n_mels={dims['n_mels']} but "
                         f"the front end gives {frontend_cfg.n_mfcc}, {frontend_cfg.n_mels}")
    return [{"name": n, "shape": shapes[n], "dtype": "bool" if n.endswith("_mask") else "float32"}
            for n in INPUT_ORDER if n in names]


def output_spec(model) -> List[dict]:
    return [{"name": OUTPUT_NAME, "shape": [BATCH, int(model.dims["n_classes"])],
             "dtype": "float32"}]


def example_inputs(inputs: Sequence[Mapping], batch: int, frames: int,
                   rng: Optional[np.random.Generator] = None) -> Dict[str, np.ndarray]:
    """Random arrays matching ``inputs`` (``input_spec``) with the given batch and frames;
    masks are random booleans."""
    rng = rng if rng is not None else np.random.default_rng(0)
    out = {}
    for spec in inputs:
        shape = [batch if d == BATCH else frames if d == FRAMES else int(d) for d in spec["shape"]]
        if spec["dtype"] == "bool":
            out[spec["name"]] = rng.random(shape) < 0.5
        else:
            out[spec["name"]] = rng.standard_normal(shape).astype(np.float32)
    return out


# ----------------------------------------------------------------------------- ONNX export
def classifier_module(model, names: Sequence[str]):
    """A torch module taking the inputs ``names`` positionally and returning logits (B, C):
    ``model(batch)`` in eval mode: encode, recurrence, pooling, late features and head (what
    ONNX traces)."""
    import torch

    class Classifier(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.model = model

        def forward(self, *args):
            batch = dict(zip(names, args))
            return self.model(batch)

    return Classifier().eval()


def export_onnx(model, inputs: Sequence[Mapping], *, opset: int = ONNX_OPSET,
                example_batch: int = 2, example_frames: int = 64) -> bytes:
    """ONNX model of ``encode`` + recurrent stack + pooling + late features + head.

    Uses the TorchScript exporter (``dynamo=False``: the dynamo exporter needs onnxscript),
    which turns ``nn.LSTM`` into one ONNX ``LSTM`` op per layer. Inputs are named as in
    ``inputs`` (``input_spec``), the output ``logits`` (B, C); batch and frames are dynamic.
    Zero initial states are built inside the graph from the batch size (``ConstantOfShape``),
    so no state inputs are needed.

    Returns:
        the serialized ``ModelProto`` (checked with ``onnx.checker`` when onnx is installed).
    """
    import torch

    names = [s["name"] for s in inputs]
    dynamic = {s["name"]: {i: d for i, d in enumerate(s["shape"]) if isinstance(d, str)}
               for s in inputs}
    dynamic[OUTPUT_NAME] = {0: BATCH}
    example = example_inputs(inputs, example_batch, example_frames)
    args = tuple(torch.from_numpy(example[n]) for n in names)
    was = model.training
    model.eval()
    buf = io.BytesIO()
    try:
        with warnings.catch_warnings():
            # the legacy exporter warns about itself and about traced Python ints; the
            # numerical checks in tests/test_onnx_export.py cover what those warnings fear
            warnings.simplefilter("ignore")
            with torch.no_grad():
                torch.onnx.export(classifier_module(model, names), args, buf,
                                  dynamo=False, opset_version=opset, input_names=names,
                                  output_names=[OUTPUT_NAME], dynamic_axes=dynamic,
                                  do_constant_folding=True)
    finally:
        model.train(was)
    data = buf.getvalue()
    from . import _ext

    if _ext.has("onnx"):
        import onnx

        onnx.checker.check_model(onnx.load_model_from_string(data))
    return data


# ------------------------------------------------------------------------------- building


# ------------------------------------------------- the default design's parts, torch-free
#: rows of the notes read by the key head (the pitch-class roll) and where the meter profile
#: starts (``features.symbolic``: kept here so that inference needs no MIDI library)
PITCH_CLASS_ROWS = 12
METER_START = 18


def architecture(spec: Mapping) -> dict:
    """The parts of the graph a model description (``export.model_spec``) asks for, mirroring
    ``FusionLSTM.__init__`` (torch-free; the C++ graph, the FLOP count and the
    engine-file schema read it)."""
    cfg = model_config_from_stored(dict(spec["config"]))
    dims = dict(spec["dims"])
    sizes = {"mfcc": int(dims["n_mfcc"]), "mel": int(dims["n_mels"]),
             "text": int(dims["text_dim"]), "symbolic": int(dims["symbolic_dim"])}
    mods = tuple(m for m in MODALITIES if m in cfg.modalities and sizes[m] > 0)
    late_text = "text" in mods and cfg.text_fusion == "late"
    meter_rows = (sizes["symbolic"] - METER_START
                  if cfg.meter_profile and "symbolic" in mods and sizes["symbolic"] > METER_START
                  else 0)
    pitch = (cfg.pitch_templates if "symbolic" in mods and cfg.pitch_templates > 0
             and sizes["symbolic"] >= PITCH_CLASS_ROWS else 0)
    width = {"mfcc": cfg.mfcc_channels, "mel": cfg.mel_channels,
             "symbolic": cfg.symbolic_channels}
    seq = tuple(m for m in mods if m != "text" or not late_text)
    audio_pitch = cfg.audio_pitch_templates if uses_chroma(cfg, dims) and "mel" in mods else 0
    audio_meter = (cfg.audio_meter_templates if cfg.stem == "dilated" and "mel" in mods
                   else 0)
    return {"cfg": cfg, "dims": dims, "sizes": sizes, "modalities": mods, "late_text": late_text,
            "meter_rows": meter_rows, "pitch": pitch, "sequence": seq, "width": width,
            "audio_pitch": audio_pitch, "audio_meter": audio_meter,
            "audio_meter_dim": 2 * AUDIO_METER_BINS + audio_meter if audio_meter else 0,
            "reads_chroma": uses_chroma(cfg, dims),
            "flux": cfg.flux_bands if "mel" in mods else 0,
            "n_classes": int(dims["n_classes"])}


def unsupported_reason(spec: Mapping) -> Optional[str]:
    """None when the C++ graph runs the model of ``spec``, else why not."""
    if spec.get("arch") != "fusion":
        return f"architecture {spec.get('arch')!r} is not the fusion model"
    arch = architecture(spec)
    cfg = arch["cfg"]
    if cfg.stem != "dilated":
        return f"stem {cfg.stem!r} (the graph runs the dilated stems)"
    if cfg.cell not in ("lstm", "none"):
        return f"cell {cfg.cell!r} (the graph runs an LSTM stack or no recurrence)"
    if "text" in arch["sequence"]:
        return "text fused early (broadcast over every frame)"
    if not arch["sequence"]:
        return "no time series"
    return None


def state_shapes(spec: Mapping) -> Dict[str, Tuple[int, ...]]:
    """Every state-dict tensor (name -> shape) of the model ``spec`` describes, torch-free, for
    the designs the graph runs (``unsupported_reason`` is None; ``ValueError`` otherwise). The
    same as ``build_model(...).state_dict()`` (tested), so an engine can be checked before
    anything is built without importing torch."""
    why = unsupported_reason(spec)
    if why is not None:
        raise ValueError(f"the native graph cannot run this model: {why}")
    a = architecture(spec)
    cfg, sizes, width = a["cfg"], a["sizes"], a["width"]
    out: Dict[str, Tuple[int, ...]] = {}

    def bn(prefix, n):
        for k in ("weight", "bias", "running_mean", "running_var"):
            out[f"{prefix}.{k}"] = (n,)
        out[f"{prefix}.num_batches_tracked"] = ()

    for m in ("mfcc", "mel", "symbolic"):
        if m in a["modalities"]:
            out[f"norm.{m}_mean"] = out[f"norm.{m}_std"] = (sizes[m],)
    if a["flux"]:
        bn("flux_norm", a["flux"])
    if a["pitch"]:
        out["pitch.templates"] = (a["pitch"], PITCH_CLASS_ROWS)
        bn("pitch_norm", a["pitch"])
    if a["meter_rows"]:
        bn("meter_norm", a["meter_rows"])
    if a["audio_pitch"]:
        out["audio_pitch.templates"] = (a["audio_pitch"], PITCH_CLASS_ROWS)
        bn("audio_pitch_norm", a["audio_pitch"])
    if a["audio_meter"]:
        out["audio_meter.templates"] = (a["audio_meter"], 2, AUDIO_METER_WIDTH)
        bn("audio_meter_norm", a["audio_meter_dim"])
    for m in a["modalities"]:
        if m == "text":
            out["stems.text.0.weight"] = (int(cfg.text_dim), sizes["text"])
            out["stems.text.0.bias"] = (int(cfg.text_dim),)
            continue
        w = width[m]
        cin = (METER_START if (m == "symbolic" and a["meter_rows"]) else sizes[m]) + \
            (a["flux"] if m == "mel" else 0)
        for i, prefix in enumerate([f"stems.{m}.inp"] +
                                   [f"stems.{m}.blocks.{j}" for j in range(len(cfg.dilations))]):
            out[f"{prefix}.0.weight"] = (w, cin if i == 0 else w, 3)
            out[f"{prefix}.0.bias"] = (w,)
            bn(f"{prefix}.1", w)
    fused = sum(width[m] + 1 for m in a["sequence"])
    if cfg.cell == "lstm":
        H = int(cfg.hidden_size)
        for k in range(int(cfg.num_layers)):
            out[f"classifier.rnn.weight_ih_l{k}"] = (4 * H, fused if k == 0 else H)
            out[f"classifier.rnn.weight_hh_l{k}"] = (4 * H, H)
            out[f"classifier.rnn.bias_ih_l{k}"] = out[f"classifier.rnn.bias_hh_l{k}"] = (4 * H,)
        pooled = H
    else:
        pooled = fused
    pooled *= 2 if cfg.pooling == "meanmax" else 1
    late = (int(cfg.text_dim) + 1 if a["late_text"] else 0) + a["pitch"] + a["meter_rows"] + \
        a["audio_pitch"] + a["audio_meter_dim"]
    out["classifier.head.weight"] = (a["n_classes"], pooled + late)
    out["classifier.head.bias"] = (a["n_classes"],)
    return out
