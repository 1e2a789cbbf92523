"""How far any model can go: the label's own analysis on ``vocal``, editors' agreement on ``folk``.

The ``vocal`` label is the mode music21's key analysis (``Stream.analyze("key")``,
Krumhansl–Schmuckler with its default Aarden–Essen profiles) gives the *whole* chorale. Each
clip is a 30 s cut of it, rendered from the notes in the clip's MIDI file. Running the same analysis on the clip's own notes shows how
often the clip still carries its label: a model that reads the notes perfectly cannot do much
better than that agreement (a modulating chorale's 30 s cut can be in the other mode).

Command (the figures in docs/DATA.md and docs/results.md)::

    python -m mmengine.data.corpus.ceiling vocal

prints, per split, the clips whose analysed mode equals the label, the accuracy and the
macro-F1 of that "analysis as a classifier", and writes ``ceiling.json`` beside the manifest.

The ``folk`` label is the dance type the collection's editor wrote in ``R:`` (or the section of
O'Neill's the tune sits in). Many melodies are in both collections, Ryan's and O'Neill's, under
two editors; how often the two name the same type for the same melody measures the label noise
(``editor_agreement``)::

    python -m mmengine.data.corpus.ceiling folk

prints the pairs of first renderings from different collections whose melodies match (Jaccard
similarity of their sets of 6-interval n-grams of the top voice, transposition- and tempo-free,
at least ``threshold``), how many carry the same label, which labels disagree, and writes
``agreement.json`` beside the manifest.
"""
from __future__ import annotations

import json
import math
import sys
from pathlib import Path
from typing import Dict, List, Set, Tuple

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


def melody_grams(midi_path: Path, n: int = 6) -> Set[tuple]:
    """The set of ``n``-interval runs of the top voice of a MIDI file (one pitch per onset, the
    highest): the melody, free of transposition and tempo."""
    import numpy as np

    pretty_midi = require("pretty_midi")
    notes = sorted((round(nt.start, 3), nt.pitch)
                   for ins in pretty_midi.PrettyMIDI(str(midi_path)).instruments
                   for nt in ins.notes)
    top: Dict[float, int] = {}
    for start, pitch in notes:
        top[start] = max(top.get(start, pitch), pitch)
    iv = np.diff(np.array([top[s] for s in sorted(top)], dtype=np.int64))
    return {tuple(iv[i:i + n].tolist()) for i in range(len(iv) - n + 1)}


def editor_error(agreement: float) -> float:
    """Per-editor error rate ``e`` between two classes when two editors erring independently
    at the same rate agree on ``agreement`` of the items: agreement = (1 - e)² + e²."""
    return (1 - math.sqrt(max(2 * agreement - 1, 0.0))) / 2


def _wilson(k: int, n: int, z: float = 1.96) -> Tuple[float, float]:
    """95 % Wilson score interval of a proportion ``k / n``."""
    if n == 0:
        return (0.0, 1.0)
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return (max(0.0, centre - half), min(1.0, centre + half))


