"""Recipes of the built-in data sets: which scores of the music21 corpus, with which labels.

A recipe is a small JSON list shipped in ``mmengine/data/recipes/<task>.json``; the audio is
rendered from it on first use. Regenerate a recipe from the installed corpus with::

    python -m mmengine.data.corpus.recipes folk     # or vocal

``folk``: dance type of fiddle tunes in Ryan's Mammoth Collection and O'Neill's 1850 — reel,
jig (incl. "double jig"), hornpipe, slip jig (incl. 9/8 "jigs") — the types present in both
collections with enough tunes. Tunes are read from their ``R:`` field (O'Neill's tunes without
one are left out). O'Neill's reuses X numbers across files: one tune per X. Titles are stripped
of type words. Classes are capped at ``FOLK_CAP`` tunes, taken evenly from both collections, so
that the largest class is at most ~4x the smallest; the smallest class gets more renderings.

``vocal``: the Bach chorales of the corpus that carry lyrics; the label (major / minor, from
music21's key analysis) is computed while rendering.
"""
from __future__ import annotations

import json
import re
import sys
from collections import defaultdict
from pathlib import Path
from typing import Dict, List

import numpy as np

RECIPE_DIR = Path(__file__).resolve().parent.parent / "recipes"
FOLK_CAP = 240
FOLK_TYPES = {
    "reel": "reel", "jig": "jig", "double jig": "jig", "hornpipe": "hornpipe",
    "slip jig": "slip jig", "slipjig": "slip jig",
}
#: renderings per tune by class: more for the small class, same generator for all
FOLK_RENDERINGS = {"reel": 1, "jig": 1, "hornpipe": 1, "slip jig": 2}
TYPE_WORDS = re.compile(
    r"\b(double|single|slip|highland)?\s*(reel|jig|jigg|hornpipe|slipjig|strathspey|clog|"
    r"fling|set dance|polka|march|waltz|slide)s?\b", re.IGNORECASE)


def corpus_root() -> Path:
    import music21

    return Path(music21.__file__).resolve().parent / "corpus"


def strip_title(title: str) -> str:
    """Remove dance-type words, ABC decorations and punctuation from a title."""
    t = re.sub(r"^T:\s*", "", title or "")
    t = t.split("--")[0] if "--" in t and TYPE_WORDS.search(t.split("--", 1)[1]) else t
    t = TYPE_WORDS.sub(" ", t)
    t = re.sub(r"\([^)]*\)", " ", t)
    t = re.sub(r"[^\w' ]+", " ", t)
    return re.sub(r"\s+", " ", t).strip()


def normalise_title(title: str) -> str:
    """Grouping key: stripped title, lowercase, articles and apostrophes removed."""
    t = strip_title(title).lower().replace("'", "")
    words = [w for w in t.split() if w not in {"the", "a", "an"}]
    return " ".join(words) or "untitled"


def split_abc(text: str) -> List[str]:
    """One string per tune (split on ``X:`` lines)."""
    return [t for t in re.split(r"(?m)^(?=X:)", text) if t.startswith("X:")]


def _field(tune: str, key: str) -> str:
    m = re.search(rf"(?m)^{key}:\s*(.*)$", tune)
    return m.group(1).strip() if m else ""


def folk_recipe(seed: int = 0) -> List[dict]:
    """Select the folk tunes; see the module docstring."""
    root = corpus_root()
    by_class: Dict[str, Dict[str, List[dict]]] = defaultdict(lambda: defaultdict(list))
    seen_x = set()
    for coll in ("ryansMammoth", "oneills1850"):
        for f in sorted((root / coll).glob("*.abc")):
            for k, tune in enumerate(split_abc(f.read_text(encoding="latin-1"))):
                label = FOLK_TYPES.get(_field(tune, "R").lower())
                meter = _field(tune, "M")
                if label is None and _field(tune, "R").lower() == "jig" and meter == "9/8":
                    label = "slip jig"
                if label == "jig" and meter == "9/8":
                    label = "slip jig"  # Ryan's calls some 9/8 tunes jigs
                if label is None:
                    continue
                x = _field(tune, "X")
                if coll == "oneills1850":
                    if x in seen_x:
                        continue
                    seen_x.add(x)
                title = _field(tune, "T")
                by_class[label][coll].append({
                    "source": f"{coll}/{f.name}", "tune_index": k, "x": x, "label": label,
                    "title": strip_title(title), "group": normalise_title(title),
                })
    rng = np.random.default_rng(seed)
    items: List[dict] = []
    for label in sorted(by_class):
        colls = by_class[label]
        for c in colls.values():
            rng.shuffle(c)
        take, quota = [], FOLK_CAP
        # even draw from both collections, the rest from whichever has more
        while quota and any(colls.values()):
            for c in colls.values():
                if c and quota:
                    take.append(c.pop())
                    quota -= 1
        for it in sorted(take, key=lambda d: (d["source"], d["tune_index"])):
            it["renderings"] = FOLK_RENDERINGS[label]
            items.append(it)
    return items


def vocal_recipe(seed: int = 0) -> List[dict]:
    """The Bach chorales that carry lyrics (checked by parsing each one)."""
    from music21 import corpus, text

    items = []
    for p in sorted(corpus.getComposer("bach")):
        p = Path(p)
        if p.suffix not in {".mxl", ".xml", ".musicxml", ".krn"}:
            continue
        try:
            score = corpus.parse(str(p))
            lyrics = text.assembleLyrics(score) or ""
        except Exception:  # noqa: BLE001 - an unparsable file is simply not selected
            continue
        if len(lyrics.split()) < 5:
            continue
        rel = p.relative_to(corpus_root()).as_posix()
        items.append({"source": rel, "tune_index": 0, "group": p.stem.split(".")[0],
                      "title": None, "renderings": 2})
    return items


def load_recipe(task: str) -> List[dict]:
    path = RECIPE_DIR / f"{task}.json"
    return json.loads(path.read_text())["items"]


def write_recipe(task: str, items: List[dict]) -> Path:
    RECIPE_DIR.mkdir(parents=True, exist_ok=True)
    path = RECIPE_DIR / f"{task}.json"
    path.write_text(json.dumps({"task": task, "items": items}, indent=0) + "\n")
    return path


if __name__ == "__main__":  # developer tool: regenerate a shipped recipe
    task = sys.argv[1] if len(sys.argv) > 1 else "folk"
    fn = {"folk": folk_recipe, "vocal": vocal_recipe}[task]
    print(write_recipe(task, fn()))
