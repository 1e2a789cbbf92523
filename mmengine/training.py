"""Training loop: Adam, mini-batches from in-memory tensors, early stopping on validation
macro-F1, best checkpoint kept, resumable bit for bit.

Files in ``out_dir``:
    last.safetensors   model + optimizer tensors + RNG states after the last finished epoch;
                       its metadata ``"state"`` (JSON) holds epoch, best metric, patience
                       counter, history, optimizer scalars; written atomically every epoch
    last.json          a readable copy of that JSON
    best.safetensors   model weights of the best validation epoch so far
    checkpoint.*       the final (best) checkpoint, see ``mmengine.checkpoint``
    history.json       per-epoch train loss, val loss, val accuracy / macro-F1, seconds

Reproducibility: ``TrainConfig.seed`` seeds the global torch RNG (initialisation, dropout,
modality dropout) and a separate generator for the shuffling; both states are saved every
epoch, so ``train(..., resume=True)`` after an interruption ends with the same weights as an
uninterrupted run (CPU, same thread count).
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, List, Optional, Tuple

import numpy as np
import torch
from torch import nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from .checkpoint import (atomic_save_tensors, atomic_write_json, read_tensors,
                         save_checkpoint)
from .config import MODALITIES, ModelConfig, TrainConfig, to_dict
from .errors import CheckpointError, DataError
from .metrics import classification_metrics
from .models import batch_from_arrays, build_model, compute_norm_stats, dims_of
from .models.fusion import batch_keys
from .models.losses import aux_heads, aux_loss, aux_terms  # noqa: F401 (aux_terms: API)

STATE_FORMAT = "mmengine-train-state/1"
#: TrainConfig fields that may change between an interrupted run and its resumption
RESUMABLE_CHANGES = ("max_epochs", "patience", "num_threads")


@dataclass
class RunResult:
    """Outcome of ``train``: the best model (eval mode) and where it was written."""

    out_dir: Path
    model: nn.Module
    best_epoch: int
    best_val_f1: float
    epochs_run: int
    stopped_early: bool
    history: List[dict] = field(default_factory=list)
    val_metrics: dict = field(default_factory=dict)
    checkpoint: Optional[Path] = None
    seconds: float = 0.0


# ------------------------------------------------------------------ data checks
def validate_feature_set(fs, splits: Tuple[str, ...] = ("train", "val")) -> None:
    """Raise ``DataError`` for data a model cannot be trained/evaluated on."""
    n = len(fs.ids)
    if n == 0:
        raise DataError("the feature set is empty (0 clips)")
    C = len(fs.label_names)
    checks = [("mfcc", fs.mfcc, 3), ("logmel", fs.logmel, 3)]
    for name, a, nd in checks:
        if a.ndim != nd or a.shape[0] != n:
            raise DataError(f"{name} has shape {a.shape}; expected {nd} dims with {n} rows")
    if fs.mfcc.shape[2] != fs.logmel.shape[2]:
        raise DataError(f"mfcc has {fs.mfcc.shape[2]} frames but logmel {fs.logmel.shape[2]}")
    for name in ("text", "symbolic"):
        a = getattr(fs, name)
        if a is not None and a.shape[0] != n:
            raise DataError(f"{name} has {a.shape[0]} rows, expected {n}")
    if fs.symbolic is not None and fs.symbolic.shape[2] != fs.logmel.shape[2]:
        raise DataError("symbolic features and audio have different frame counts")
    labels = np.asarray(fs.labels)
    if labels.shape[0] != n or len(fs.split) != n:
        raise DataError(f"labels ({labels.shape[0]}) / split ({len(fs.split)}) rows != {n}")
    if labels.ndim == 2:
        if labels.shape[1] != C:
            raise DataError(f"multi-hot labels have {labels.shape[1]} columns for {C} names")
    else:
        if C < 2:
            raise DataError(f"need at least 2 classes, got {C} ({fs.label_names})")
        bad = (labels < 0) | (labels >= C)
        if bad.any():
            raise DataError(f"unknown label index {sorted(set(labels[bad].tolist()))[:5]}; "
                            f"{C} classes are named")
    for name in ("mfcc", "logmel"):
        if not np.isfinite(getattr(fs, name)).all():
            raise DataError(f"{name} holds NaN or Inf values")
    for s in splits:
        rows = np.flatnonzero(np.asarray(fs.split) == s)
        if len(rows) == 0:
            raise DataError(f"the {s!r} split is empty")
    train_rows = np.asarray(fs.split) == "train"
    if "train" in splits:
        seen = (labels[train_rows].sum(0) > 0).sum() if labels.ndim == 2 else \
            len(np.unique(labels[train_rows]))
        if seen < 2 and labels.ndim == 1:
            raise DataError(f"the training split has only one class "
                            f"({fs.label_names[int(labels[train_rows][0])]!r})")
        if seen < 1:
            raise DataError("no positive label in the training split")


# ------------------------------------------------------------------ helpers
@contextlib.contextmanager
def _torch_settings(num_threads: int):
    old_threads = torch.get_num_threads()
    old_det = torch.are_deterministic_algorithms_enabled()
    old_warn = torch.is_deterministic_algorithms_warn_only_enabled()
    try:
        if num_threads > 0:
            torch.set_num_threads(num_threads)
        torch.use_deterministic_algorithms(True, warn_only=True)
        yield
    finally:
        torch.set_num_threads(old_threads)
        torch.use_deterministic_algorithms(old_det, warn_only=old_warn)


def _index(batch: Dict[str, torch.Tensor], idx: torch.Tensor) -> Dict[str, torch.Tensor]:
    return {k: v[idx] for k, v in batch.items()}


def loss_fn(multilabel: bool, weight: Optional[torch.Tensor] = None) -> nn.Module:
    """BCE-with-logits (multi-label) or cross-entropy, optionally with class weights."""
    if multilabel:
        return nn.BCEWithLogitsLoss()
    return nn.CrossEntropyLoss(weight=weight)


def class_weights(labels: np.ndarray, n_classes: int) -> torch.Tensor:
    """Inverse-frequency weights ``n / (C · count_c)`` of single-label training labels (a class
    absent from the training split gets weight 0)."""
    counts = np.bincount(np.asarray(labels, dtype=np.int64), minlength=n_classes).astype(float)
    w = np.where(counts > 0, counts.sum() / (n_classes * np.maximum(counts, 1)), 0.0)
    return torch.tensor(w, dtype=torch.float32)


def lr_at(step: int, total: int, cfg: TrainConfig, peak: Optional[float] = None) -> float:
    """Learning rate of optimizer step ``step`` (0-based) of ``total``: constant, or linear
    warm-up for ``warmup_frac`` of the steps then cosine decay to 0; ``peak`` defaults to
    ``cfg.lr``."""
    peak = cfg.lr if peak is None else peak
    if cfg.schedule == "constant":
        return peak
    warm = max(1, int(round(cfg.warmup_frac * total)))
    if step < warm:
        return peak * (step + 1) / warm
    t = (step - warm) / max(1, total - warm)
    return peak * 0.5 * (1.0 + math.cos(math.pi * min(1.0, t)))


def stage_plan(model: nn.Module, cfg: TrainConfig) -> Tuple[int, Tuple[str, ...]]:
    """``(epochs of stage 1, modalities of stage 1)`` for ``TrainConfig.stage1_frac``, or
    ``(0, ())`` when the run has one stage: staging off, a model without the modalities of
    stage 1 or with nothing else, or fewer than 2 epochs."""
    mods = tuple(getattr(model, "modalities", ()))
    kept = tuple(m for m in mods if m in cfg.stage1_modalities)
    if (cfg.stage1_frac <= 0 or not kept or len(kept) == len(mods) or cfg.max_epochs < 2
            or not hasattr(model, "close_streams")):
        return 0, ()
    epochs = min(max(int(round(cfg.stage1_frac * cfg.max_epochs)), 1), cfg.max_epochs - 1)
    return epochs, kept


def stage_batch(batch: Dict[str, torch.Tensor], kept: Tuple[str, ...]
                ) -> Dict[str, torch.Tensor]:
    """``batch`` without the keys of the modalities outside ``kept`` (they are then missing
    for every clip, and their stems are not run)."""
    drop = {k for m in MODALITIES if m not in kept for k in batch_keys(m)}
    return {k: v for k, v in batch.items() if k not in drop}


def stage_rows(batch: Dict[str, torch.Tensor], kept: Tuple[str, ...]) -> torch.Tensor:
    """Indices of the clips that have at least one modality of ``kept``."""
    n = next(iter(batch.values())).shape[0]
    has = torch.zeros(n, dtype=torch.bool)
    for m in kept:
        series, mask_key = batch_keys(m)
        if series not in batch:
            continue
        mask = batch.get(mask_key)
        has |= torch.ones(n, dtype=torch.bool) if mask is None else mask.reshape(n).bool()
    return torch.nonzero(has).reshape(-1)


def _check_train_config(cfg: TrainConfig) -> None:
    if not 0.0 <= cfg.stage1_frac < 1.0:
        raise ValueError(f"stage1_frac must be in [0, 1), got {cfg.stage1_frac}")
    unknown = [m for m in cfg.stage1_modalities if m not in MODALITIES]
    if unknown:
        raise ValueError(f"unknown stage1_modalities {unknown}; valid: {MODALITIES}")
    if cfg.stage2_lr < 0:
        raise ValueError(f"stage2_lr must be >= 0, got {cfg.stage2_lr}")
    if cfg.stage1_frac > 0 and cfg.ema_decay > 0:
        raise ValueError("stage1_frac and ema_decay cannot be combined (the average would mix "
                         "the two stages' weights)")


def make_optimizer(params, cfg: TrainConfig) -> torch.optim.Optimizer:
    """Adam (L2 penalty ``weight_decay``) or AdamW (decoupled decay)."""
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    if cfg.optimizer == "adam":
        return torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    raise ValueError(f"optimizer must be 'adamw' or 'adam', got {cfg.optimizer!r}")


def random_crops(batch: Dict[str, torch.Tensor], frames: int, gen: torch.Generator,
                 of: Optional[Tuple[int, torch.Tensor]] = None) -> Dict[str, torch.Tensor]:
    """Each clip's own random window of ``frames`` frames from every time series of ``batch``
    (keys whose last axis is the frame axis: mfcc, logmel, symbolic); other keys unchanged.
    Clips of at most ``frames`` frames are returned whole.

    ``of=(n, rows)``: ``batch`` holds the clips at positions ``rows`` of a batch of ``n``
    (a rank's share of a global batch): the windows are drawn for all ``n`` clips, so every
    rank advances ``gen`` alike and each clip gets the window it gets in one process."""
    T = batch["logmel"].shape[-1] if "logmel" in batch else batch["mfcc"].shape[-1]
    if frames <= 0 or frames >= T:
        return batch
    B = next(iter(batch.values())).shape[0]
    if of is None:
        start = torch.randint(0, T - frames + 1, (B,), generator=gen)
    else:
        start = torch.randint(0, T - frames + 1, (of[0],), generator=gen)[of[1]]
    idx = start[:, None] + torch.arange(frames)[None, :]  # (B, frames)
    out = dict(batch)
    for k in ("mfcc", "logmel", "symbolic"):
        if k in batch:
            v = batch[k]
            out[k] = torch.gather(v, 2, idx[:, None, :].expand(-1, v.shape[1], -1))
    return out


@torch.no_grad()
def predict_logits(model: nn.Module, batch: Dict[str, torch.Tensor],
                   batch_size: int = 256) -> torch.Tensor:
    """Logits (N, C) of ``model`` in eval mode over a batch dict, in chunks."""
    was = model.training
    model.eval()
    n = next(iter(batch.values())).shape[0]
    try:
        out = [model(_index(batch, torch.arange(s, min(n, s + batch_size))))
               for s in range(0, n, batch_size)]
    finally:
        model.train(was)
    return torch.cat(out)


def decide(logits: torch.Tensor, multilabel: bool) -> np.ndarray:
    """Predictions: argmax (N,), or (N, C) 0/1 with sigmoid > 0.5 for multi-label."""
    if multilabel:
        return (logits > 0).to(torch.int64).numpy()
    return logits.argmax(dim=1).numpy()


def _labels_tensor(labels: np.ndarray, multilabel: bool) -> torch.Tensor:
    t = torch.from_numpy(np.ascontiguousarray(labels))
    return t.float() if multilabel else t.long()


def _frame_rate(frontend_config) -> float:
    from .config import FrontendConfig

    cfg = frontend_config if frontend_config is not None else FrontendConfig()
    return cfg.sample_rate / cfg.hop_length


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


# ------------------------------------------------------------------ train
def train(feature_set, model_cfg: ModelConfig = ModelConfig(),
          train_cfg: TrainConfig = TrainConfig(), out_dir="runs/run", *, progress: bool = True,
          resume: bool = False, callback: Optional[Callable[[int, dict], None]] = None,
          audio_config=None, frontend_config=None, text_vectorizer=None) -> RunResult:
    """Train ``model_cfg`` on the ``"train"`` rows of ``feature_set``, select on ``"val"``.

    Args:
        feature_set: a ``FeatureSet`` (the ``"test"`` rows are not read).
        model_cfg, train_cfg: settings (``mmengine.config``).
        out_dir: run folder (created).
        progress: a tqdm bar per epoch (running loss; validation macro-F1 at the end).
        resume: continue from ``out_dir/last.safetensors`` when it exists (without it, an
            earlier run's ``last.*`` and ``best.safetensors`` in ``out_dir`` are deleted first).
        callback: ``callback(epoch, record)`` after each epoch's state is saved; raising
            ``KeyboardInterrupt`` there behaves like Ctrl-C.
        audio_config, frontend_config, text_vectorizer: stored in the final checkpoint.

    Returns:
        ``RunResult`` with the best model. On ``KeyboardInterrupt`` the best-so-far checkpoint
        is written (``checkpoint.*``, metrics marked ``interrupted``) and the interrupt is
        re-raised; ``resume=True`` continues from the last finished epoch.

    Under torchrun with more than one process (``WORLD_SIZE`` > 1) every process calls
    ``train`` with the same arguments and the run is data-parallel (``mmengine.distributed``:
    the same global batches of ``batch_size`` clips, shared out among the ranks). Rank 0
    alone reads and writes ``out_dir``; ``callback`` runs on every rank; on the other ranks
    the returned model holds the last epoch's weights and ``checkpoint`` is None.
    """
    from tqdm.auto import tqdm

    from . import distributed

    validate_feature_set(feature_set)
    _check_train_config(train_cfg)
    ddp = distributed.setup()  # None: one process, the plain loop below
    main = ddp is None or ddp.is_main
    progress = progress and main
    out_dir = Path(out_dir)
    if main:
        out_dir.mkdir(parents=True, exist_ok=True)
    if not resume and main:  # a fresh run never mixes with an earlier run's state in the folder
        for name in ("last.safetensors", "last.json", "best.safetensors"):
            (out_dir / name).unlink(missing_ok=True)
    t_start = time.perf_counter()
    fs_tr, fs_va = feature_set.subset("train"), feature_set.subset("val")
    dims = dims_of(feature_set)
    multilabel = dims["multilabel"]
    C = dims["n_classes"]
    names = list(feature_set.label_names)
    fingerprint = _fingerprint(fs_tr, model_cfg, train_cfg, dims)

    with _torch_settings(train_cfg.num_threads):
        torch.manual_seed(train_cfg.seed)
        gen = torch.Generator().manual_seed(train_cfg.seed + 1)
        model = build_model(model_cfg, dims)
        model.set_normalization(compute_norm_stats(fs_tr))
        if ddp is not None:
            distributed.sync_batchnorm(model)  # statistics of the global batch
            ddp.seed_rank(train_cfg.seed)
        K, kept = stage_plan(model, train_cfg)
        if K:  # max_epochs may change on resumption, but not where the switch falls
            fingerprint["stage1_epochs"] = K
        aux = aux_heads(model, C) if train_cfg.aux_weight > 0 else None
        params = list(model.parameters()) + (list(aux.parameters()) if aux is not None else [])
        opt = make_optimizer(params, train_cfg)
        ema = (AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(train_cfg.ema_decay),
                             use_buffers=True) if train_cfg.ema_decay > 0 else None)
        extras = {name: mod for name, mod in (("aux", aux), ("ema", ema)) if mod is not None}
        # the weights validated, kept as best and stored: the running average when there is one
        scored = ema.module if ema is not None else model
        state = {"epoch": 0, "best_f1": -math.inf, "best_epoch": -1, "bad_epochs": 0,
                 "history": [], "best_val_metrics": {}}
        if ddp is None and resume and (out_dir / "last.safetensors").exists():
            state = _load_state(out_dir, model, opt, gen, fingerprint, extras)
        elif ddp is not None and resume:
            # rank 0 reads the state (or the error) and every rank loads and checks it
            found = (out_dir / "last.safetensors").exists() if main else None
            loaded = ddp.broadcast(_read_or_error(out_dir / "last.safetensors")
                                   if main and found else None)
            if loaded is not None:
                state = _load_state(out_dir, model, opt, gen, fingerprint, extras, loaded)
                ddp.restore_rng(loaded[0], train_cfg.seed, state["epoch"])
        step = distributed.DataParallelStep(ddp, model, aux) if ddp is not None else None
        x_tr, y_tr = batch_from_arrays(fs_tr), _labels_tensor(fs_tr.labels, multilabel)
        x_va, y_va = batch_from_arrays(fs_va), _labels_tensor(fs_va.labels, multilabel)
        weight = (class_weights(fs_tr.labels, C) if train_cfg.class_weights and not multilabel
                  else None)
        criterion = loss_fn(multilabel, weight)
        val_criterion = loss_fn(multilabel)
        n, bs = len(fs_tr.ids), train_cfg.batch_size
        n_batches = (n + bs - 1) // bs
        total_steps = n_batches * train_cfg.max_epochs
        rows1 = stage_rows(x_tr, kept) if K else None
        if K and len(rows1) == 0:
            raise DataError(f"no training clip has any of stage1_modalities {kept}")
        n1 = len(rows1) if K else 0
        n_batches1 = (n1 + bs - 1) // bs
        crop = int(round(train_cfg.crop_seconds * _frame_rate(frontend_config)))
        common = dict(label_names=names, model_config=model_cfg, train_config=train_cfg,
                      audio_config=audio_config, frontend_config=frontend_config,
                      text_vectorizer=text_vectorizer,
                      # the record field the text came from, so an engine built from this
                      # checkpoint reads the same field (folk: titles, not lyrics)
                      extra={"text_field": getattr(feature_set, "text_field", None)})

        def finalize(interrupted: bool) -> Optional[Path]:
            if ddp is not None:
                distributed.plain_batchnorm(model)
                if not main:
                    return None
            best_path = out_dir / "best.safetensors"
            if not best_path.exists():
                return None
            best, _ = read_tensors(best_path)
            model.load_state_dict(best)
            model.eval()
            metrics = {"best_epoch": state["best_epoch"], "best_val_macro_f1": state["best_f1"],
                       "val": state["best_val_metrics"], "interrupted": interrupted,
                       "epochs_run": state["epoch"]}
            atomic_write_json(out_dir / "history.json", state["history"])
            return save_checkpoint(out_dir, model, metrics=metrics, history=state["history"],
                                   **common)

        try:
            while (state["epoch"] < train_cfg.max_epochs
                   and state["bad_epochs"] < train_cfg.patience):
                epoch = state["epoch"]
                t0 = time.perf_counter()
                model.train()
                if aux is not None:
                    aux.train()
                stage1 = epoch < K
                if stage1:
                    perm, nb = rows1[torch.randperm(n1, generator=gen)], n_batches1
                else:
                    perm, nb = torch.randperm(n, generator=gen), n_batches
                total, seen = 0.0, 0
                desc = f"epoch {epoch + 1}/{train_cfg.max_epochs}" + \
                    (f" (stage 1: {'+'.join(kept)})" if stage1 else "")
                bar = tqdm(total=nb, desc=desc, disable=not progress, leave=True,
                           dynamic_ncols=True)
                for b in range(nb):
                    idx = perm[b * bs:(b + 1) * bs]
                    if ddp is not None:  # this rank's share of the global batch idx
                        idx_all, rows = idx, ddp.part(len(idx))
                        stand_in = len(rows) == 0
                        idx = idx_all[rows] if not stand_in else idx_all[:1]
                    if stage1:
                        lr = lr_at(epoch * nb + b, K * nb, train_cfg)
                    elif K:
                        lr = lr_at((epoch - K) * nb + b, (train_cfg.max_epochs - K) * nb,
                                   train_cfg, train_cfg.stage2_lr or train_cfg.lr)
                    else:
                        lr = lr_at(epoch * nb + b, total_steps, train_cfg)
                    for group in opt.param_groups:
                        group["lr"] = lr
                    if ddp is None:
                        xb = random_crops(_index(x_tr, idx), crop, gen)
                    else:
                        xb = random_crops(_index(x_tr, idx), crop, gen,
                                          of=(len(idx_all), rows if not stand_in else
                                              torch.zeros(1, dtype=torch.long)))
                    if stage1:
                        xb = stage_batch(xb, kept)
                    if ddp is not None:
                        loss = step.loss(xb, y_tr[idx], y_tr[idx_all], weight=weight,
                                         multilabel=multilabel,
                                         aux_weight=train_cfg.aux_weight, stand_in=stand_in)
                    elif aux is None:
                        loss = criterion(model(xb), y_tr[idx])
                    else:
                        parts: Dict[str, tuple] = {}
                        seq, late = model.encode(xb, parts=parts)
                        loss = criterion(model.classifier(seq, late), y_tr[idx]) + \
                            train_cfg.aux_weight * aux_loss(aux, parts, y_tr[idx], multilabel,
                                                            weight)
                    opt.zero_grad(set_to_none=True)
                    loss.backward()
                    if train_cfg.grad_clip > 0:
                        nn.utils.clip_grad_norm_(params, train_cfg.grad_clip)
                    opt.step()
                    if ema is not None:
                        ema.update_parameters(model)
                    if ddp is not None:
                        idx = idx_all
                    total += (loss.item() if ddp is None else step.mean_loss(loss)) * len(idx)
                    seen += len(idx)
                    bar.update(1)
                    bar.set_postfix(loss=f"{total / seen:.4f}")
                if K and epoch + 1 == K:
                    # the switch: the model (now exactly as good with every modality present)
                    # goes on to stage 2 with a fresh optimizer; from here on it is scored
                    model.close_streams(kept)
                    opt = make_optimizer(params, train_cfg)
                    stage1 = False
                x_val = stage_batch(x_va, kept) if stage1 else x_va
                logits = (predict_logits(scored, x_val) if ddp is None else
                          distributed.predict_shared(ddp, predict_logits, scored, x_val, C))
                val_loss = float(val_criterion(logits, y_va))
                vm = classification_metrics(fs_va.labels, decide(logits, multilabel), C,
                                            multilabel=multilabel, label_names=names)
                f1 = vm["macro_f1"]
                bar.set_postfix(loss=f"{total / seen:.4f}", val_f1=f"{f1:.4f}")
                bar.close()
                record = {"epoch": epoch + 1, "train_loss": total / seen, "val_loss": val_loss,
                          "val_accuracy": vm["accuracy"], "val_macro_f1": f1,
                          "seconds": time.perf_counter() - t0}
                if K:
                    record["stage"] = 1 if epoch + 1 < K else 2
                state["history"].append(record)
                state["epoch"] = epoch + 1
                if stage1:
                    pass  # a model of the stage-1 modalities only: never kept as the best
                elif f1 > state["best_f1"]:
                    state.update(best_f1=f1, best_epoch=epoch + 1, bad_epochs=0,
                                 best_val_metrics=vm)
                    if main:
                        atomic_save_tensors(out_dir / "best.safetensors", scored.state_dict())
                else:
                    state["bad_epochs"] += 1
                state["fingerprint"] = fingerprint
                if ddp is None:
                    _save_state(out_dir, model, opt, gen, state, extras)
                else:
                    ranks_rng = ddp.rng_states()  # every rank takes part
                    if main:
                        _save_state(out_dir, model, opt, gen, dict(state, world_size=ddp.world),
                                    extras, more=ranks_rng)
                if callback is not None:
                    callback(epoch + 1, record)
        except KeyboardInterrupt:
            finalize(interrupted=True)
            raise
        stopped = state["bad_epochs"] >= train_cfg.patience
        ckpt = finalize(interrupted=False)
        if ddp is not None:
            ddp.barrier()  # the checkpoint is written when train returns on any rank
    return RunResult(out_dir=out_dir, model=model, best_epoch=state["best_epoch"],
                     best_val_f1=float(state["best_f1"]), epochs_run=state["epoch"],
                     stopped_early=stopped, history=state["history"],
                     val_metrics=state["best_val_metrics"], checkpoint=ckpt,
                     seconds=time.perf_counter() - t_start)
