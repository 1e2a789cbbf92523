"""Checkpoint → engine file (``.mme``), and the ONNX export of the classifier.

``build_engine(run_or_checkpoint, out, backend=..., dtype=...)`` loads a trained model
(``mmengine.checkpoint.load_checkpoint``) and writes one engine file (layout:
``mmengine.runtime.engine_file``) whose header describes everything inference needs (labels,
audio/front-end settings, TF-IDF vocabulary, the model's architecture and its inputs) and whose
payload is pre-packed for the backend:

=========  ===================  ==============================================================
backend    payload              content
=========  ===================  ==============================================================
torch      safetensors          the model's state dict (classifier in bf16 for ``--dtype bf16``)
cuda,      safetensors          the same as torch (the GPU kernels take the LSTM weights as
triton                          torch stores them)
native     safetensors          the same + ``native.*``: the LSTM stack packed by
                                ``mmengine.runtime.native.pack_lstm`` (so torch can run the
                                same file when ``mmengine._C`` is missing)
onnx       ONNX protobuf        ``export_onnx``: front end (normalisation, stems, fusion) + LSTM
                                + pooling + head; dynamic batch and frames; opset 17
tensorrt   TensorRT plan        built from that ONNX by ``tensorrt_backend.build_plan``
=========  ===================  ==============================================================

Feature extraction (decode, log-Mel, MFCC, TF-IDF) stays outside every payload: the engine
runs it with ``mmengine.features`` and feeds the arrays listed in ``header["io"]["inputs"]``.
"""
from __future__ import annotations

import io
import logging
import warnings
from pathlib import Path
from typing import Dict, List, Mapping, Optional, Sequence

import numpy as np

from .config import (AudioConfig, FrontendConfig, InputLimits, from_dict,
                     model_config_from_stored, to_dict)

log = logging.getLogger("mmengine.export")

ONNX_OPSET = 17
OUTPUT_NAME = "logits"
BATCH, FRAMES = "batch", "frames"
#: modality -> (input names, in order) of a fusion model's batch dict
_MODALITY_INPUTS = {"mfcc": ("mfcc",), "mel": ("logmel",), "text": ("text", "text_mask"),
                    "symbolic": ("symbolic", "symbolic_mask")}
_INPUT_ORDER = ("mfcc", "logmel", "text", "text_mask", "symbolic", "symbolic_mask")


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
    names = [n for m in model.modalities for n in _MODALITY_INPUTS[m]]
    if not {"mfcc", "logmel"} & set(names):
        names.append("logmel")
    shapes = {"mfcc": [BATCH, dims["n_mfcc"], FRAMES], "logmel": [BATCH, dims["n_mels"], FRAMES],
              "text": [BATCH, dims["text_dim"]], "text_mask": [BATCH],
              "symbolic": [BATCH, dims["symbolic_dim"], FRAMES], "symbolic_mask": [BATCH]}
    if dims["n_mfcc"] != frontend_cfg.n_mfcc or dims["n_mels"] != frontend_cfg.n_mels:
        raise ValueError(f"model expects n_mfcc={dims['n_mfcc']}, n_mels={dims['n_mels']} but "
                         f"the front end gives {frontend_cfg.n_mfcc}, {frontend_cfg.n_mels}")
    return [{"name": n, "shape": shapes[n], "dtype": "bool" if n.endswith("_mask") else "float32"}
            for n in _INPUT_ORDER if n in names]


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
def engine_metadata(model, *, labels: Sequence[str], audio_cfg: AudioConfig,
                    frontend_cfg: FrontendConfig, text: Optional[dict] = None,
                    text_field: Optional[str] = None, symbolic: Optional[dict] = None,
                    source: Optional[dict] = None,
                    limits: Optional[InputLimits] = None) -> dict:
    """The descriptive part of an engine header (everything but payload facts).

    Args:
        model: the trained ``FusionLSTM``.
        labels: class names, index = logit column.
        audio_cfg, frontend_cfg: decoding and feature settings the model was trained with.
        text: ``TextVectorizer.to_json()`` (None when the model uses no text).
        text_field: record field the text came from ("lyrics" / "title").
        symbolic: settings of the symbolic features (e.g. ``{"dim": S}``), None without.
        source: provenance (checkpoint path, metrics...), copied verbatim.
        limits: the engine's ``InputLimits`` (default ``InputLimits()``), stored as
            ``"limits"``.
    """
    labels = [str(x) for x in labels]
    if len(labels) != model.dims["n_classes"]:
        raise ValueError(f"{len(labels)} labels for a model with {model.dims['n_classes']} "
                         "outputs")
    if "text" in model.modalities and text is None:
        raise ValueError("the model uses text but no TF-IDF vectorizer description was given")
    return {
        "labels": labels,
        "multilabel": bool(model.multilabel),
        "model": model_spec(model),
        "audio": to_dict(audio_cfg),
        "frontend": to_dict(frontend_cfg),
        "text": text if "text" in model.modalities else None,
        "text_field": text_field if "text" in model.modalities else None,
        "symbolic": symbolic if "symbolic" in model.modalities else None,
        "io": {"inputs": input_spec(model, frontend_cfg), "outputs": output_spec(model)},
        "limits": to_dict(limits or InputLimits()),
        "source": dict(source or {}),
    }


