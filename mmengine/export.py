"""Checkpoint → engine file (``.mme``); the ONNX export of the classifier is ``mmengine.spec``.

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
native     safetensors          the state dict in float32 (for ``--dtype bf16`` too: the
                                master copy of the fp32 twin that reruns close calls) +
                                ``native.*``: the LSTM stack packed by
                                ``mmengine.runtime.native_lstm.pack_lstm`` in the engine's dtype
                                (so torch can run the same file when ``mmengine._C`` is
                                missing)
onnx       ONNX protobuf        ``export_onnx``: front end (normalisation, stems, fusion) + LSTM
                                + pooling + head; dynamic batch and frames; opset 17
tensorrt   TensorRT plan        built from that ONNX by ``tensorrt_backend.build_plan``
=========  ===================  ==============================================================

Feature extraction (decode, log-Mel, MFCC, TF-IDF) stays outside every payload: the engine
runs it with ``mmengine.features`` and feeds the arrays listed in ``header["io"]["inputs"]``.
"""
from __future__ import annotations

import dataclasses

import logging
from pathlib import Path
from typing import Mapping, Optional, Sequence

from .config import AudioConfig, BuildConfig, FrontendConfig, InputLimits, from_dict, to_dict
# the model's description and its ONNX export live in ``spec`` (below the backends); their
# names stay importable from here
from .spec import (BATCH, FRAMES, ONNX_OPSET, OUTPUT_NAME, classifier_module,  # noqa: F401
                   example_inputs, export_onnx, input_spec, model_spec, output_spec,
                   rebuild_model)

log = logging.getLogger("mmengine.export")


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
    # the front end computes the chroma only for a model that reads it (it costs ~4x the
    # log-Mel's FFT work): the header of any other model says chroma_bins=0
    if not getattr(model, "reads_chroma", False):
        frontend_cfg = dataclasses.replace(frontend_cfg, chroma_bins=0)
    elif frontend_cfg.chroma_bins != model.dims.get("n_chroma"):
        raise ValueError(f"the model reads a {model.dims.get('n_chroma')}-bin chroma but the "
                         f"front-end settings give {frontend_cfg.chroma_bins} bins")
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


def build_engine_from_model(model, out, *, backend: str = BuildConfig.backend,
                            dtype: str = BuildConfig.dtype,
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


def build_engine(run_or_checkpoint, out, *, backend: str = BuildConfig.backend,
                 dtype: str = BuildConfig.dtype,
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
