"""One rank of a data-parallel training run for tests/test_distributed.py (launched by
torchrun): trains ``mmengine.training.train`` on test_train's structured synthetic clips.

    python -m torch.distributed.run --standalone --nproc-per-node 2 tests/ddp_worker.py \\
        SETTINGS.json OUT_DIR REPORT_DIR [--resume]

SETTINGS.json: {"model": {ModelConfig fields}, "train": {TrainConfig fields},
"aux_dropout": p (optional: the auxiliary heads' dropout, fixed at 0.5 in training.aux_heads),
"kill_rank_after_epoch": [rank, epoch] (optional: that rank SIGKILLs itself after the epoch's
state is saved, as a crashed node would)}. Every rank writes REPORT_DIR/rank<r>.json (its
history, world size) and REPORT_DIR/rank<r>.safetensors (its model's weights at the end).
"""
from __future__ import annotations

import dataclasses
import json
import os
import signal
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from test_train import feature_set  # noqa: E402  (the same clips as the training tests)

from mmengine.checkpoint import atomic_save_tensors  # noqa: E402
from mmengine.config import ModelConfig, TrainConfig  # noqa: E402
from mmengine import training  # noqa: E402
  # noqa: E402


def main(argv) -> int:
    settings = json.loads(Path(argv[0]).read_text())
    out, report = Path(argv[1]), Path(argv[2])
    resume = "--resume" in argv[3:]
    tuples = lambda d: {k: tuple(v) if isinstance(v, list) else v for k, v in d.items()}
    model_cfg = dataclasses.replace(ModelConfig(), **tuples(settings["model"]))
    train_cfg = dataclasses.replace(TrainConfig(), **tuples(settings["train"]))
    rank = int(os.environ["RANK"])
    if "aux_dropout" in settings:
        heads = training.aux_heads
        training.aux_heads = lambda model, n: heads(model, n, dropout=settings["aux_dropout"])
    kill = settings.get("kill_rank_after_epoch")

    def callback(epoch, record):
        if kill and rank == kill[0] and epoch == kill[1]:
            os.kill(os.getpid(), signal.SIGKILL)

    res = training.train(feature_set(), model_cfg, train_cfg, out, progress=False, resume=resume,
                callback=callback)
    report.mkdir(parents=True, exist_ok=True)
    (report / f"rank{rank}.json").write_text(json.dumps({
        "history": res.history, "world_size": int(os.environ["WORLD_SIZE"]),
        "checkpoint": str(res.checkpoint) if res.checkpoint else None,
        "best_epoch": res.best_epoch}))
    atomic_save_tensors(report / f"rank{rank}.safetensors", res.model.state_dict())
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
