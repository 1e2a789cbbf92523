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

The loop is here (``train``, ``RunResult``); its parts live beside it and are re-exported:
``training_data`` (data checks, mini-batches, ``predict_logits`` / ``decide``),
``training_schedule`` (loss, learning-rate schedule, stages, optimizer) and ``training_state``
(the resumable state in ``last.safetensors``).
"""
from __future__ import annotations

import contextlib
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, List, Optional

import torch
from torch import nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from .checkpoint import atomic_save_tensors, atomic_write_json, read_tensors, save_checkpoint
from .config import ModelConfig, TrainConfig
from .errors import DataError
from .metrics import classification_metrics
from .models import batch_from_arrays, build_model, compute_norm_stats, dims_of
from .models.losses import aux_heads, aux_loss, aux_terms  # noqa: F401 (aux_terms: API)
from .training_data import (_frame_rate, _index, _labels_tensor, decide,  # noqa: F401
                            predict_logits, random_crops, stage_batch, stage_rows,
                            validate_feature_set)
from .training_schedule import (_check_train_config, class_weights, loss_fn,  # noqa: F401
                                lr_at, make_optimizer, stage_plan)
from .training_state import (RESUMABLE_CHANGES, STATE_FORMAT, _fingerprint,  # noqa: F401
                             _load_state, _read_or_error, _save_state)


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


# ------------------------------------------------------------------ helpers
def ema_update_fn(decay: float):
    """The weight average's update: floating tensors (weights, BatchNorm statistics) move by
    an exponential moving average with ``decay``; any other tensor is copied (integer buffers
    such as a head's constant index tables: torch's EMA would round ``0.9·a + 0.1·a`` down,
    so an index of 192 could drift to 191 over the steps)."""
    average = get_ema_multi_avg_fn(decay)

    def update(ema_list, cur_list, n_averaged):
        floating = [(e, c) for e, c in zip(ema_list, cur_list) if e.is_floating_point()]
        for e, c in zip(ema_list, cur_list):
            if not e.is_floating_point():
                e.copy_(c)
        if floating:
            average([e for e, _ in floating], [c for _, c in floating], n_averaged)

    return update


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
        ema = (AveragedModel(model, multi_avg_fn=ema_update_fn(train_cfg.ema_decay),
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
        x_no_notes = (stage_batch(x_va, tuple(m for m in model.modalities if m != "symbolic"))
                      if "symbolic" in getattr(model, "modalities", ()) and
                      len(model.modalities) > 1 else None)
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
            metrics = {"best_epoch": state["best_epoch"],
                       "best_val_macro_f1": state["best_val_metrics"].get("macro_f1",
                                                                          state["best_f1"]),
                       "best_val_score": state["best_f1"],
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
                score = f1
                if not stage1 and x_no_notes is not None:
                    # what a user without MIDI files gets; selection weighs it in
                    nn_logits = (predict_logits(scored, x_no_notes) if ddp is None else
                                 distributed.predict_shared(ddp, predict_logits, scored,
                                                            x_no_notes, C))
                    f1_nn = classification_metrics(
                        fs_va.labels, decide(nn_logits, multilabel), C, multilabel=multilabel,
                        label_names=names)["macro_f1"]
                    record["val_macro_f1_without_notes"] = f1_nn
                    w = train_cfg.select_without_notes
                    score = (1.0 - w) * f1 + w * f1_nn
                    record["val_score"] = score
                if K:
                    record["stage"] = 1 if epoch + 1 < K else 2
                state["history"].append(record)
                state["epoch"] = epoch + 1
                if stage1:
                    pass  # a model of the stage-1 modalities only: never kept as the best
                elif score > state["best_f1"]:  # best_f1: the selection score
                    state.update(best_f1=score, best_epoch=epoch + 1, bad_epochs=0,
                                 best_val_metrics=dict(vm, **(
                                     {"macro_f1_without_notes": record[
                                         "val_macro_f1_without_notes"]}
                                     if "val_macro_f1_without_notes" in record else {})))
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
                     best_val_f1=float(state["best_val_metrics"].get("macro_f1",
                                                                     state["best_f1"])),
                     epochs_run=state["epoch"],
                     stopped_early=stopped, history=state["history"],
                     val_metrics=state["best_val_metrics"], checkpoint=ckpt,
                     seconds=time.perf_counter() - t_start)
