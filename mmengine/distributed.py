"""Data-parallel training on ``torch.distributed`` (torchrun + DDP).

``mmengine.training.train`` calls ``setup()``; under ``torchrun`` (``WORLD_SIZE`` > 1) it joins
the process group and the run becomes data-parallel, otherwise nothing here is used and
training is the single-process loop, unchanged. How a run is split, and why it trains like one
process at the same global batch:

- **Batches.** Every rank draws the same permutation of the training clips from the shared
  shuffle generator (seeded by ``TrainConfig.seed``, advanced every epoch, saved in
  ``last.safetensors``), cuts it into the same global batches of ``TrainConfig.batch_size``
  clips as one process does, and takes its contiguous share of each (``Dist.part``; sizes
  differ by at most one). This is ``DistributedSampler``'s job (a permutation seeded per
  epoch, a disjoint share per rank) without its padding: no clip is counted twice, the last
  short batch stays short, and random crops are drawn for the whole global batch from the
  same generator, so each clip gets the window it gets in one process.
- **Loss and gradients.** A rank's loss is its clips' part of the global batch's loss (the
  sum of their per-clip losses over the global batch's normaliser: clip count, class-weight
  sum, or stream-mask sums for the auxiliary losses), times the world size, because DDP
  averages gradients: the averaged gradient is the global batch's gradient.
- **BatchNorm.** Training-mode statistics are the global batch's (``SyncBatchNorm``, which,
  unlike ``torch.nn.SyncBatchNorm``, also runs on CPU with gloo).
- **Unused parameters.** Stage 1 of two-stage training leaves the other modalities out of the
  batches, so their stems get no gradient: DDP runs with ``find_unused_parameters``; a
  parameter unused on every rank keeps ``grad=None``, as in one process (the optimiser skips
  it). The switch to stage 2 is a function of the epoch: it happens on every rank at once.
- **Metrics.** Each rank scores its share of the validation clips; the logits are gathered on
  every rank, so every rank computes the same metrics and takes the same best-epoch and
  early-stopping decisions.
- **Files.** Rank 0 alone reads and writes the run folder (atomic writes, as in one process);
  on ``resume`` it reads ``last.safetensors`` and sends it to the other ranks, so the folder
  need not be visible from other nodes. Each rank's own torch RNG state (dropout, modality
  dropout, SpecAugment) is saved too; rank 0's stream is the single-process one.

What differs from one process: the random draws of the global torch RNG (dropout and the
model's augmentations) are per rank, and sums are reduced in another order (float rounding).
With those augmentations off, a 2-process run follows the single-process loss trajectory to
float precision (tests/test_distributed.py).
"""
from __future__ import annotations

import atexit
import contextlib
import datetime
import inspect
import logging
import os
import sys
from dataclasses import dataclass
from typing import Dict, Iterator, List, Optional, Sequence

import numpy as np
import torch
from torch import nn

from .config import DistConfig
from .errors import MMEngineError

log = logging.getLogger(__name__)


class DistributedError(MMEngineError):
    """torch.distributed is missing, or a launch or collective step failed."""


def world_size_from_env() -> int:
    """``WORLD_SIZE`` as torchrun sets it (1 when not launched by torchrun)."""
    try:
        return int(os.environ.get("WORLD_SIZE", "1"))
    except ValueError:
        raise DistributedError(f"WORLD_SIZE={os.environ['WORLD_SIZE']!r} is not an integer") \
            from None


def default_backend(device: torch.device = torch.device("cpu")) -> str:
    """NCCL for CUDA tensors, gloo otherwise (training in this project runs on the CPU)."""
    return "nccl" if device.type == "cuda" else "gloo"