def build_engine_from_model(model, out, *, backend: str = "native", dtype: str = "fp32",
                            labels: Sequence[str], audio_cfg: AudioConfig = AudioConfig(),
                            frontend_cfg: FrontendConfig = FrontendConfig(),
                            text: Optional[dict] = None, text_field: Optional[str] = None,
                            symbolic: Optional[dict] = None, source: Optional[dict] = None,
                            options: Optional[dict] = None) -> Path:
    """Write the engine file ``out`` for ``model`` (see ``engine_metadata`` for the settings).

    Args:
        backend: "native", "onnx", "tensorrt", "torch", "cuda" or "triton".
        dtype: "fp32" or "bf16" (tensorrt also "fp16"); must be one the backend builds.
        options: backend build options (tensorrt: ``TensorRTSettings`` fields).
    Returns:
        the written path.
    """
    from .errors import UnknownBackendError
    from .runtime import engine_file
    from .runtime.registry import BACKENDS

    info = BACKENDS.get(backend)
    if info is None or info.build_payload is None:
        builders = [n for n, b in BACKENDS.items() if b.build_payload]
        raise UnknownBackendError(f"cannot build an engine for backend {backend!r}; "
                                  f"buildable backends: {', '.join(builders)}")
    if dtype not in info.dtypes:
        raise ValueError(f"backend {backend!r} builds dtypes {info.dtypes}, not {dtype!r}")
    extra = engine_metadata(model, labels=labels, audio_cfg=audio_cfg, frontend_cfg=frontend_cfg,
                            text=text, text_field=text_field, symbolic=symbolic, source=source)
    model = model.eval()
    payload, backend_extra = info.load_module().build(model, extra, dtype=dtype,
                                                      **dict(options or {}))
    extra["backend_options"] = backend_extra
    header = engine_file.make_header(backend, info.build_payload, dtype, payload, extra)
    path = engine_file.write_engine_file(out, header, payload)
    log.info("wrote %s (%s, %s, %d bytes payload)", path, backend, dtype, len(payload))
    return path


def checkpoint_settings(meta: Mapping) -> dict:
    """Keyword arguments of ``build_engine_from_model`` from a ``checkpoint.json`` dict
    (``mmengine.checkpoint`` format): labels, audio/front-end settings, TF-IDF vectoriser, and
    ``text_field`` / ``symbolic`` when the checkpoint records them (top level or ``extra``)."""
    extra = meta.get("extra") or {}

    def get(key):
        return meta.get(key, extra.get(key))

    return dict(
        labels=list(meta["label_names"]),
        audio_cfg=from_dict(AudioConfig, meta.get("audio_config") or {}),
        frontend_cfg=from_dict(FrontendConfig, meta.get("frontend_config") or {}),
        text=meta.get("text_vectorizer"),
        text_field=get("text_field") or ("lyrics" if meta.get("text_vectorizer") else None),
        symbolic=get("symbolic"),
    )


def build_engine(run_or_checkpoint, out, *, backend: str = "native", dtype: str = "fp32",
                 **options) -> Path:
    """``mmengine build RUN_OR_CHECKPOINT -o OUT --backend B --dtype D``: load a checkpoint
    (a run folder, its ``checkpoint.safetensors`` or ``checkpoint.json``) and write the engine
    file ``out``. ``options`` go to the backend builder (tensorrt: ``TensorRTSettings``
    fields). Returns the written path."""
    from .checkpoint import load_checkpoint

    model, meta = load_checkpoint(run_or_checkpoint)
    settings = checkpoint_settings(meta)
    source = {"checkpoint": str(Path(run_or_checkpoint).resolve())}
    return build_engine_from_model(model, out, backend=backend, dtype=dtype, source=source,
                                   options=options, **settings)
