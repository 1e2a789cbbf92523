"""The resumable state of a training run: what ``last.safetensors`` holds after every epoch
(model, training-only modules, optimizer tensors and scalars, RNG states; ``_save_state``), how
it is read back and checked against the run's fingerprint (``_load_state``: the same model,
settings other than ``RESUMABLE_CHANGES`` and training clips), and ``STATE_FORMAT``. Separate
from the loop (``mmengine.training``, which re-exports the public names) because it is the file
format of an interrupted run, not a step of training.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Dict, Optional, Tuple

import torch
from torch import nn

from .checkpoint import atomic_save_tensors, atomic_write_json, read_tensors
from .config import ModelConfig, TrainConfig, to_dict
from .errors import CheckpointError

STATE_FORMAT = "mmengine-train-state/1"
#: TrainConfig fields that may change between an interrupted run and its resumption
RESUMABLE_CHANGES = ("max_epochs", "patience", "num_threads")


# ------------------------------------------------------------------ state (resume)
def _optimizer_tensors(opt: torch.optim.Optimizer) -> Tuple[Dict[str, torch.Tensor], dict]:
    sd = opt.state_dict()
    tensors, scalars = {}, {}
    for idx, st in sd["state"].items():
        for key, val in st.items():
            if torch.is_tensor(val):
                tensors[f"optim.{idx}.{key}"] = val
            else:
                scalars[f"{idx}.{key}"] = val
    return tensors, {"param_groups": sd["param_groups"], "scalars": scalars}


def _optimizer_state(tensors: Dict[str, torch.Tensor], doc: dict) -> dict:
    state: Dict[int, dict] = {}
    for name, val in tensors.items():
        if name.startswith("optim."):
            _, idx, key = name.split(".", 2)
            state.setdefault(int(idx), {})[key] = val
    for name, val in doc["scalars"].items():
        idx, key = name.split(".", 1)
        state.setdefault(int(idx), {})[key] = val
    return {"state": state, "param_groups": doc["param_groups"]}


def _fingerprint(fs_train, model_cfg: ModelConfig, train_cfg: TrainConfig, dims: dict) -> dict:
    tc = {k: v for k, v in to_dict(train_cfg).items() if k not in RESUMABLE_CHANGES}
    ids = "\n".join(fs_train.ids).encode()
    return {"model_config": json.loads(json.dumps(to_dict(model_cfg))),
            "train_config": json.loads(json.dumps(tc)),
            "dims": dims, "train_ids_sha256": hashlib.sha256(ids).hexdigest()}


def _save_state(out_dir: Path, model, opt, gen: torch.Generator, doc: dict,
                extras: Optional[Dict[str, nn.Module]] = None,
                more: Optional[Dict[str, torch.Tensor]] = None) -> None:
    """``extras``: training-only modules (auxiliary heads, the weight average) saved under
    their name as prefix; ``more``: further tensors (the other ranks' RNG states)."""
    tensors = {f"model.{k}": v for k, v in model.state_dict().items()}
    for name, module in (extras or {}).items():
        tensors.update({f"{name}.{k}": v for k, v in module.state_dict().items()})
    opt_tensors, opt_doc = _optimizer_tensors(opt)
    tensors.update(opt_tensors)
    tensors["rng.torch"] = torch.get_rng_state()
    tensors["rng.shuffle"] = gen.get_state()
    tensors.update(more or {})
    doc = dict(doc, format=STATE_FORMAT, optimizer=opt_doc)
    text = json.dumps(doc)
    atomic_save_tensors(out_dir / "last.safetensors", tensors, metadata={"state": text})
    atomic_write_json(out_dir / "last.json", doc)


def _load_state(out_dir: Path, model, opt, gen: torch.Generator, fingerprint: dict,
                extras: Optional[Dict[str, nn.Module]] = None,
                loaded: Optional[tuple] = None) -> dict:
    """``loaded``: ``read_tensors`` of the state file, read elsewhere (by rank 0)."""
    path = out_dir / "last.safetensors"
    tensors, meta = loaded if loaded is not None else read_tensors(path)
    try:
        doc = json.loads(meta["state"])
    except (KeyError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"{path}: no valid training state in its metadata") from exc
    if doc.get("format") != STATE_FORMAT:
        raise CheckpointError(f"{path}: format {doc.get('format')!r}, expected {STATE_FORMAT!r}")
    if doc.get("fingerprint") != fingerprint:
        diff = [k for k in fingerprint if doc.get("fingerprint", {}).get(k) != fingerprint[k]]
        raise CheckpointError(f"{path}: cannot resume: the run was started with different "
                              f"{', '.join(diff)}; use a new out_dir or resume=False")
    model_sd = {k[len("model."):]: v for k, v in tensors.items() if k.startswith("model.")}
    try:
        model.load_state_dict(model_sd, strict=True)
        for name, module in (extras or {}).items():
            module.load_state_dict({k[len(name) + 1:]: v for k, v in tensors.items()
                                    if k.startswith(name + ".")}, strict=True)
        opt.load_state_dict(_optimizer_state(tensors, doc["optimizer"]))
    except (RuntimeError, KeyError, ValueError) as exc:
        raise CheckpointError(f"{path}: training state does not fit the model ({exc})") from exc
    torch.set_rng_state(tensors["rng.torch"])
    gen.set_state(tensors["rng.shuffle"])
    return doc


def _read_or_error(path: Path):
    """``read_tensors(path)``, or the ``CheckpointError`` it raised (rank 0 sends either)."""
    try:
        return read_tensors(path)
    except CheckpointError as exc:
        return exc
