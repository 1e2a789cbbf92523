"""Schemas of the stored JSON that drives code: engine headers and ``checkpoint.json``.

An engine file or a checkpoint is data: every value that sizes an allocation or picks a code
path is checked here (type and range) before anything is built from it, and the model's
tensor shapes are checked against the safetensors header of the weights (a model is built on
torch's ``meta`` device for that, which allocates nothing) before the backend builds it.

Each ``check_*`` function raises ``ValueError`` with the dotted key and the reason
(``"model.config.hidden_size: 100000000 outside 1..4096"``); ``check_engine_header`` and
``check_checkpoint_meta`` turn that into ``EngineFileError`` / ``CheckpointError`` naming the
file. Keys a field table does not list are left alone (they size nothing).
"""
from __future__ import annotations

import math
from typing import Any, Dict, Mapping, Optional, Tuple

from .config import LIMIT_CEILINGS, MODALITIES, InputLimits, from_dict
from .data.safe_io import safetensors_index  # noqa: F401 (re-exported)
from .errors import CheckpointError, EngineFileError

# kinds: ("int", lo, hi), ("num", lo, hi), ("bool",), ("choice", values), ("ints", max_len, lo,
# hi), ("subset", values), ("optnum", lo, hi): a number or null
_Spec = Dict[str, tuple]

MODEL_FIELDS: _Spec = {
    "arch": ("choice", ("fusion", "cnn")),
    "modalities": ("subset", MODALITIES),
    "cell": ("choice", ("lstm", "gru", "rnn", "none")),
    "hidden_size": ("int", 1, 4096),
    "num_layers": ("int", 1, 16),
    "dropout": ("num", 0.0, 1.0),
    "rnn_dropout": ("num", 0.0, 1.0),
    "pooling": ("choice", ("last", "mean", "meanmax")),
    "stem": ("choice", ("dilated", "strided")),
    "stem_stages": ("int", 0, 8),
    "dilations": ("ints", 16, 1, 1024),
    "pool_stride": ("int", 1, 64),
    "flux_bands": ("int", 0, 256),
    "text_fusion": ("choice", ("late", "early")),
    "pitch_templates": ("int", 0, 256), "audio_pitch_templates": ("int", 0, 256),
    "audio_pitch_gain": ("num", 1e-3, 1e3),
    "audio_meter_templates": ("int", 0, 256),
    "mfcc_channels": ("int", 1, 4096),
    "mel_channels": ("int", 1, 4096),
    "symbolic_channels": ("int", 1, 4096),
    "text_dim": ("int", 1, 4096),
    "modality_dropout": ("num", 0.0, 1.0),
    "text_dropout": ("optnum", 0.0, 1.0),
    "symbolic_dropout": ("optnum", 0.0, 1.0),
    "spec_mask_bands": ("int", 0, 512),
    "pitch_rotation": ("bool",),
    "meter_profile": ("bool",),
    "cnn_channels": ("ints", 8, 1, 4096),
    "cnn_stride": ("ints", 2, 1, 16),
}
DIMS_FIELDS: _Spec = {
    "n_mfcc": ("int", 1, 512), "n_mels": ("int", 1, 512), "text_dim": ("int", 0, 10_000_000),
    "symbolic_dim": ("int", 0, 1024), "n_classes": ("int", 1, 100_000),
    "multilabel": ("bool",), "n_chroma": ("choice", (0, 12)),
}
AUDIO_FIELDS: _Spec = {
    "sample_rate": ("int", 8000, 48000), "max_duration_s": ("num", 1e-3, 86400.0),
    "resample_quality": ("choice", ("VHQ", "HQ", "MQ", "LQ", "QQ")),
    "clip_seconds": ("num", 0.1, 120.0),
}
FRONTEND_FIELDS: _Spec = {
    "sample_rate": ("int", 8000, 48000), "n_fft": ("int", 64, 16384),
    "hop_length": ("int", 32, 16384), "window": ("choice", ("hann",)),
    "center": ("bool",), "pad_mode": ("choice", ("constant", "reflect")),
    "power": ("num", 0.5, 4.0), "n_mels": ("int", 1, 512), "fmin": ("num", 0.0, 192000.0),
    "fmax": ("optnum", 0.0, 192000.0), "mel_scale": ("choice", ("slaney", "htk")),
    "mel_norm": ("choice", ("slaney", None)), "amin": ("num", 1e-30, 1.0),
    "db_ref": ("num", 1e-30, 1e30), "n_mfcc": ("int", 1, 512),
    "chroma_bins": ("choice", (0, 12)), "chroma_n_fft": ("int", 16, 65536),
    "chroma_power": ("choice", (1.0, 2.0)), "chroma_ctroct": ("num", 0.0, 16.0),
    "chroma_octwidth": ("optnum", 1e-3, 100.0),
}
#: input names an engine may declare, and how many fixed dims each has after "batch"
_INPUTS = {"mfcc": "n_mfcc", "logmel": "n_mels", "chroma": "n_chroma", "text": "text_dim",
           "text_mask": None,
           "symbolic": "symbolic_dim", "symbolic_mask": None}


