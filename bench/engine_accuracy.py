"""Test-split accuracy of a trained run through each engine (fp32 and bf16): does an engine
keep the checkpoint's macro-F1? (Target: native bf16 within 0.5 point of fp32.)

For every (backend, dtype) an engine file is built from the run's checkpoint, the test split's
cached features (the ones the run was trained and scored on) go through
``Engine.predict_features``, and the predictions are scored with the project's metrics. The
checkpoint's torch model on the same inputs is the reference row.

    python bench/engine_accuracy.py RUN [--data DATA] [--engines native:fp32,native:bf16,onnx:fp32]
        [--json out.json]
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run", help="training run folder (checkpoint.json + safetensors)")
    ap.add_argument("--data", help="data set (default: the one recorded in the run)")
    ap.add_argument("--engines", default="native:fp32,native:bf16,onnx:fp32",
                    help="comma-separated backend:dtype pairs")
    ap.add_argument("--batch", type=int, default=32, help="clips per engine call")
    ap.add_argument("--json", help="write the rows here")
    args = ap.parse_args(argv)

    import torch

    from mmengine.api import load_features
    from mmengine.checkpoint import load_checkpoint
    from mmengine.evaluation import label_map
    from mmengine.export import build_engine
    from mmengine.metrics import classification_metrics
    from mmengine.models import batch_from_arrays
    from mmengine.runtime.engine import Engine

    run = Path(args.run)
    data = args.data
    if data is None:
        rec = run / "data.json"
        data = json.loads(rec.read_text())["data"] if rec.is_file() else None
    if data is None:
        ap.error("the run records no data set: pass --data")
    fs, _ = load_features(data, progress=False)
    test = fs.subset("test")
    model, meta = load_checkpoint(run)
    labels = list(meta["label_names"])
    y = label_map(labels, test.label_names, test.labels)
    batch = batch_from_arrays(test)
    n = len(y)

    def score(probs: np.ndarray) -> dict:
        m = classification_metrics(y, probs.argmax(1), len(labels), label_names=labels)
        return {k: m[k] for k in ("accuracy", "macro_f1")}

    rows = []
    with torch.no_grad():
        ref = torch.softmax(model.eval()(batch), dim=1).double().numpy()
    rows.append({"engine": "checkpoint (torch fp32)", **score(ref), "max_abs_prob_diff": 0.0})
    with tempfile.TemporaryDirectory() as tmp:
        for spec in args.engines.split(","):
            backend, dtype = spec.split(":")
            path = build_engine(run, Path(tmp) / f"{backend}-{dtype}.mme", backend=backend,
                                dtype=dtype)
            eng = Engine.load(path, backend=backend)
            probs = np.concatenate([
                eng.predict_features({k: batch[k][s:s + args.batch].numpy()
                                      for k in eng.input_names})
                for s in range(0, n, args.batch)])
            rows.append({"engine": f"{backend} {dtype}", **score(probs),
                         "max_abs_prob_diff": float(np.abs(probs - ref).max())})
    print(f"run {run}, data {data}, test clips {n}")
    print(f"{'engine':26s} {'accuracy':>9s} {'macro-F1':>9s} {'max |p - p_ref|':>16s}")
    for r in rows:
        print(f"{r['engine']:26s} {r['accuracy']:9.4f} {r['macro_f1']:9.4f} "
              f"{r['max_abs_prob_diff']:16.2e}")
    if args.json:
        Path(args.json).write_text(json.dumps({"run": str(run), "data": str(data), "n_test": n,
                                               "rows": rows}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
