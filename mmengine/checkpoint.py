"""Checkpoints: ``checkpoint.safetensors`` (tensors only) + ``checkpoint.json`` (everything
else). Never pickle.

``checkpoint.json`` (format ``mmengine-checkpoint/1``) holds: the model architecture
(``model_config``, ``dims``), ``train_config``, ``label_names``, feature settings
(``audio_config``, ``frontend_config``), the TF-IDF vectoriser (vocabulary + idf, see
``TextVectorizer.to_json``), the input ``normalization`` statistics (also present as
``norm.*`` tensors), ``metrics``, ``history``, package ``versions`` and the SHA-256 of the
tensor file, which ``load_checkpoint`` verifies.
"""
from __future__ import annotations

import hashlib
import json
import os
import platform
from pathlib import Path
from typing import Any, Dict, Mapping, Optional, Tuple, Union

import torch

from .config import (
    InputLimits,
    ModelConfig,
    model_config_from_stored,
    to_dict,
)
from .data.safe_io import atomic_write
from .errors import CheckpointError, InputFileError

FORMAT = "mmengine-checkpoint/1"
WEIGHTS_NAME = "checkpoint.safetensors"
META_NAME = "checkpoint.json"
PathLike = Union[str, os.PathLike]


# ------------------------------------------------------------------ atomic file helpers
# (atomic_write itself: data.safe_io)
def atomic_write_json(path: PathLike, doc: Any) -> None:
    def write(tmp: str) -> None:
        with open(tmp, "w", encoding="utf-8") as fh:
            json.dump(doc, fh, indent=1, sort_keys=False, allow_nan=True)
            fh.write("\n")

    atomic_write(path, write)


def atomic_save_tensors(path: PathLike, tensors: Mapping[str, torch.Tensor],
                        metadata: Optional[Dict[str, str]] = None) -> None:
    """Save ``tensors`` (contiguous copies, no shared storage) to a safetensors file."""
    from safetensors.torch import save_file

    clean = {k: v.detach().cpu().contiguous().clone() for k, v in tensors.items()}
    atomic_write(path, lambda tmp: save_file(clean, tmp, metadata=metadata))


def read_tensors(path: PathLike) -> Tuple[Dict[str, torch.Tensor], Dict[str, str]]:
    """(tensors, metadata) of a safetensors file; ``CheckpointError`` if missing/malformed."""
    from safetensors import safe_open

    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: file not found")
    try:
        with safe_open(str(path), framework="pt") as fh:
            meta = dict(fh.metadata() or {})
            tensors = {k: fh.get_tensor(k) for k in fh.keys()}
    except Exception as exc:  # safetensors raises several error types for bad headers
        raise CheckpointError(f"{path}: not a readable safetensors file ({exc})") from exc
    return tensors, meta


