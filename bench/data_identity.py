"""Is a build the same data as an earlier one? The SVM baseline is deterministic: on the same
clips, features and persisted split it gives the same test score. Symbolic features are cut back
to the 15 rows that existed before rows 15-17 were added (2026-12-06), so the score can be
compared with docs/results-first-design.md (vocal 0.6291, folk 0.5241).

    python bench/data_identity.py vocal|folk
"""
import dataclasses
import sys

from mmengine.api import load_features
from mmengine.metrics import classification_metrics
from mmengine.models import SklearnBaseline

task = sys.argv[1]
fs, _ = load_features(task, progress=False)
fs = dataclasses.replace(fs, symbolic=fs.symbolic[:, :15])
tr, va, te = (fs.subset(s) for s in ("train", "val", "test"))
b = SklearnBaseline("svm").fit(tr, va)
m = classification_metrics(te.labels, b.predict(te), len(fs.label_names))
print(task, "svm (15 symbolic rows) test macro-F1", round(m["macro_f1"], 4),
      "accuracy", round(m["accuracy"], 4))