# ------------------------------------------------------------------ the process group
@dataclass(frozen=True)
class Dist:
    """This process's place in the process group."""

    rank: int
    world: int
    backend: str
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        """Rank 0: the one that reads and writes the run folder and shows progress."""
        return self.rank == 0

    def part(self, n: int) -> torch.Tensor:
        """Positions (into a global batch of ``n`` clips) of this rank's share: a contiguous
        run, shares differing by at most one clip (empty when ``n`` < world size)."""
        return torch.tensor_split(torch.arange(n), self.world)[self.rank]

    def barrier(self) -> None:
        import torch.distributed as td

        td.barrier()

    def broadcast(self, obj):
        """Rank 0's ``obj`` on every rank (pickled). An exception sent by rank 0 is raised on
        every rank, so a failure rank 0 finds (e.g. an unreadable run folder) stops the whole
        group instead of leaving the others waiting."""
        import torch.distributed as td

        box = [obj if self.is_main else None]
        td.broadcast_object_list(box, src=0)
        if isinstance(box[0], BaseException):
            raise box[0]
        return box[0]

    def sum(self, value: torch.Tensor) -> torch.Tensor:
        """Sum over ranks of a tensor (a copy; float64 for scalars passed as Python floats)."""
        import torch.distributed as td

        out = torch.as_tensor(value, dtype=torch.float64 if not torch.is_tensor(value)
                              else value.dtype).clone()
        td.all_reduce(out)
        return out

    def gather_rows(self, local: torch.Tensor) -> torch.Tensor:
        """Concatenation in rank order of every rank's (n_r, ...) tensor, on every rank."""
        import torch.distributed as td

        parts: List[Optional[torch.Tensor]] = [None] * self.world
        td.all_gather_object(parts, local.detach().cpu())
        return torch.cat(parts)

    def rng_states(self) -> Dict[str, torch.Tensor]:
        """Every rank's torch RNG state, gathered: on rank 0 ``{"rng.torch.rank<r>": state}``
        for ranks 1.. (rank 0's own is saved as ``rng.torch``); empty elsewhere."""
        import torch.distributed as td

        states: List[Optional[torch.Tensor]] = [None] * self.world
        td.all_gather_object(states, torch.get_rng_state())
        if not self.is_main:
            return {}
        return {f"rng.torch.rank{r}": s for r, s in enumerate(states) if r > 0}

    def seed_rank(self, seed: int) -> None:
        """Give ranks 1.. their own global torch RNG stream (dropout, modality dropout and the
        model's augmentations), derived from ``seed`` and the rank; rank 0 keeps the
        single-process stream. Call after the model is built (initialisation is the same
        everywhere, and DDP starts from rank 0's weights anyway)."""
        if self.rank > 0:
            torch.manual_seed(int(np.random.SeedSequence([seed, self.rank]).generate_state(1)[0]))

    def restore_rng(self, tensors: Dict[str, torch.Tensor], seed: int, epoch: int) -> None:
        """After a resume (which set every rank's RNG to rank 0's saved state): ranks 1.. take
        their own saved state; a rank the interrupted run did not have (more processes now)
        gets a fresh stream from ``seed``, the rank and the epoch (the run goes on, but its
        dropout draws differ from an uninterrupted run's)."""
        if self.rank == 0:
            return
        state = tensors.get(f"rng.torch.rank{self.rank}")
        if state is not None:
            torch.set_rng_state(state)
            return
        log.warning("rank %d: no saved RNG state (the interrupted run had fewer processes); "
                    "a fresh dropout stream from the seed, the rank and the epoch", self.rank)
        torch.manual_seed(int(np.random.SeedSequence([seed, self.rank, epoch])
                              .generate_state(1)[0]))


def setup(cfg: DistConfig = DistConfig()) -> Optional[Dist]:
    """Join the process group when launched by torchrun with more than one process (or use
    the group the caller initialised); None for a single process.

    The backend is ``cfg.backend``, or ``MMENGINE_DIST_BACKEND``, or ``default_backend()``.
    """
    try:
        import torch.distributed as td
    except ImportError as exc:  # pragma: no cover - every torch wheel here ships it
        raise DistributedError("this torch build has no torch.distributed") from exc
    if td.is_available() and td.is_initialized():
        world = td.get_world_size()
        return (Dist(td.get_rank(), world, td.get_backend(), _local_rank()) if world > 1
                else None)
    if world_size_from_env() <= 1:
        return None
    if not td.is_available():
        raise DistributedError("WORLD_SIZE > 1 but this torch build has no torch.distributed")
    backend = os.environ.get("MMENGINE_DIST_BACKEND") or (
        default_backend() if cfg.backend == "auto" else cfg.backend)
    try:
        td.init_process_group(backend, timeout=datetime.timedelta(seconds=cfg.timeout_s))
    except (RuntimeError, ValueError) as exc:
        raise DistributedError(f"could not join the process group ({backend}): {exc}") from exc
    atexit.register(_destroy)
    dist = Dist(td.get_rank(), td.get_world_size(), backend, _local_rank())
    log.info("rank %d of %d (%s)", dist.rank, dist.world, backend)
    return dist


def _local_rank() -> int:
    return int(os.environ.get("LOCAL_RANK", "0"))


def _destroy() -> None:
    import torch.distributed as td

    if td.is_initialized():
        td.destroy_process_group()


@contextlib.contextmanager
def main_first(dist: Optional[Dist]) -> Iterator[None]:
    """Run the body on each node's first process (``LOCAL_RANK`` 0) first, then on the other
    processes: features are extracted and cached once per node (the cache writes atomically,
    so nodes sharing one cache folder only repeat work), not by every process at once."""
    if dist is None:
        yield
        return
    first = dist.local_rank == 0
    if not first:
        dist.barrier()
    try:
        yield
    finally:
        if first:
            dist.barrier()