def file_sha256(path: PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def package_versions() -> Dict[str, Optional[str]]:
    """Versions of the packages that shape a checkpoint's numbers."""
    from importlib import metadata

    import numpy

    from . import __version__

    out: Dict[str, Optional[str]] = {"mmengine-music": __version__,
                                     "python": platform.python_version(),
                                     "torch": torch.__version__, "numpy": numpy.__version__}
    for dist in ("scikit-learn", "safetensors"):
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            out[dist] = None
    return out


def _as_dict(cfg) -> Optional[dict]:
    if cfg is None or isinstance(cfg, dict):
        return cfg
    return to_dict(cfg)


# ------------------------------------------------------------------ checkpoint
def save_checkpoint(directory: PathLike, model: torch.nn.Module, *, label_names,
                    model_config: Optional[ModelConfig] = None, train_config=None,
                    audio_config=None, frontend_config=None, text_vectorizer=None,
                    metrics: Optional[dict] = None, history: Optional[list] = None,
                    extra: Optional[dict] = None) -> Path:
    """Write ``directory/checkpoint.safetensors`` and ``directory/checkpoint.json``.

    Args:
        model: a model from ``mmengine.models.build_model`` (has ``cfg``, ``dims``, ``norm``).
        label_names: C class names in output order.
        model_config: defaults to ``model.cfg``.
        train_config, audio_config, frontend_config: dataclasses or dicts (stored as dicts).
        text_vectorizer: a ``TextVectorizer`` or its ``to_json()`` dict (or None).
        metrics, history, extra: plain-JSON values.
    Returns:
        the path of ``checkpoint.json``.
    """
    directory = Path(directory)
    cfg = model_config if model_config is not None else model.cfg
    if len(label_names) != model.dims["n_classes"]:
        raise CheckpointError(f"{len(label_names)} label names for a model with "
                              f"{model.dims['n_classes']} outputs")
    if text_vectorizer is not None and not isinstance(text_vectorizer, dict):
        text_vectorizer = text_vectorizer.to_json()
    weights = directory / WEIGHTS_NAME
    atomic_save_tensors(weights, model.state_dict(), metadata={"format": FORMAT})
    meta = {
        "format": FORMAT,
        "arch": cfg.arch,
        "model_config": _as_dict(cfg),
        "dims": dict(model.dims),
        "modalities": list(model.modalities),
        "label_names": list(label_names),
        "train_config": _as_dict(train_config),
        "audio_config": _as_dict(audio_config),
        "frontend_config": _as_dict(frontend_config),
        "text_vectorizer": text_vectorizer,
        "normalization": {k: v.tolist() for k, v in model.norm.stats().items()},
        "metrics": metrics or {},
        "history": history or [],
        "versions": package_versions(),
        "weights_file": WEIGHTS_NAME,
        "weights_sha256": file_sha256(weights),
        "extra": extra or {},
    }
    path = directory / META_NAME
    atomic_write_json(path, meta)
    return path


def read_meta(path: PathLike, limits: Optional[InputLimits] = None) -> dict:
    """The validated ``checkpoint.json`` of a checkpoint folder or file: a regular file within
    ``limits.max_json_bytes`` and ``max_json_depth`` (default ``InputLimits()``), format and
    required fields present. ``load_checkpoint`` also checks it against its schema
    (``mmengine.schema.check_checkpoint_meta``)."""
    from .data.safe_io import loads_bounded, read_bounded

    limits = limits or InputLimits()
    p = Path(path)
    meta_path = p / META_NAME if p.is_dir() else p.with_suffix(".json")
    try:
        blob = read_bounded(meta_path, limits.max_json_bytes, "max_json_bytes",
                            "checkpoint metadata")
    except InputFileError as exc:
        raise CheckpointError(f"{meta_path}: checkpoint metadata not found" if exc.missing
                              else f"{meta_path}: {exc.detail}") from None
    try:
        meta = loads_bounded(blob, limits.max_json_bytes, limits.max_json_depth)
    except ValueError as exc:
        raise CheckpointError(f"{meta_path}: not valid JSON within the limits ({exc})") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        got = meta.get("format") if isinstance(meta, dict) else type(meta).__name__
        raise CheckpointError(f"{meta_path}: not an mmengine checkpoint (format {got!r}, "
                              f"expected {FORMAT!r})")
    missing = [k for k in ("model_config", "dims", "label_names", "weights_sha256")
               if k not in meta]
    if missing:
        raise CheckpointError(f"{meta_path}: missing field(s) {missing}")
    meta["_path"] = str(meta_path)
    return meta


def load_checkpoint(path: PathLike) -> Tuple[torch.nn.Module, dict]:
    """Rebuild the model of a checkpoint (folder, ``.json`` or ``.safetensors`` path).

    Returns:
        ``(model in eval mode, meta dict)``. Raises ``CheckpointError`` when a file is missing,
        malformed, does not match its checksum, or its tensors do not fit the architecture.
    """
    from . import schema
    from .models import build_model

    meta = read_meta(path)
    meta_path = Path(meta["_path"])
    schema.check_checkpoint_meta(meta, str(meta_path))  # weights_file: a name, no folder
    weights = meta_path.parent / meta.get("weights_file", WEIGHTS_NAME)
    if weights.resolve().parent != meta_path.parent.resolve() or not weights.is_file():
        raise CheckpointError(f"{weights}: checkpoint weights not found in {meta_path.parent}")
    digest = file_sha256(weights)
    if digest != meta["weights_sha256"]:
        raise CheckpointError(f"{weights}: SHA-256 {digest[:12]}… does not match "
                              f"{meta_path.name} ({str(meta['weights_sha256'])[:12]}…); the two "
                              "files come from different saves")
    limits = InputLimits()
    with open(weights, "rb") as fh:  # the safetensors header only: shapes before any build
        head = fh.read(8)
        n = int.from_bytes(head, "little") if len(head) == 8 else 0
        blob = head + fh.read(min(n, int(limits.max_json_bytes) + 1))
        body = os.fstat(fh.fileno()).st_size - 8 - n
    try:
        stored = schema.safetensors_shapes(blob, limits.max_json_bytes, limits.max_json_depth,
                                           body_size=body)
    except ValueError as exc:
        raise CheckpointError(f"{weights}: not a readable safetensors file ({exc})") from None
    try:
        schema.compare_shapes({k: s for k, (_, s) in stored.items()},
                              schema.expected_shapes(meta["model_config"], meta["dims"]))
    except ValueError as exc:
        raise CheckpointError(f"{weights}: tensors do not match the architecture: "
                              f"{exc}") from None
    except (TypeError, KeyError) as exc:
        raise CheckpointError(f"{meta_path}: cannot rebuild the model ({exc})") from exc
    tensors, _ = read_tensors(weights)
    try:
        cfg = model_config_from_stored(meta["model_config"])
        model = build_model(cfg, meta["dims"])
    except (TypeError, ValueError, KeyError) as exc:
        raise CheckpointError(f"{meta_path}: cannot rebuild the model ({exc})") from exc
    expected = model.state_dict()
    problems = [f"missing tensor {k}" for k in expected if k not in tensors]
    problems += [f"unexpected tensor {k}" for k in tensors if k not in expected]
    problems += [f"{k}: shape {tuple(tensors[k].shape)}, expected {tuple(v.shape)}"
                 for k, v in expected.items() if k in tensors and tensors[k].shape != v.shape]
    if problems:
        raise CheckpointError(f"{weights}: tensors do not match the architecture: "
                              + "; ".join(problems[:10]))
    model.load_state_dict(tensors, strict=True)
    model.eval()
    return model, meta
