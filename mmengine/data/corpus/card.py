"""The data card (``DATA.md``) of a built data set, and its quick baselines.

Baselines (balanced accuracy on the test split, logistic regression, scikit-learn) are
computed by::

    python -m mmengine.data.corpus.card folk      # or vocal; appends them to DATA.md
"""
from __future__ import annotations

import json
import sys
from collections import Counter
from pathlib import Path

import numpy as np

from . import render

LEAKS = {
    "folk": [
        "Type words are stripped from titles, but a title can still name a type indirectly "
        "(e.g. 'Rocky Road to Dublin' is widely known as a slip jig): measured by the title-only "
        "baseline below.",
        "Rhythm is the label's real signal (6/8 vs 9/8 vs 4/4 feel) and stays in audio and notes "
        "by design; meter and barline tokens are absent from the symbolic modality.",
        "Collection style (Ryan's vs O'Neill's transcription habits) remains in the notes; every "
        "class draws evenly from both collections (slip jig: 60 O'Neill's / 41 Ryan's).",
        "Slip jigs are rendered twice per tune (other classes once); renderings of one tune "
        "share a split group, so no tune crosses splits.",
        "About 4% label noise in the source (title and R: field disagree in some Ryan's tunes).",
    ],
    "vocal": [
        "The label is music21's key analysis (Krumhansl-Schmuckler), not a human annotation; "
        "transposition changes the key but not the mode.",
        "Lyrics are German chorale texts; words of lament vs praise correlate with mode, which "
        "is the real (weak) text signal.",
        "Each chorale is rendered twice (different instrument, tempo, transposition) and both "
        "renderings stay in one split.",
    ],
}


def _table(counter_by_split, labels) -> str:
    head = "| class | train | val | test | total |\n|---|---|---|---|---|\n"
    lines = []
    for lab in labels:
        c = [counter_by_split[s][lab] for s in ("train", "val", "test")]
        lines.append(f"| {lab} | {c[0]} | {c[1]} | {c[2]} | {sum(c)} |")
    tot = [sum(counter_by_split[s].values()) for s in ("train", "val", "test")]
    lines.append(f"| **all** | {tot[0]} | {tot[1]} | {tot[2]} | {sum(tot)} |")
    return head + "\n".join(lines) + "\n"


def write_card(task: str, out: Path, rows, failures, assignment, *, wall_s: float, limit) -> Path:
    """Write ``out/DATA.md`` from the build's rows, failures and split."""
    labels = sorted({r["label"] for r in rows})
    by_split = {s: Counter() for s in ("train", "val", "test")}
    for r in rows:
        by_split[assignment[r["id"]]][r["label"]] += 1
    fail = Counter(f.get("label") or "unknown (failed before labelling)" for f in failures)
    fallbacks = Counter(r.get("repeats", "expanded") for r in rows)
    size = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
    programs = render.FOLK_PROGRAMS if task == "folk" else render.VOCAL_PROGRAMS
    bpm = render.BEAT_BPM if task == "folk" else render.VOCAL_BEAT_BPM
    text = [
        f"# Data card: `{task}`\n",
        f"{_describe(task)}\n",
        "## Sources and licences\n",
        "- Scores: the corpus shipped in the `music21` wheel (BSD licence; the scores themselves "
        "are public-domain editions: Ryan's Mammoth Collection 1883, O'Neill's Music of Ireland "
        "1850 (abc transcriptions), J.S. Bach's chorales).",
        "- Soundfont: `TimGM6mb.sf2` shipped in the `pretty_midi` wheel (GPL-2 soundfont by Tim "
        "Brechbill); rendered with `tinysoundfont`.\n",
        "## Build\n",
        f"- command: `mmengine data build {task}`" + (f" --limit {limit}" if limit else "") + "",
        f"- wall time: {wall_s:.0f} s on this machine; size on disk: {size / 1e6:.1f} MB "
        f"({len(rows)} clips)",
        f"- clips: 30 s at 22,050 Hz, mono FLAC 16-bit, RMS-normalised to "
        f"{render.TARGET_DBFS:.0f} dBFS (peak-safe), the piece looped (never padded).",
        f"- instrument pool (GM programs, one per clip, same pool for every class): {list(programs)}",
        f"- tempo: beat of the meter at {bpm[0]:.0f}–{bpm[1]:.0f} bpm for every class; "
        f"transposition {render.TRANSPOSE[0]}..{render.TRANSPOSE[1] - 1} semitones at the note level.",
        f"- repeats: {dict(fallbacks)} (expanded with music21, else the fallbacks named).\n",
        "## Counts per class and split (grouped by tune, stratified, seeded)\n",
        _table(by_split, labels),
        "## Failures\n",
        (f"{len(failures)} renderings failed and are left out (listed in `failures.jsonl`): "
         f"{dict(fail)}\n" if failures else "No rendering failed.\n"),
        "## Known leaks and how big they are\n",
        "\n".join(f"- {x}" for x in LEAKS.get(task, [])) + "\n",
    ]
    path = out / "DATA.md"
    path.write_text("\n".join(text))
    return path


