"""Validation macro-F1 of a run's best and last weights with every modality, without the notes, and
without the notes and the chroma: a diagnostic of the audio path (docs/results.md, the audio
key scores' scale). Run: python bench/probe_without_notes.py RUN_DIR TASK
"""
import sys, torch, numpy as np
from safetensors.torch import load_file
from mmengine.api import load_features
from mmengine.checkpoint import load_checkpoint
from mmengine.models import batch_from_arrays
from mmengine.training import predict_logits, decide
from mmengine.metrics import classification_metrics
run, data = sys.argv[1], sys.argv[2]
fs, _ = load_features(data, progress=False)
va = fs.subset("val")
x = batch_from_arrays(va)
model, meta = load_checkpoint(run)
C = len(fs.label_names)
def f1(m, batch):
    return classification_metrics(va.labels, decide(predict_logits(m, batch), False), C)["macro_f1"]
views = {"all": x, "no notes": {k: v for k, v in x.items() if not k.startswith("symbolic")},
         "no notes, no chroma": {k: v for k, v in x.items() if not k.startswith("symbolic") and k != "chroma"}}
for name in ("best", "last"):
    if name == "last":
        sd = load_file(f"{run}/last.safetensors")
        sd = {k[len("model."):]: v for k, v in sd.items() if k.startswith("model.")} or sd
        missing = model.load_state_dict(sd, strict=False)
    print(name, {k: round(f1(model, v), 3) for k, v in views.items()}, flush=True)