def _num(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def check_fields(d: Any, spec: _Spec, where: str) -> None:
    """Check the keys of ``d`` that ``spec`` lists (type and range)."""
    if not isinstance(d, dict):
        raise ValueError(f"{where}: expected an object, got {type(d).__name__}")
    for key, rule in spec.items():
        if key not in d:
            continue
        v, kind, name = d[key], rule[0], f"{where}.{key}"
        if kind == "int":
            if isinstance(v, bool) or not isinstance(v, int) or not rule[1] <= v <= rule[2]:
                raise ValueError(f"{name}: {v!r} is not an integer in {rule[1]}..{rule[2]}")
        elif kind in ("num", "optnum"):
            if v is None and kind == "optnum":
                continue
            if not _num(v) or not rule[1] <= v <= rule[2]:
                raise ValueError(f"{name}: {v!r} is not a number in {rule[1]:g}..{rule[2]:g}")
        elif kind == "bool":
            if not isinstance(v, bool):
                raise ValueError(f"{name}: {v!r} is not true/false")
        elif kind == "choice":
            if v not in rule[1] or isinstance(v, bool):
                raise ValueError(f"{name}: {v!r} is not one of {list(rule[1])}")
        elif kind == "ints":
            if (not isinstance(v, list) or len(v) > rule[1] or not all(
                    isinstance(x, int) and not isinstance(x, bool) and rule[2] <= x <= rule[3]
                    for x in v)):
                raise ValueError(f"{name}: {str(v)[:60]} is not a list of at most {rule[1]} "
                                 f"integers in {rule[2]}..{rule[3]}")
        elif kind == "subset":
            if (not isinstance(v, list) or not v or len(set(map(str, v))) != len(v)
                    or not set(v) <= set(rule[1])):
                raise ValueError(f"{name}: {str(v)[:60]} is not a non-empty subset of "
                                 f"{list(rule[1])}")


def check_labels(labels: Any, where: str = "labels") -> None:
    if (not isinstance(labels, list) or not 1 <= len(labels) <= 100_000
            or not all(isinstance(x, str) and len(x) <= 1000 for x in labels)
            or len(set(labels)) != len(labels)):
        raise ValueError(f"{where}: expected 1..100000 distinct strings")


def check_limits(d: Any, where: str = "limits") -> InputLimits:
    """``InputLimits`` from a stored dict: every field a number within ``LIMIT_CEILINGS``."""
    if not isinstance(d, dict):
        raise ValueError(f"{where}: expected an object")
    for key, v in d.items():
        if key in LIMIT_CEILINGS and (not _num(v) or not 0 < v <= LIMIT_CEILINGS[key]):
            raise ValueError(f"{where}.{key}: {v!r} outside (0, {LIMIT_CEILINGS[key]:g}]")
    return from_dict(InputLimits, d)


def check_model(cfg: Any, dims: Any, where: str) -> None:
    """A stored model description: ``config`` (``ModelConfig`` fields) and ``dims``."""
    from .config import DIM_KEYS

    check_fields(cfg, MODEL_FIELDS, f"{where}.config")
    check_fields(dims, DIMS_FIELDS, f"{where}.dims")
    missing = [k for k in DIM_KEYS if k not in dims]
    if missing:
        raise ValueError(f"{where}.dims: missing {missing}")


def check_engine_fields(header: Mapping) -> None:
    """Types and ranges of an engine header's model description (``ValueError``)."""
    check_labels(header.get("labels"))
    if "multilabel" in header and not isinstance(header["multilabel"], bool):
        raise ValueError("multilabel: not true/false")
    if header.get("text_field") not in (None, "lyrics", "title"):
        raise ValueError(f"text_field: {str(header['text_field'])[:40]!r} is not 'lyrics', "
                         "'title' or null")
    check_fields(header.get("audio"), AUDIO_FIELDS, "audio")
    check_fields(header.get("frontend"), FRONTEND_FIELDS, "frontend")
    fe = header["frontend"]
    if fe.get("hop_length", 512) > fe.get("n_fft", 2048):
        raise ValueError("frontend.hop_length is larger than frontend.n_fft")
    if fe.get("n_mfcc", 20) > fe.get("n_mels", 128):
        raise ValueError("frontend.n_mfcc is larger than frontend.n_mels")
    model = header.get("model")
    if not isinstance(model, dict) or model.get("arch") != "fusion":
        raise ValueError("model: expected an object with arch 'fusion'")
    check_model(model.get("config"), model.get("dims"), "model")
    dims = model["dims"]
    if dims["n_classes"] != len(header["labels"]):
        raise ValueError(f"model.dims.n_classes {dims['n_classes']} != {len(header['labels'])} "
                         "labels")
    if dims["n_mfcc"] != fe.get("n_mfcc", 20) or dims["n_mels"] != fe.get("n_mels", 128):
        raise ValueError("model.dims n_mfcc/n_mels differ from the front end's")
    io = header.get("io")
    if not isinstance(io, dict) or not isinstance(io.get("inputs"), list):
        raise ValueError("io.inputs: expected a list")
    for i, spec in enumerate(io["inputs"]):
        if not isinstance(spec, dict) or spec.get("name") not in _INPUTS:
            raise ValueError(f"io.inputs[{i}]: expected one of {list(_INPUTS)}")
        dim = _INPUTS[spec["name"]]
        want = (["batch"] if dim is None else
                ["batch", dims[dim]] + (["frames"] if spec["name"] != "text" else []))
        if spec.get("shape") != want:
            raise ValueError(f"io.inputs[{i}] ({spec['name']}): shape {spec.get('shape')!r}, "
                             f"the model's dims say {want}")
        if spec.get("dtype") != ("bool" if dim is None else "float32"):
            raise ValueError(f"io.inputs[{i}] ({spec['name']}): dtype {spec.get('dtype')!r}")
    # exactly the model's inputs in their order (export.input_spec): a header may not leave
    # one out (the model would run without it) or empty the list (found by tests/fuzz/pyfuzz.py:
    # classify then raised KeyError from the model)
    from .config import INPUT_ORDER, MODALITY_INPUTS, model_config_from_stored, uses_chroma

    # the modalities the model uses: configured and present in the data (FusionLSTM drops a
    # modality whose size in dims is 0)
    dims = model.get("dims") or {}
    size = {"mfcc": "n_mfcc", "mel": "n_mels", "text": "text_dim", "symbolic": "symbolic_dim"}
    cfg = model_config_from_stored(dict(model["config"]))
    names = {n for m in cfg.modalities
             if dims.get(size.get(m, ""), 1) for n in MODALITY_INPUTS.get(m, ())}
    if not names & {"mfcc", "logmel"}:
        names.add("logmel")
    if uses_chroma(cfg, dims):
        names.add("chroma")
        if fe.get("chroma_bins") != dims.get("n_chroma"):
            raise ValueError(f"frontend.chroma_bins {fe.get('chroma_bins')!r} is not the "
                             f"model's n_chroma {dims.get('n_chroma')!r}")
    want = [n for n in INPUT_ORDER if n in names]
    if [s["name"] for s in io["inputs"]] != want:
        raise ValueError(f"io.inputs {[s['name'] for s in io['inputs']]} are not the model's "
                         f"inputs {want}")
    text = header.get("text")
    if "text" in [s["name"] for s in io["inputs"]]:
        from .features.text import TextVectorizer

        vec = TextVectorizer.from_json(text)  # types, ranges and the fixed token pattern
        if vec.n_features != dims["text_dim"]:
            raise ValueError(f"text: {vec.n_features} vocabulary terms, model.dims.text_dim "
                             f"is {dims['text_dim']}")
    if "limits" in header and header["limits"] is not None:
        check_limits(header["limits"])


def check_engine_header(header: Mapping, path: str) -> None:
    """``check_engine_fields``, as ``EngineFileError`` naming ``path``."""
    try:
        check_engine_fields(header)
    except (ValueError, TypeError, KeyError) as exc:
        raise EngineFileError(path, f"header fails its schema: {exc}") from None


def safetensors_shapes(data: bytes, max_json: float, max_depth: int,
                       body_size: Optional[int] = None) -> Dict[str, Tuple[str, Tuple[int, ...]]]:
    """``{name: (dtype, shape)}`` from the header of safetensors bytes, with every tensor's
    byte range checked against its dtype, shape and the body (``ValueError``). ``data`` may
    stop after the header when ``body_size`` (the bytes after it) is given."""
    return {k: (d, s) for k, (d, s, _, _) in
            safetensors_index(data, max_json, max_depth, body_size)[0].items()}


def expected_shapes(cfg_dict: Mapping, dims: Mapping) -> Dict[str, Tuple[int, ...]]:
    """The state-dict shapes of the model ``cfg_dict``/``dims`` describe: torch-free for the
    designs the native graph runs (``spec.state_shapes``: no torch import, which would cost a
    classify call a second), else from a model built on torch's ``meta`` device (no memory
    for its tensors)."""
    from . import spec as model_spec

    spec = {"arch": "fusion", "config": cfg_dict, "dims": dims}
    if model_spec.unsupported_reason(spec) is None:
        return model_spec.state_shapes(spec)
    import torch

    from .config import model_config_from_stored
    from .models import build_model

    with torch.device("meta"):
        model = build_model(model_config_from_stored(dict(cfg_dict)), dict(dims))
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


def compare_shapes(stored: Mapping[str, Tuple[int, ...]], expected: Mapping[str, Tuple[int, ...]],
                   prefix_ignored: Optional[str] = None) -> None:
    """``ValueError`` listing the tensors that are missing, unexpected or of another shape."""
    keys = {k for k in stored if not (prefix_ignored and k.startswith(prefix_ignored))}
    problems = [f"missing tensor {k}" for k in sorted(set(expected) - keys)]
    problems += [f"unexpected tensor {k}" for k in sorted(keys - set(expected))]
    problems += [f"{k}: shape {stored[k]}, the header's model needs {expected[k]}"
                 for k in sorted(keys & set(expected)) if tuple(stored[k]) != expected[k]]
    if problems:
        raise ValueError("weights do not fit the described model: " + "; ".join(problems[:8]))


def check_engine_payload(ef, limits: InputLimits) -> None:
    """A safetensors payload's tensors against the header's model (shapes, before any
    backend builds the model); ``EngineFileError``. Other payload formats are left to their
    backend (ONNX Runtime and TensorRT check their own graphs)."""
    if ef.header.get("payload_format") != "safetensors":
        return
    try:
        stored = safetensors_shapes(ef.payload, limits.max_json_bytes, limits.max_json_depth)
    except ValueError as exc:
        raise EngineFileError(ef.path, f"payload is not valid safetensors ({exc})") from None
    try:
        spec = ef.header["model"]
        try:
            expected = expected_shapes(spec["config"], spec["dims"])
        except ModuleNotFoundError as exc:
            if exc.name != "torch":
                raise
            # a core install (no torch): the whole-model graph checks every tensor's shape
            # against the header's model itself before it builds (runtime.native_model)
            return
        compare_shapes({k: s for k, (_, s) in stored.items()}, expected,
                       prefix_ignored="native.")
    except (ValueError, TypeError, KeyError) as exc:
        raise EngineFileError(ef.path, f"payload does not match the header: {exc}") from None


def check_checkpoint_meta(meta: Mapping, path: str) -> None:
    """Types and ranges of ``checkpoint.json`` (``CheckpointError`` naming ``path``)."""
    try:
        check_model(meta.get("model_config"), meta.get("dims"), "checkpoint")
        check_labels(meta.get("label_names"), "label_names")
        if meta["dims"]["n_classes"] != len(meta["label_names"]):
            raise ValueError("dims.n_classes differs from the number of label_names")
        for key, spec in (("audio_config", AUDIO_FIELDS), ("frontend_config", FRONTEND_FIELDS)):
            if meta.get(key) is not None:
                check_fields(meta[key], spec, key)
        if meta.get("text_vectorizer") is not None:
            from .features.text import TextVectorizer

            TextVectorizer.from_json(meta["text_vectorizer"])
        wf = meta.get("weights_file", "checkpoint.safetensors")
        if not isinstance(wf, str) or not wf or "/" in wf or "\\" in wf or wf in (".", ".."):
            raise ValueError(f"weights_file {str(wf)[:80]!r} must be a file name in the "
                             "checkpoint's own folder")
        if not isinstance(meta.get("weights_sha256"), str):
            raise ValueError("weights_sha256: expected a string")
    except (ValueError, TypeError, KeyError) as exc:
        raise CheckpointError(f"{path}: checkpoint.json fails its schema: {exc}") from None


__all__ = ["check_checkpoint_meta", "check_engine_header", "check_engine_payload",
           "check_fields", "check_limits", "compare_shapes", "expected_shapes",
           "safetensors_shapes"]
