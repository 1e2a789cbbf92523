"""The quick baselines and leak checks of a built data set (its card's ``baselines.json``).

Logistic regression (scikit-learn, standardised features, class-balanced weights), trained on
``train``, balanced accuracy on ``test``, on pooled features of every clip: MFCC (reference
front end, ``FrontendConfig()``) mean and std over the clip; symbolic features
(``mmengine.features.symbolic``) mean and std; TF-IDF of the text field (title or lyrics)
alone. Leak checks: the render settings (program, transposition, tempo) alone, and, for
``folk``, how well audio or notes tell the two collections apart.

It lives here, not in ``mmengine.data.corpus.card``, because it computes features: the data
layer's card writer only reads and shows ``baselines.json``. Command (what the card tells its
reader to run; it then rewrites the card)::

    python -m mmengine.features.data_baselines TASK [--out BUILD_FOLDER]
"""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import List

import numpy as np

from ..data.corpus import recipes
from ..data.corpus.folder import _collection, _digest, _read_jsonl


def _fit_score(X, y, tr, te) -> float:
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import balanced_accuracy_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    clf = make_pipeline(StandardScaler(with_mean=not hasattr(X, "tocsr")),
                        LogisticRegression(max_iter=5000, class_weight="balanced"))
    clf.fit(X[tr], y[tr])
    return float(balanced_accuracy_score(y[te], clf.predict(X[te])))


def pooled_features(manifest: Path, rows: List[dict], progress: bool = False):
    """(MFCC mean/std ``(N, 2 n_mfcc)``, symbolic mean/std ``(N, 2 S)``) of every row."""
    from tqdm.auto import tqdm

    from ..config import FrontendConfig
    from ..data.audio import load_audio
    from .reference import compute_features
    from .symbolic import symbolic_features

    cfg = FrontendConfig()
    mfcc, sym = [], []
    for r in tqdm(rows, desc="features", disable=not progress):
        f = compute_features(load_audio(manifest.parent / r["path"]), cfg)["mfcc"]
        mfcc.append(np.concatenate([f.mean(1), f.std(1)]))
        s = symbolic_features(manifest.parent / r["midi_path"], f.shape[1],
                              sr=cfg.sample_rate, hop=cfg.hop_length)
        sym.append(np.concatenate([s.mean(1), s.std(1)]))
    return np.array(mfcc), np.array(sym)


def baselines(manifest: Path, progress: bool = False) -> dict:
    """Balanced accuracy on the test split of logistic regression on each feature set.

    Returns ``{"scores": {name: value}, "n_train", "n_test", "seconds", "manifest_sha256"}``.
    """
    from sklearn.feature_extraction.text import TfidfVectorizer

    t0 = time.perf_counter()
    manifest = Path(manifest)
    rows = _read_jsonl(manifest)
    split = json.loads(manifest.with_name(manifest.stem + ".split.json").read_text())
    s = np.array([split["assignment"][r["id"]] for r in rows])
    y = np.array([r["label"] for r in rows])
    tr, te = s == "train", s == "test"
    mfcc, sym = pooled_features(manifest, rows, progress)
    scores = {"chance": 1.0 / len(set(y)),
              "MFCC mean/std": _fit_score(mfcc, y, tr, te),
              "symbolic mean/std": _fit_score(sym, y, tr, te),
              "MFCC + symbolic": _fit_score(np.hstack([mfcc, sym]), y, tr, te)}
    text = [r.get("title") or r.get("lyrics") or "" for r in rows]
    if any(text):
        vec = TfidfVectorizer(sublinear_tf=True, ngram_range=(1, 2), min_df=1)
        vec.fit([t for t, m in zip(text, tr) if m])
        name = "title TF-IDF" if rows[0].get("title") is not None else "lyrics TF-IDF"
        scores[name] = _fit_score(vec.transform(text).tocsr(), y, tr, te)
    programs = sorted({r["program"] for r in rows})
    settings = np.array([[r["program"] == p for p in programs] + [r["transpose"], r["tempo_bpm"]]
                         for r in rows], dtype=np.float64)
    scores["leak check: render settings (program, transposition, tempo)"] = \
        _fit_score(settings, y, tr, te)
    if rows[0]["source"].startswith(recipes.COLLECTIONS):
        coll = np.array([_collection(r) for r in rows])
        scores["leak check: collection from MFCC"] = _fit_score(mfcc, coll, tr, te)
        scores["leak check: collection from symbolic"] = _fit_score(sym, coll, tr, te)
    return {"scores": scores, "n_train": int(tr.sum()), "n_test": int(te.sum()),
            "test_groups": len({r["group"] for r, m in zip(rows, te) if m}),
            "seconds": time.perf_counter() - t0, "manifest_sha256": _digest(manifest)}


def main(argv: List[str]) -> int:
    """Compute the baselines of a build, write ``baselines.json`` and rewrite its ``DATA.md``."""
    import argparse
    import sys

    from ..data.corpus.card import render_card

    ap = argparse.ArgumentParser(prog="python -m mmengine.features.data_baselines",
                                 description="quick baselines and leak checks of a built data "
                                 "set, written to baselines.json and its DATA.md")
    ap.add_argument("task", choices=sorted(recipes.TASKS))
    ap.add_argument("--out", help="build folder (default: the default build of TASK)")
    args = ap.parse_args(argv)
    out = Path(args.out) if args.out else recipes.default_dir(args.task)
    if not (out / "manifest.jsonl").exists():
        ap.error(f"{out}: no manifest.jsonl; build it first (mmengine data build {args.task})")
    res = baselines(out / "manifest.jsonl", progress=True)
    (out / "baselines.json").write_text(json.dumps(res, indent=1) + "\n")
    for k, v in res["scores"].items():
        sys.stdout.write(f"{k:>60s}  {v:.3f}\n")
    sys.stdout.write(f"{render_card(args.task, out)}\n")
    return 0


if __name__ == "__main__":
    import sys

    raise SystemExit(main(sys.argv[1:]))