# ------------------------------------------------------------------ synchronised BatchNorm
class _AllReduceSum(torch.autograd.Function):
    """Sum over ranks, differentiable: the gradient of every rank's input is the sum of the
    gradients of the output over ranks."""

    @staticmethod
    def forward(ctx, x):
        import torch.distributed as td

        y = x.clone()
        td.all_reduce(y)
        return y

    @staticmethod
    def backward(ctx, grad):
        import torch.distributed as td

        g = grad.contiguous().clone()
        td.all_reduce(g)
        return g


#: 1.0, or 0.0 while a rank without clips in the global batch runs a stand-in clip
_share = 1.0


@contextlib.contextmanager
def _stand_in() -> Iterator[None]:
    global _share
    old, _share = _share, 0.0
    try:
        yield
    finally:
        _share = old


class SyncBatchNorm(nn.modules.batchnorm._BatchNorm):
    """BatchNorm over the global batch: in training mode the mean and variance are those of
    every rank's clips together (one all-reduce forward, one backward), so the statistics,
    running averages and gradients are those of one process seeing the whole batch. Eval mode
    and a process without a process group: plain BatchNorm. Same parameters and buffers (and
    state-dict keys) as the ``nn.BatchNorm1d/2d`` it replaces."""

    def _check_input_dim(self, x: torch.Tensor) -> None:
        if x.dim() < 2:
            raise ValueError(f"expected at least 2D input, got {x.dim()}D")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        import torch.distributed as td

        if not self.training or not self.track_running_stats or not td.is_initialized():
            return super().forward(x)
        dims = [0] + list(range(2, x.dim()))
        shape = [1, -1] + [1] * (x.dim() - 2)
        share, C = float(_share), x.shape[1]
        # one all-reduce of the sums of x and x² (and the count), taken about the running
        # mean (the same on every rank) so that E[x²] - E[x]² does not cancel badly
        shift = self.running_mean.detach()
        xc = x - shift.reshape(shape)
        count = x.new_tensor([x.numel() // C * share])
        stats = _AllReduceSum.apply(torch.cat([xc.sum(dims) * share,
                                               (xc * xc).sum(dims) * share, count]))
        n = stats[-1].detach()
        mean_c = stats[:C] / n
        var = (stats[C:2 * C] / n - mean_c * mean_c).clamp(min=0.0)
        mean = mean_c + shift
        y = (x - mean.reshape(shape)) * torch.rsqrt(var + self.eps).reshape(shape)
        if self.affine:
            y = y * self.weight.reshape(shape) + self.bias.reshape(shape)
        with torch.no_grad():
            self.num_batches_tracked.add_(1)
            f = (self.momentum if self.momentum is not None
                 else 1.0 / float(self.num_batches_tracked))
            self.running_mean.mul_(1 - f).add_(mean.detach(), alpha=f)
            unbiased = var.detach() * (n / (n - 1)) if float(n) > 1 else var.detach()
            self.running_var.mul_(1 - f).add_(unbiased, alpha=f)
        return y


def _swap(module: nn.Module, make) -> None:
    for name, child in module.named_children():
        new = make(child)
        if new is not child:
            setattr(module, name, new)
        else:
            _swap(child, make)


def _rebuild(old: nn.modules.batchnorm._BatchNorm, cls) -> nn.Module:
    """``old``'s parameters and buffers (the same objects: an optimizer built on them is still
    valid) in a module of class ``cls``."""
    new = cls.__new__(cls)
    nn.Module.__init__(new)
    for key in ("num_features", "eps", "momentum", "affine", "track_running_stats"):
        setattr(new, key, getattr(old, key))
    for name, p in old._parameters.items():
        new._parameters[name] = p
    for name, b in old._buffers.items():
        new._buffers[name] = b
    new._non_persistent_buffers_set = set(old._non_persistent_buffers_set)
    new.train(old.training)
    if cls is SyncBatchNorm:
        new._origin = type(old)
    return new


def sync_batchnorm(model: nn.Module) -> nn.Module:
    """Replace every ``nn.BatchNorm1d/2d/3d`` of ``model`` (in place) by a ``SyncBatchNorm``
    sharing its parameters and buffers; ``model`` is returned."""
    _swap(model, lambda m: _rebuild(m, SyncBatchNorm)
          if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)) else m)
    return model


def plain_batchnorm(model: nn.Module) -> nn.Module:
    """Undo ``sync_batchnorm`` (in place); ``model`` is returned."""
    _swap(model, lambda m: _rebuild(m, m._origin) if isinstance(m, SyncBatchNorm) else m)
    return model


