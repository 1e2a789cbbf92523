"""Recipes of the built-in data sets: which scores of the music21 corpus, with which labels.

A recipe is a small JSON file shipped in ``mmengine/data/recipes/<task>.json``::

    {"format": "mmengine-recipe/1", "task": "folk", "music21": "10.5.0",
     "selection": {...counts of what was kept and left out, and why...},
     "items": [{"source": "oneills1850/0001-0050.abc", "tune_index": 3, "x": "4",
                "label": "jig", "title": "...", "group": "...", "renderings": 1}, ...]}

``source`` is a path inside music21's corpus folder, ``tune_index`` the tune's position in the
file once split on ``X:`` lines. The audio is rendered from the recipe on first use (``build``);
the seed of rendering ``k`` of an item is derived from (build seed, task, source, tune index,
k), see ``build.job_seed``. Regenerate a recipe from the installed corpus (a few minutes: every
candidate is parsed once) with::

    python -m mmengine.data.corpus.recipes folk     # or vocal

``folk``: dance type of the fiddle tunes of Ryan's Mammoth Collection and O'Neill's 1850 that
carry an ``R:`` field: reel, jig (incl. "double jig"), hornpipe, slip jig (incl. Ryan's 9/8
"jigs"). These are the types present in both collections with enough tunes (strathspey, clog
and fling are Ryan's only, airs O'Neill's only: a class from one collection would be
recognisable by its collection). A tune is kept only when its meter fits its type and its title
names no other type (label noise); O'Neill's reuses X numbers, one tune per X. Each class takes
as many tunes from each collection (so that the collection says nothing about the class); the
small slip-jig class keeps every tune and gets 2-3 renderings per tune, chosen so that both
collections give as many clips. Titles lose type words, decorations, case and a trailing
article ("Spotted Cow, The" -> "The Spotted Cow"), which all tell the collection apart.

``vocal``: the Bach chorales of the corpus with lyrics (German), labelled major / minor by
music21's key analysis of the score (Krumhansl-Schmuckler correlation with music21's
default Aarden-Essen key profiles).

Groups (tune identity, the unit of the split) join every item sharing a normalised title, a
melody incipit (the first intervals of the top line, so a tune under two names or keys is one
group) or, for chorales, a lyric incipit (one hymn text set several times). A group is named
after one of its members (normalised title; chorale file name).
"""
from __future__ import annotations

import json
import os
import re
import sys
from collections import Counter, defaultdict
from pathlib import Path
from typing import Dict, Iterable, List, Optional

import numpy as np

#: the built-in data sets (``mmengine data build TASK``) and what they label
TASKS = {
    "folk": "dance type of fiddle tunes (reel, jig, hornpipe, slip jig): audio + title + notes",
    "vocal": "mode (major/minor) of Bach chorales: audio + German lyrics + notes",
}


def default_dir(task: str) -> Path:
    """``$MMENGINE_DATA_DIR/<task>``, else ``~/.cache/mmengine/data/<task>``."""
    base = os.environ.get("MMENGINE_DATA_DIR")
    root = Path(base) if base else Path.home() / ".cache" / "mmengine" / "data"
    return root / task


def default_manifest(task: str) -> Path:
    """Where ``build_dataset(task)`` writes its manifest by default."""
    return default_dir(task) / "manifest.jsonl"


RECIPE_DIR = Path(__file__).resolve().parent.parent / "recipes"
RECIPE_FORMAT = "mmengine-recipe/1"
COLLECTIONS = ("ryansMammoth", "oneills1850")
#: ``R:`` field -> class
FOLK_TYPES = {
    "reel": "reel", "jig": "jig", "double jig": "jig", "hornpipe": "hornpipe",
    "slip jig": "slip jig", "slipjig": "slip jig",
}
#: meters a class may be written in (a 2/4 "jig" is a different dance)
FOLK_METERS = {
    "reel": {"C|", "C", "2/2", "2/4", "4/4"}, "hornpipe": {"C|", "C", "2/2", "2/4", "4/4"},
    "jig": {"6/8", "12/8"}, "slip jig": {"9/8"},
}
#: renderings per tune (min, max); classes not listed get one. A class with a range keeps all
#: its tunes and balances clips between the collections within the range.
FOLK_RENDERINGS = {"slip jig": (2, 3)}
#: most tunes a class takes from one collection
FOLK_MAX_PER_COLLECTION = 300
#: the largest class may have at most this many times the clips of the smallest
MAX_CLASS_RATIO = 4.0
VOCAL_RENDERINGS = 2
MELODY_INCIPIT = 12  # intervals

