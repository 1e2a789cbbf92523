"""The label's own analysis run on each clip: how far any model can go on ``vocal``.

The ``vocal`` label is the mode music21's key analysis (``Stream.analyze("key")``,
Krumhansl–Schmuckler with its default Aarden–Essen profiles) gives the *whole* chorale. Each
clip is a 30 s cut of it, rendered from the notes in the clip's MIDI file. Running the same analysis on the clip's own notes shows how
often the clip still carries its label: a model that reads the notes perfectly cannot do much
better than that agreement (a modulating chorale's 30 s cut can be in the other mode).

Command (the figures in docs/DATA.md and docs/results.md)::

    python -m mmengine.data.corpus.ceiling vocal

prints, per split, the clips whose analysed mode equals the label, the accuracy and the
macro-F1 of that "analysis as a classifier", and writes ``ceiling.json`` beside the manifest.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Dict, List

from ..._ext import require


def clip_mode(midi_path: Path) -> str:
    """"major" / "minor" of music21's key analysis of the notes in one MIDI file."""
    music21 = require("music21")
    # forceSource: no pickled copy written per file (10× slower, and nothing to reuse)
    score = music21.converter.parse(str(midi_path), format="midi", forceSource=True)
    return str(score.analyze("key").mode)


def measure(task: str = "vocal", progress: bool = True) -> Dict[str, dict]:
    """Agreement of each clip's analysed mode with its label, per split of the persisted split
    (``{"train": {"n", "agree", "accuracy", "macro_f1"}, ...}``)."""
    from sklearn.metrics import accuracy_score, f1_score
    from tqdm.auto import tqdm

    from .recipes import default_dir

    root = default_dir(task)
    manifest = root / "manifest.jsonl"
    split_path = root / "manifest.split.json"
    if not manifest.exists() or not split_path.exists():
        raise FileNotFoundError(f"{root}: build the data set and its split first "
                                f"(mmengine data build {task} && mmengine features {task})")
    assignment = json.loads(split_path.read_text())["assignment"]
    rows: List[dict] = [json.loads(line) for line in manifest.read_text().splitlines() if line]
    labels = sorted({r["label"] for r in rows})
    if set(labels) != {"major", "minor"}:
        raise ValueError(f"the key-analysis ceiling is defined for mode labels, not {labels}")
    out: Dict[str, dict] = {}
    per_split: Dict[str, tuple] = {}
    for r in tqdm(rows, desc=f"key analysis ({task})", disable=not progress):
        split = assignment.get(r["id"])
        if split is None or not r.get("midi_path"):
            continue
        mode = clip_mode(root / r["midi_path"])
        y, p = per_split.setdefault(split, ([], []))
        y.append(labels.index(r["label"]))
        p.append(labels.index(mode) if mode in labels else 1 - labels.index(r["label"]))
    for split, (y, p) in per_split.items():
        # what mmengine.metrics computes (scikit-learn, labels=range(C), zero_division=0),
        # called directly: data/ sits below the metrics module
        out[split] = {"n": len(y), "agree": int(sum(a == b for a, b in zip(y, p))),
                      "accuracy": float(accuracy_score(y, p)),
                      "macro_f1": float(f1_score(y, p, labels=list(range(len(labels))),
                                                 average="macro", zero_division=0))}
    (root / "ceiling.json").write_text(json.dumps(out, indent=2))
    return out


def main(argv: List[str]) -> int:
    task = argv[0] if argv else "vocal"
    res = measure(task)
    for split in ("train", "val", "test"):
        if split in res:
            r = res[split]
            print(f"{split}: {r['agree']}/{r['n']} clips agree with the label "
                  f"(accuracy {r['accuracy']:.3f}, macro-F1 {r['macro_f1']:.3f})")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
