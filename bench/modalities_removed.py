"""Macro-F1 of trained runs on one split with every modality and with modalities removed.

The figures behind "without the notes" in docs/results.md ("Choosing the default model" uses
the validation split only)::

    python bench/modalities_removed.py vocal runs/r4/vocal-sd runs/r3/vocal-meter
    python bench/modalities_removed.py folk runs/r4/folk-sd --split val

A removed modality is absent from the batch, as at inference without lyrics or MIDI files.
"""
from __future__ import annotations

import argparse

import torch

from mmengine.api import load_features
from mmengine.checkpoint import load_checkpoint
from mmengine.metrics import classification_metrics
from mmengine.models import batch_from_arrays
from mmengine.training import decide, predict_logits, stage_batch

CASES = (("all", ("mfcc", "mel", "text", "symbolic")),
         ("no notes", ("mfcc", "mel", "text")),
         ("no text", ("mfcc", "mel", "symbolic")),
         ("notes only", ("symbolic",)))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("data", help="built-in task or manifest the runs were trained on")
    ap.add_argument("runs", nargs="+", help="run folders (mmengine train --out)")
    ap.add_argument("--split", default="val", choices=("train", "val", "test"))
    args = ap.parse_args()
    torch.set_num_threads(1)
    fs = load_features(args.data, progress=False)[0].subset(args.split)
    x = batch_from_arrays(fs)
    print(f"macro-F1 on the {args.split} split ({len(fs.ids)} clips)")
    print("| run | " + " | ".join(name for name, _ in CASES) + " |")
    print("|---|" + "---|" * len(CASES))
    for run in args.runs:
        model, _ = load_checkpoint(run)
        cells = []
        for _, kept in CASES:
            pred = decide(predict_logits(model, stage_batch(x, kept)), False)
            m = classification_metrics(fs.labels, pred, len(fs.label_names))
            cells.append(f"{m['macro_f1']:.3f}")
        print(f"| {run} | " + " | ".join(cells) + " |", flush=True)


if __name__ == "__main__":
    main()