TYPE_WORDS = re.compile(
    r"\b(double|single|slip|highland)?\s*(reel|jig|jigg|hornpipe|slipjig|strathspey|clog|"
    r"fling|set dance|polka|march|waltz|slide|air)s?\b", re.IGNORECASE)
_ARTICLE_LAST = re.compile(r"^(.*?)[,\s]+(the)$", re.IGNORECASE)


def corpus_root() -> Path:
    """The ``corpus`` folder inside the installed music21 package."""
    import music21

    return Path(music21.__file__).resolve().parent / "corpus"


def strip_title(title: str) -> str:
    """A title without dance-type words, decorations, case or trailing article.

    >>> strip_title("SMASH THE WINDOWS -- REEL")
    'Smash The Windows'
    >>> strip_title("Spotted Cow, The")
    'The Spotted Cow'
    """
    t = re.sub(r"^T:\s*", "", title or "")
    if "--" in t and TYPE_WORDS.search(t.split("--", 1)[1]):
        t = t.split("--")[0]
    t = TYPE_WORDS.sub(" ", t)
    t = re.sub(r"\([^)]*\)", " ", t)
    t = re.sub(r"[^\w' ]+", " ", t)
    t = re.sub(r"\s+", " ", t).strip(" '")
    m = _ARTICLE_LAST.match(t)
    if m and m.group(1):
        t = f"{m.group(2)} {m.group(1)}"
    return " ".join(w[:1].upper() + w[1:].lower() for w in t.split())


def normalise_title(title: str) -> str:
    """Grouping key: stripped title, lowercase, without articles and apostrophes."""
    t = strip_title(title).lower().replace("'", "")
    words = [w for w in t.split() if w not in {"the", "a", "an"}]
    return " ".join(words) or "untitled"


def title_types(title: str) -> set:
    """Dance types a title names (``"jig"``, ``"strathspey"``, ...), lowercase."""
    found = set()
    for m in TYPE_WORDS.finditer(title or ""):
        kind = m.group(2).lower().replace("jigg", "jig")
        found.add("slip jig" if (m.group(1) or "").lower() == "slip" or kind == "slipjig"
                  else kind)
    return found


def split_abc(text: str) -> List[str]:
    """One string per tune of an ABC file (split before ``X:`` lines)."""
    return [t for t in re.split(r"(?m)^(?=X:)", text) if t.startswith("X:")]


def abc_field(tune: str, key: str) -> str:
    """The first ``key:`` header field of an ABC tune, or ``""``."""
    m = re.search(rf"(?m)^{key}:\s*(.*)$", tune)
    return m.group(1).strip() if m else ""


def melody_incipit(score, n: int = MELODY_INCIPIT) -> Optional[str]:
    """The first ``n`` pitch intervals of the top line (grace notes skipped), or None."""
    part = score.parts[0] if hasattr(score, "parts") and len(score.parts) else score
    pitches = [max(p.midi for p in x.pitches) for x in part.flatten().notes
               if not x.duration.isGrace and x.quarterLength > 0]
    if len(pitches) <= n:
        return None
    return ",".join(str(b - a) for a, b in zip(pitches[:n], pitches[1:n + 1]))


class _Groups:
    """Union-find over items sharing any key."""

    def __init__(self, n: int):
        self.parent = list(range(n))

    def find(self, i: int) -> int:
        while self.parent[i] != i:
            self.parent[i] = self.parent[self.parent[i]]
            i = self.parent[i]
        return i

    def join(self, keys_per_item: Iterable[Iterable[str]]) -> List[int]:
        owner: Dict[str, int] = {}
        for i, keys in enumerate(keys_per_item):
            for k in keys:
                if k in owner:
                    self.parent[self.find(i)] = self.find(owner[k])
                else:
                    owner[k] = i
        return [self.find(i) for i in range(len(self.parent))]