def _describe(task: str) -> str:
    from .build import TASKS

    return TASKS[task]


def baselines(manifest: Path) -> dict:
    """Balanced accuracy (test split) of logistic regression on pooled MFCC, pooled symbolic
    features and text TF-IDF alone."""
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import balanced_accuracy_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from ...config import FrontendConfig
    from ..audio import load_audio
    from ...features.reference import compute_features
    from ...features.symbolic import symbolic_features

    rows = [json.loads(line) for line in manifest.read_text().splitlines() if line.strip()]
    split = json.loads((manifest.parent / "manifest.split.json").read_text())["assignment"]
    cfg = FrontendConfig()
    y = np.array([r["label"] for r in rows])
    s = np.array([split[r["id"]] for r in rows])
    mfcc, sym = [], []
    for r in rows:
        f = compute_features(load_audio(manifest.parent / r["path"]), cfg)["mfcc"]
        mfcc.append(np.concatenate([f.mean(1), f.std(1)]))
        sy = symbolic_features(manifest.parent / r["midi_path"], f.shape[1], sr=cfg.sample_rate,
                               hop=cfg.hop_length)
        sym.append(np.concatenate([sy.mean(1), sy.std(1)]))
    out = {"chance": 1.0 / len(set(y))}
    tr, te = s == "train", s == "test"
    for name, X in (("MFCC mean/std", np.array(mfcc)), ("symbolic mean/std", np.array(sym))):
        clf = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000))
        clf.fit(X[tr], y[tr])
        out[name] = balanced_accuracy_score(y[te], clf.predict(X[te]))
    text = [r.get("title") or r.get("lyrics") or "" for r in rows]
    if any(text):
        vec = TfidfVectorizer(sublinear_tf=True)
        Xt = vec.fit_transform([t for t, m in zip(text, tr) if m])
        clf = LogisticRegression(max_iter=2000).fit(Xt, y[tr])
        pred = clf.predict(vec.transform([t for t, m in zip(text, te) if m]))
        out["text TF-IDF"] = balanced_accuracy_score(y[te], pred)
    return out


if __name__ == "__main__":
    from .build import default_manifest

    task = sys.argv[1] if len(sys.argv) > 1 else "folk"
    m = default_manifest(task)
    res = baselines(m)
    lines = ["\n## Quick baselines (balanced accuracy, test split, logistic regression)\n",
             f"Command: `python -m mmengine.data.corpus.card {task}`\n",
             "| features | balanced accuracy |", "|---|---|"]
    lines += [f"| {k} | {v:.3f} |" for k, v in res.items()]
    with open(m.parent / "DATA.md", "a") as fh:
        fh.write("\n".join(lines) + "\n")
    print("\n".join(lines))