# ------------------------------------------------------------------ the DDP step
class _Step(nn.Module):
    """The model and the auxiliary heads as one module, so that DDP sees every trained
    parameter, with a forward that returns this rank's part of the global batch's loss."""

    def __init__(self, model: nn.Module, aux: Optional[nn.ModuleDict]):
        super().__init__()
        self.model = model
        self.aux = aux

    def forward(self, xb, y, y_all, *, weight, multilabel: bool, aux_weight: float,
                world: int):
        from .models.losses import aux_terms

        if self.aux is None:
            logits = self.model(xb)
        else:
            parts: Dict[str, tuple] = {}
            seq, late = self.model.encode(xb, parts=parts)
            logits = self.model.classifier(seq, late)
        # the global batch's normaliser (every rank knows the global batch's labels)
        if multilabel:
            per = nn.functional.binary_cross_entropy_with_logits(logits, y, reduction="sum")
            norm = float(y_all.numel())
        else:
            per = nn.functional.cross_entropy(logits, y, weight=weight, reduction="sum")
            norm = float(weight[y_all].sum()) if weight is not None else float(len(y_all))
        loss = per / norm
        if self.aux is not None:
            terms = aux_terms(self.aux, parts, y, multilabel, weight)
            if terms:
                import torch.distributed as td

                norms = torch.stack([t[1].detach().float() for t in terms]) * float(_share)
                td.all_reduce(norms)  # the stream-mask sums of the global batch
                kept = [num / g for (num, _), g in zip(terms, norms.tolist()) if g > 0]
                if kept:
                    loss = loss + aux_weight * torch.stack(kept).mean()
        return loss * (world * float(_share))


class DataParallelStep:
    """One training step of a rank: its share of the global batch through DDP."""

    def __init__(self, dist: Dist, model: nn.Module, aux: Optional[nn.ModuleDict]):
        from torch.nn.parallel import DistributedDataParallel as DDP

        self.dist = dist
        # buffers (BatchNorm running statistics) are computed from global statistics and so
        # equal on every rank: no per-step broadcast of rank 0's
        params = inspect.signature(DDP.__init__).parameters
        quiet = ({"forward_sync_buffers": False} if "forward_sync_buffers" in params
                 else {"broadcast_buffers": False})
        self.net = DDP(_Step(model, aux), find_unused_parameters=True, **quiet)

    def loss(self, xb: Dict[str, torch.Tensor], y: torch.Tensor, y_all: torch.Tensor, *,
             weight: Optional[torch.Tensor], multilabel: bool, aux_weight: float,
             stand_in: bool = False) -> torch.Tensor:
        """This rank's loss for its clips ``xb``/``y`` of the global batch with labels
        ``y_all``; backward() on it gives, once DDP has averaged, the global batch's gradient
        on every rank. ``stand_in``: this rank has no clip in the global batch (a last batch
        smaller than the world size) and ``xb``/``y`` is one clip of it that counts for
        nothing (in the loss and in the BatchNorm statistics), because every rank must take
        part in every step."""
        ctx = _stand_in() if stand_in else contextlib.nullcontext()
        with ctx:
            return self.net(xb, y, y_all, weight=weight, multilabel=multilabel,
                            aux_weight=aux_weight, world=self.dist.world)

    def mean_loss(self, loss: torch.Tensor) -> float:
        """The global batch's loss (the mean over ranks of their losses)."""
        return float(self.dist.sum(loss.detach().double())) / self.dist.world


def predict_shared(dist: Dist, predict, model: nn.Module, batch: Dict[str, torch.Tensor],
                   n_classes: int) -> torch.Tensor:
    """``predict(model, batch)`` (eval-mode logits) of every row of ``batch``, computed in
    ``world`` contiguous shares and gathered on every rank in row order."""
    n = next(iter(batch.values())).shape[0]
    rows = dist.part(n)
    if len(rows):
        local = predict(model, {k: v[rows] for k, v in batch.items()})
    else:
        local = torch.zeros(0, n_classes)
    return dist.gather_rows(local)


# ------------------------------------------------------------------ launching
def torchrun_command(nproc: int, argv: Sequence[str], *, module: str = "mmengine",
                     extra: Sequence[str] = ()) -> List[str]:
    """The command that runs ``python -m <module> <argv>`` in ``nproc`` local processes under
    torchrun (``--standalone``: a rendezvous on a free local port)."""
    if nproc < 1:
        raise DistributedError(f"--nproc must be >= 1, got {nproc}")
    return [sys.executable, "-m", "torch.distributed.run", "--standalone",
            "--nproc-per-node", str(nproc), *extra, "-m", module, *argv]


def launch(nproc: int, argv: Sequence[str]) -> int:
    """Run ``mmengine <argv>`` in ``nproc`` local processes under torchrun; its exit code."""
    import subprocess

    if world_size_from_env() > 1:
        raise DistributedError("--nproc inside a torchrun launch: use one or the other")
    cmd = torchrun_command(nproc, argv)
    log.info("launching: %s", " ".join(cmd))
    return subprocess.call(cmd)