def _assign_groups(items: List[dict], keys: List[List[str]], name) -> None:
    """Set ``item["group"]`` to one name per connected component of shared keys."""
    roots = _Groups(len(items)).join(keys)
    members: Dict[int, List[int]] = defaultdict(list)
    for i, r in enumerate(roots):
        members[r].append(i)
    for idx in members.values():
        g = min(name(items[i]) for i in idx)
        for i in idx:
            items[i]["group"] = g


def _folk_candidates(stats: Counter) -> List[dict]:
    from music21 import converter

    root = corpus_root()
    out = []
    for coll in COLLECTIONS:
        seen_x = set()
        for f in sorted((root / coll).glob("*.abc")):
            for k, tune in enumerate(split_abc(f.read_text(encoding="latin-1"))):
                r_field, meter = abc_field(tune, "R").lower(), abc_field(tune, "M")
                label = FOLK_TYPES.get(r_field)
                if label == "jig" and meter == "9/8":
                    label = "slip jig"  # Ryan's calls some 9/8 tunes jigs
                x = abc_field(tune, "X")
                if coll == "oneills1850":
                    if x in seen_x:
                        stats["left out: O'Neill's repeated X number"] += 1
                        continue
                    seen_x.add(x)
                if label is None:
                    stats[f"left out: type {r_field or 'missing'!r}"] += 1
                    continue
                if meter not in FOLK_METERS[label]:
                    stats[f"left out: {label} in {meter}"] += 1
                    continue
                raw_title = abc_field(tune, "T")
                named = title_types(raw_title) - {label}
                if label == "slip jig":
                    named -= {"jig"}
                if named:
                    stats["left out: title names another type"] += 1
                    continue
                try:
                    incipit = melody_incipit(converter.parse(tune, format="abc"))
                except Exception:  # noqa: BLE001 - counted; the builder would fail it too
                    stats["left out: does not parse"] += 1
                    continue
                out.append({"source": f"{coll}/{f.name}", "tune_index": k, "x": x,
                            "label": label, "title": strip_title(raw_title),
                            "group": normalise_title(raw_title), "melody": incipit,
                            "collection": coll})
    return out


def folk_recipe(seed: int = 0) -> dict:
    """Select the folk tunes (see the module docstring) -> recipe dict."""
    stats: Counter = Counter()
    cands = _folk_candidates(stats)
    by: Dict[str, Dict[str, List[dict]]] = defaultdict(lambda: defaultdict(list))
    for it in cands:
        by[it["label"]][it["collection"]].append(it)
    rng = np.random.default_rng(seed)
    items: List[dict] = []
    for label in sorted(by):
        colls = [by[label][c] for c in COLLECTIONS]
        if min(len(c) for c in colls) == 0:
            stats[f"left out: {label} (one collection only)"] += sum(len(c) for c in colls)
            continue
        lo, hi = FOLK_RENDERINGS.get(label, (1, 1))
        if hi == 1:
            n = min(min(len(c) for c in colls), FOLK_MAX_PER_COLLECTION)
            for c in colls:
                order = rng.permutation(len(c))
                keep = sorted(int(i) for i in order[:n])
                stats[f"left out: {label} beyond balance"] += len(c) - n
                items.extend(dict(c[i], renderings=1) for i in keep)
        else:
            target = max(len(c) for c in colls) * lo
            for c in colls:
                r = int(np.clip(round(target / len(c)), lo, hi))
                items.extend(dict(it, renderings=r) for it in c)
    keys = [[f"t:{it['group']}"] * (it["group"] != "untitled")
            + ([f"m:{it['melody']}"] if it["melody"] else []) for it in items]
    _assign_groups(items, keys, lambda it: it["group"])
    for it in items:
        del it["melody"], it["collection"]
    items.sort(key=lambda d: (d["source"], d["tune_index"]))
    return {"selection": _selection(items, stats), "items": items}