def editor_agreement(task: str = "folk", threshold: float = 0.5, *, max_tunes_per_gram: int = 50,
                     progress: bool = True) -> dict:
    """Label agreement between collections on the same melody (``folk``'s label noise).

    Every first rendering (``rendering`` 0) is reduced to ``melody_grams``; two clips from
    different collections (the first folder of ``source``) whose gram sets have a Jaccard
    similarity ≥ ``threshold`` are the same melody under two editors. n-grams found in more
    than ``max_tunes_per_gram`` tunes (scale runs) are not used to find candidates.

    Returns ``{"pairs", "agree", "agreement", "interval95", "disagreements": {"a|b": n},
    "per_editor_error", "within_collection": {"pairs", "agree"}, "conflicting_groups":
    {split: groups}, "pairs_across_splits", "threshold"}``. ``per_editor_error`` reads the
    agreement as two editors erring independently at the same rate e between the classes that
    disagree: agreement = (1 - e)² + e², so e = (1 - sqrt(2·agreement - 1)) / 2.
    """
    from collections import Counter, defaultdict
    from itertools import combinations

    from tqdm.auto import tqdm

    from .recipes import default_dir

    root = default_dir(task)
    manifest, split_path = root / "manifest.jsonl", root / "manifest.split.json"
    if not manifest.exists() or not split_path.exists():
        raise FileNotFoundError(f"{root}: build the data set first (mmengine data build {task})")
    assignment = json.loads(split_path.read_text())["assignment"]
    every = [json.loads(line) for line in manifest.read_text().splitlines() if line]
    rows = [r for r in every
            if r.get("rendering", 0) == 0 and r.get("midi_path") and r.get("source")]
    grams = {r["id"]: melody_grams(root / r["midi_path"])
             for r in tqdm(rows, desc=f"melodies ({task})", disable=not progress)}
    by_id = {r["id"]: r for r in rows}
    tunes_of: Dict[tuple, List[str]] = defaultdict(list)
    for rid, gs in grams.items():
        for g in gs:
            tunes_of[g].append(rid)
    shared: Counter = Counter()
    for ids in tunes_of.values():
        if len(ids) <= max_tunes_per_gram:
            shared.update(combinations(sorted(ids), 2))
    collection = {rid: r["source"].split("/")[0] for rid, r in by_id.items()}
    across, within, splits_crossed = [], [], 0
    for (a, b), k in shared.items():
        if k / len(grams[a] | grams[b]) < threshold:
            continue
        (across if collection[a] != collection[b] else within).append((a, b))
        splits_crossed += assignment.get(a) != assignment.get(b)
    same = [by_id[a]["label"] == by_id[b]["label"] for a, b in across]
    agree, n = int(sum(same)), len(same)
    agreement = agree / n if n else float("nan")
    disagreements = Counter("|".join(sorted((by_id[a]["label"], by_id[b]["label"])))
                            for (a, b), s in zip(across, same) if not s)
    labels_of_group: Dict[str, set] = defaultdict(set)
    split_of_group: Dict[str, str] = {}
    for r in every:
        labels_of_group[r["group"]].add(r["label"])
        split_of_group[r["group"]] = assignment.get(r["id"], "?")
    conflicting = Counter(split_of_group[g] for g, ls in labels_of_group.items() if len(ls) > 1)
    out = {"threshold": threshold, "pairs": n, "agree": agree, "agreement": agreement,
           "interval95": list(_wilson(agree, n)), "disagreements": dict(disagreements),
           "per_editor_error": editor_error(agreement) if n else float("nan"),
           "within_collection": {"pairs": len(within),
                                 "agree": int(sum(by_id[a]["label"] == by_id[b]["label"]
                                                  for a, b in within))},
           "conflicting_groups": dict(conflicting), "pairs_across_splits": int(splits_crossed)}
    (root / "agreement.json").write_text(json.dumps(out, indent=2))
    return out


def main(argv: List[str]) -> int:
    task = argv[0] if argv else "vocal"
    if task == "folk":
        r = editor_agreement(task)
        lo, hi = r["interval95"]
        print(f"{r['pairs']} pairs of the same melody in two collections (Jaccard >= "
              f"{r['threshold']}): {r['agree']} with the same label (agreement "
              f"{r['agreement']:.3f}, 95% interval {lo:.3f}-{hi:.3f}); disagreements "
              f"{r['disagreements']}; per-editor error between them "
              f"{r['per_editor_error']:.3f}")
        w = r["within_collection"]
        print(f"within one collection: {w['agree']}/{w['pairs']} pairs agree; groups with "
              f"conflicting labels per split {r['conflicting_groups']}; matching pairs in "
              f"different splits {r['pairs_across_splits']}")
        return 0
    res = measure(task)
    for split in ("train", "val", "test"):
        if split in res:
            r = res[split]
            print(f"{split}: {r['agree']}/{r['n']} clips agree with the label "
                  f"(accuracy {r['accuracy']:.3f}, macro-F1 {r['macro_f1']:.3f})")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
