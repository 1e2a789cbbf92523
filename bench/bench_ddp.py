"""Data-parallel training step time: one process versus two (torchrun, DDP over gloo).

The real model (``ModelConfig()`` defaults) trains on clips of the built-in folk features
through ``mmengine.training.train`` itself, one stage (``stage1_frac=0``: every modality, the
expensive stage 2 of a default run), global batch ``--batch`` clips, random crops as in a
default run. A step's time is an epoch's ``seconds`` (from the run's own history) divided by
its steps, taken from the last of ``--epochs`` epochs (the first warms the allocator up); the
validation split is cut to 8 clips so that it adds little to the epoch. Beside the wall time,
the CPU seconds of that epoch per step, summed over the processes: on a machine whose cores
other work shares, the wall time says how long a step took, the CPU time how much work DDP
added (communication, synchronised BatchNorm, the second process's own overheads).

Contenders, each a fresh launch per round, interleaved round by round (the harness's
``mmengine.harness.interleaved_rounds``: each round starts with the next contender; medians
with ``harness.median``). Not the harness's warm workers and timer: a step runs inside
``training.train`` under torchrun, in processes launched for it, and its time is the one the
run itself records (an epoch's seconds over its steps), not a call the harness could time.
    1proc-Nt   one process, ``--threads`` torch threads (default: all cores)
    2proc-1t   two processes under torchrun (``--standalone``), 1 thread each (same cores)
    1proc-1t   one process, 1 thread (what each rank of 2proc-1t has)
    2proc-1t-plainbn   with ``--probe-plain-bn``: 2proc-1t with per-process BatchNorm
               statistics (plain DDP, what SyncBatchNorm costs; trains a different model)

Run it under the bench lock:
    flock /tmp/mmengine-bench.lock python bench/bench_ddp.py --clips 256 --rounds 3

The subset of the feature cache is written once to ``--subset`` (default
/tmp/mmengine-bench-ddp/folk-<clips>.npz) so that each launch loads it in seconds.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from mmengine.harness import interleaved_rounds, median  # noqa: E402


def _subset_path(args) -> Path:
    return Path(args.subset or f"/tmp/mmengine-bench-ddp/folk-{args.clips}.npz")


def prepare(args) -> Path:
    """Write ``--clips`` training clips and 8 validation clips of the folk features."""
    path = _subset_path(args)
    if path.exists():
        return path
    from mmengine.api import load_features

    fs, _ = load_features("folk", progress=True)
    rng = np.random.default_rng(0)
    train = rng.permutation(np.flatnonzero(fs.split == "train"))[:args.clips]
    val = rng.permutation(np.flatnonzero(fs.split == "val"))[:8]
    rows = np.concatenate([np.sort(train), np.sort(val)])
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp.npz")
    np.savez(tmp, ids=np.asarray(fs.ids)[rows], mfcc=fs.mfcc[rows], logmel=fs.logmel[rows],
             labels=np.asarray(fs.labels)[rows], label_names=np.asarray(fs.label_names),
             split=np.asarray(fs.split)[rows], text=fs.text[rows], text_mask=fs.text_mask[rows],
             symbolic=fs.symbolic[rows], symbolic_mask=fs.symbolic_mask[rows])
    os.replace(tmp, path)
    return path


def worker(args) -> int:
    """One training run (one rank of it under torchrun); rank 0 prints a JSON line."""
    from mmengine.config import ModelConfig, TrainConfig
    from mmengine.features.dataset import FeatureSet
    from mmengine import distributed
    from mmengine.training import train

    if args.plain_bn:  # the probe: leave the BatchNorm layers as they are
        distributed.sync_batchnorm = lambda model: model

    z = np.load(args.worker)
    fs = FeatureSet(ids=[str(i) for i in z["ids"]], mfcc=z["mfcc"], logmel=z["logmel"],
                    labels=z["labels"], label_names=[str(n) for n in z["label_names"]],
                    split=z["split"], text=z["text"], text_mask=z["text_mask"],
                    symbolic=z["symbolic"], symbolic_mask=z["symbolic_mask"])
    cfg = dataclasses.replace(TrainConfig(), stage1_frac=0.0, max_epochs=args.epochs,
                              batch_size=args.batch, num_threads=args.threads)
    cpu = []  # this process's CPU seconds at the end of each epoch
    with tempfile.TemporaryDirectory() as out:
        res = train(fs, ModelConfig(), cfg, out, progress=False,
                    callback=lambda epoch, record: cpu.append(time.process_time()))
    n_train = int((fs.split == "train").sum())
    steps = -(-n_train // args.batch)
    cpu_last = cpu[-1] - cpu[-2] if len(cpu) > 1 else cpu[-1]
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:  # CPU seconds of every rank together
        import torch.distributed as td

        every = [None] * td.get_world_size()
        td.all_gather_object(every, cpu_last)
        cpu_last = sum(every)
    if os.environ.get("RANK", "0") == "0":
        print(json.dumps({"step_s": res.history[-1]["seconds"] / steps, "steps": steps,
                          "cpu_step_s": cpu_last / steps,
                          "epochs_s": [h["seconds"] for h in res.history],
                          "world": int(os.environ.get("WORLD_SIZE", "1")),
                          "threads": args.threads, "train_loss": res.history[-1]["train_loss"]}))
    return 0


def run_one(subset: Path, nproc: int, threads: int, args, plain_bn: bool = False) -> dict:
    me = [str(Path(__file__).resolve()), "--worker", str(subset), "--epochs", str(args.epochs),
          "--batch", str(args.batch), "--threads", str(threads)] + \
        (["--plain-bn"] if plain_bn else [])
    if nproc == 1:
        cmd = [sys.executable, *me]
    else:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone",
               "--nproc-per-node", str(nproc), *me]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{proc.stderr[-3000:]}")
    line = [x for x in proc.stdout.splitlines() if x.startswith("{")][-1]
    return dict(json.loads(line), launch_s=time.perf_counter() - t0)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--clips", type=int, default=256, help="training clips (default 256)")
    p.add_argument("--batch", type=int, default=64, help="global batch (default 64)")
    p.add_argument("--epochs", type=int, default=2, help="epochs per launch (last one timed)")
    p.add_argument("--rounds", type=int, default=3, help="interleaved rounds (default 3)")
    p.add_argument("--threads", type=int, default=os.cpu_count() or 1,
                   help="threads of the 1-process contender (default: all cores)")
    p.add_argument("--subset", help="feature subset file (default under /tmp)")
    p.add_argument("--json", help="also write the results here")
    p.add_argument("--probe-plain-bn", action="store_true",
                   help="add the 2proc-1t-plainbn contender (per-process BatchNorm)")
    p.add_argument("--worker", help=argparse.SUPPRESS)
    p.add_argument("--plain-bn", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        return worker(args)
    subset = prepare(args)
    contenders = {f"1proc-{args.threads}t": (1, args.threads, False), "2proc-1t": (2, 1, False),
                  "1proc-1t": (1, 1, False)}
    if args.probe_plain_bn:
        contenders["2proc-1t-plainbn"] = (2, 1, True)
    times = {name: [] for name in contenders}
    cpu = {name: [] for name in contenders}
    losses = {name: [] for name in contenders}
    launches = [0]

    def launch(name, _):
        nproc, threads, plain_bn = contenders[name]
        res = run_one(subset, nproc, threads, args, plain_bn)
        times[name].append(res["step_s"])
        cpu[name].append(res["cpu_step_s"])
        losses[name].append(res["train_loss"])
        launches[0] += 1
        print(f"round {(launches[0] - 1) // len(contenders) + 1} {name}: "
              f"{res['step_s'] * 1000:.0f} ms/step, "
              f"{res['cpu_step_s'] * 1000:.0f} CPU-ms/step, final loss "
              f"{res['train_loss']:.6f} "
              f"(epochs {[round(s, 2) for s in res['epochs_s']]} s, launch "
              f"{res['launch_s']:.0f} s)", flush=True)

    interleaved_rounds(list(contenders), [None], args.rounds, launch)
    base = median(times[f"1proc-{args.threads}t"])
    summary = {name: {"median_step_ms": median(t) * 1000,
                      "min_step_ms": min(t) * 1000,
                      "speedup_vs_1proc": base / median(t),
                      "median_cpu_ms": median(cpu[name]) * 1000}
               for name, t in times.items()}
    print(f"\nglobal batch {args.batch}, {args.clips} training clips, "
          f"{-(-args.clips // args.batch)} steps/epoch, {args.rounds} rounds, {os.cpu_count()} cores")
    print("| contender | median ms/step | min ms/step | speed vs 1 process | CPU-ms/step "
          "(all processes) |")
    print("|---|---:|---:|---:|---:|")
    for name, s in summary.items():
        print(f"| {name} | {s['median_step_ms']:.0f} | {s['min_step_ms']:.0f} | "
              f"{s['speedup_vs_1proc']:.2f}x | {s['median_cpu_ms']:.0f} |")
    if args.json:
        Path(args.json).write_text(json.dumps({"args": vars(args), "times_s": times,
                                               "cpu_s": cpu, "train_loss": losses,
                                               "summary": summary}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