def _selection(items: List[dict], stats: Counter) -> dict:
    clips = Counter()
    tunes = Counter()
    for it in items:
        clips[it["label"]] += it["renderings"]
        tunes[f"{it['label']} / {it['source'].split('/')[0]}"] += 1
    ratio = max(clips.values()) / min(clips.values())
    if ratio > MAX_CLASS_RATIO:
        raise ValueError(f"largest class has {ratio:.1f}x the clips of the smallest: {clips}")
    return {"clips_per_class": dict(sorted(clips.items())),
            "tunes_per_class_and_collection": dict(sorted(tunes.items())),
            "groups": len({it["group"] for it in items}),
            "left_out": dict(sorted(stats.items()))}


def lyric_incipit(lyrics: str, words: int = 4) -> str:
    """First words of a lyric, lowercase, letters only (one hymn text -> one key)."""
    return " ".join(re.sub(r"[^\w ]+", " ", lyrics.lower()).split()[:words])


def vocal_recipe(seed: int = 0) -> dict:
    """The Bach chorales that carry lyrics, with their mode (every score is parsed)."""
    from music21 import corpus, text

    stats: Counter = Counter()
    items, keys = [], []
    for p in sorted(Path(x) for x in corpus.getComposer("bach")):
        if p.suffix not in {".mxl", ".xml", ".musicxml", ".krn"}:
            continue
        try:
            score = corpus.parse(str(p))
            lyrics = (text.assembleLyrics(score) or "").strip()
            mode = score.analyze("key").mode
        except Exception:  # noqa: BLE001 - counted in the selection
            stats["left out: does not parse"] += 1
            continue
        if len(lyrics.split()) < 5:
            stats["left out: fewer than 5 words of lyrics"] += 1
            continue
        if mode not in {"major", "minor"}:
            stats[f"left out: mode {mode}"] += 1
            continue
        items.append({"source": p.relative_to(corpus_root()).as_posix(), "tune_index": 0,
                      "label": mode, "title": None, "group": p.stem,
                      "renderings": VOCAL_RENDERINGS})
        mel = melody_incipit(score)
        keys.append([f"l:{lyric_incipit(lyrics)}"] + ([f"m:{mel}"] if mel else []))
    _assign_groups(items, keys, lambda it: it["group"])
    return {"selection": _selection(items, stats), "items": items}


RECIPES = {"folk": folk_recipe, "vocal": vocal_recipe}


def recipe_path(task: str) -> Path:
    return RECIPE_DIR / f"{task}.json"


def load_recipe(task: str) -> List[dict]:
    """The shipped items of ``task`` (list of dicts, see the module docstring)."""
    path = recipe_path(task)
    if not path.exists():
        raise FileNotFoundError(f"no recipe for {task!r} ({path}); regenerate it with "
                                f"`python -m mmengine.data.corpus.recipes {task}`")
    return json.loads(path.read_text(encoding="utf-8"))["items"]


def write_recipe(task: str, recipe: dict) -> Path:
    """Write ``recipe`` (``{"selection", "items"}``) as the shipped recipe of ``task``."""
    import music21

    path = recipe_path(task)
    path.parent.mkdir(parents=True, exist_ok=True)
    doc = {"format": RECIPE_FORMAT, "task": task, "music21": music21.__version__,
           "generated_by": f"python -m mmengine.data.corpus.recipes {task}",
           "selection": recipe["selection"]}
    lines = [json.dumps(doc, ensure_ascii=False)[:-1] + ', "items": [']
    lines += [json.dumps(it, ensure_ascii=False) + ("," if i < len(recipe["items"]) - 1 else "")
              for i, it in enumerate(recipe["items"])]
    path.write_text("\n".join(lines) + "\n]}\n", encoding="utf-8")
    return path


def main(argv: List[str]) -> int:
    task = argv[0] if argv else "folk"
    if task not in RECIPES:
        sys.stderr.write(f"unknown task {task!r}; choose from {', '.join(RECIPES)}\n")
        return 2
    path = write_recipe(task, RECIPES[task]())
    sys.stdout.write(f"{path}\n")
    return 0


if __name__ == "__main__":  # developer tool: regenerate a shipped recipe
    raise SystemExit(main(sys.argv[1:]))
