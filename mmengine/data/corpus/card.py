"""The data card (``DATA.md``) of a built data set, with its quick baselines and leak checks.

``build`` writes the card from the folder (manifest, split, failures, ``build.json``). The
baselines (logistic regression, scikit-learn, balanced accuracy on the test split) take a
minute or two and compute features, so they live in the features layer, run on demand, are
kept in ``baselines.json`` and shown in the card; the label ceiling (vocal) and label noise
(folk) come from ``mmengine.data.corpus.ceiling``::

    python -m mmengine.features.data_baselines folk [--out DIR]   # baselines, then the card
    python -m mmengine.data.corpus.ceiling folk                   # label noise (vocal: ceiling)
    python -m mmengine.data.corpus.card folk [--out DIR]          # rewrite the card only
    python -m mmengine.data.corpus.card --docs                    # docs/DATA.md from both
"""
from __future__ import annotations

import json
import sys
import time
from collections import Counter, defaultdict
from pathlib import Path
from typing import List

import numpy as np

from ..safe_io import atomic_write
from . import recipes, render
from .ceiling import editor_error
from .folder import _collection, _digest, _read_jsonl
from .recipes import TASKS, default_dir

SPLITS = ("train", "val", "test")
DOCS_PATH = Path(__file__).resolve().parents[3] / "docs" / "DATA.md"

SOURCES = {
    "folk": "Ryan's Mammoth Collection (1883) and O'Neill's *Music of Ireland* (1850), abc "
            "transcriptions in `music21/corpus/ryansMammoth` and `music21/corpus/oneills1850`.",
    "vocal": "J. S. Bach's four-part chorales (MusicXML, `music21/corpus/bach`), with the "
             "lyrics of their soprano line.",
}
LEAKS = {
    "folk": [
        "Rhythm is the label's real signal (6/8 vs 9/8 vs duple feel; reels run 4 notes per "
        "beat, jigs 3) and stays in audio and notes by design. Meter, barline, key and tempo "
        "events are absent from the MIDI files; the tempo of every class is drawn per beat "
        "of the meter from one range.",
        "Titles: type words, case, punctuation and O'Neill's trailing article are removed; a "
        "title can still suggest a type indirectly (measured by the text baseline below).",
        "Collections: each class takes as many tunes from each collection (slip jig: every "
        "tune, with 2 renderings of O'Neill's and 3 of Ryan's, so the clips balance). Audio "
        "or notes may still tell the collections apart (transcription habits; the leak "
        "checks below measure how well), which says nothing about the class as long as the "
        "collection shares per class stay equal (listed below).",
        "Label noise: tunes whose title names another type than `R:` are left out (see the "
        "selection); some `R:` fields remain doubtful.",
        "Metadata columns (`source`, `tune_index`, `beat`, `tempo_bpm`, `program`, "
        "`transpose`, `repeats`) are for provenance only: never features. `beat` is 1.5 "
        "quarters for compound meters (jigs, slip jigs) and `source` names the collection and, "
        "in O'Neill's, a file that holds one section of the book (one type). Ids and file "
        "names are hashes and say nothing.",
    ],
    "vocal": [
        "The label is music21's key analysis (Krumhansl-Schmuckler with Aarden-Essen "
        "profiles) of the whole score, not a human annotation; chorales that modulate or end on a major chord after a minor "
        "body can be doubtful. Transposition changes the key, never the mode.",
        "Lyrics are German chorale texts; whether their words (lament, praise) carry the mode "
        "is what the lyrics baseline below measures. One hymn set by Bach several times "
        "(same lyric incipit or melody incipit) is one group, so no hymn text or tune "
        "crosses splits.",
        "Metadata columns (`source`, `beat`, `tempo_bpm`, `program`, `transpose`) are for "
        "provenance only: never features.",
    ],
}


# ------------------------------------------------------------------------------ the card
def write_card(task: str, out: Path, rows, failures, assignment, *, stats: dict) -> Path:
    """Record the run in ``out/build.json`` and write ``out/DATA.md``. Returns its path."""
    runs = (_runs(out) + [dict(stats, finished=time.strftime("%Y-%m-%d %H:%M:%S"))])[-20:]
    doc = json.dumps({"task": task, "runs": runs}, indent=1) + "\n"
    atomic_write(out / "build.json", lambda t: Path(t).write_text(doc))
    return render_card(task, out)


def _runs(out: Path) -> List[dict]:
    """Runs recorded in ``out/build.json`` (none if absent or not written by this module)."""
    try:
        doc = json.loads((out / "build.json").read_text())
    except (OSError, ValueError):
        return []
    runs = doc.get("runs") if isinstance(doc, dict) else None
    return [r for r in runs if isinstance(r, dict)] if isinstance(runs, list) else []


def _table(head: List[str], lines: List[List]) -> str:
    out = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    out += ["| " + " | ".join(str(c) for c in line) + " |" for line in lines]
    return "\n".join(out) + "\n"


def _split_table(rows, assignment) -> str:
    by = defaultdict(Counter)
    groups = defaultdict(set)
    for r in rows:
        by[r["label"]][assignment[r["id"]]] += 1
        groups[assignment[r["id"]]].add(r["group"])
    lines = [[lab] + [by[lab][s] for s in SPLITS] + [sum(by[lab].values())] for lab in sorted(by)]
    tot = [sum(by[lab][s] for lab in by) for s in SPLITS]
    lines.append(["**all clips**"] + tot + [sum(tot)])
    lines.append(["groups (tunes)"] + [len(groups[s]) for s in SPLITS]
                 + [len({r['group'] for r in rows})])
    extra = Counter(assignment[r["id"]] for r in rows if r.get("extra"))
    if extra:
        lines.append(["of which extra training renderings"] + [extra[s] for s in SPLITS]
                     + [sum(extra.values())])
    return _table(["class", *SPLITS, "total"], lines)


def _measured_leaks(task: str, rows) -> List[str]:
    out = []
    labels_of = defaultdict(set)
    for r in rows:
        labels_of[r["group"]].add(r["label"])
    mixed = sum(1 for v in labels_of.values() if len(v) > 1)
    out.append(f"Groups whose renderings carry different labels (one tune filed under two "
               f"types or modes): {mixed} of {len(labels_of)}; each lies in one split.")
    if task == "folk":
        share = defaultdict(Counter)
        for r in rows:
            share[r["label"]][_collection(r)] += 1
        parts = [f"{lab} {c['oneills1850'] / sum(c.values()):.0%}"
                 for lab, c in sorted(share.items())]
        out.append("Share of O'Neill's clips per class: " + ", ".join(parts) + ".")
    if task == "vocal":
        where = defaultdict(set)
        for r in rows:
            where[recipes.lyric_incipit(r["lyrics"] or "")].add(r["group"])
        cross = sum(1 for v in where.values() if len(v) > 1)
        out.append(f"Lyric incipits shared by more than one group: {cross}.")
    return out


def _baseline_section(out: Path, task: str) -> str:
    path = out / "baselines.json"
    cmd = f"python -m mmengine.features.data_baselines {task}"
    if not path.exists():
        return f"Not computed for this build; run `{cmd}`.\n"
    b = json.loads(path.read_text())
    stale = b.get("manifest_sha256") != _digest(out / "manifest.jsonl")
    lines = [[k, f"{v:.3f}"] for k, v in b["scores"].items()]
    note = " (**stale**: the manifest changed since; rerun)" if stale else ""
    return (f"Logistic regression (scikit-learn, standardised features, class-balanced "
            f"weights), trained on `train`, balanced accuracy on `test` "
            f"({b['n_train']} / {b['n_test']} clips, {b['seconds']:.0f} s){note}. "
            f"Command: `{cmd}`.\n\n" + _table(["features", "balanced accuracy"], lines)
            + (f"\nThe test split holds {b['test_groups']} independent tunes: one standard "
               f"error is up to {np.sqrt(0.25 / b['test_groups']):.2f}, so differences below "
               f"about {2 * np.sqrt(0.25 / b['test_groups']):.2f} are noise.\n"
               if b.get("test_groups") else ""))


def _agreement_section(out: Path, task: str) -> str:
    """``folk``'s label noise: two editors on the same melody (``mmengine.data.corpus.ceiling
    folk`` writes ``agreement.json``), when measured."""
    cmd = f"python -m mmengine.data.corpus.ceiling {task}"
    path = out / "agreement.json"
    head = "## Label noise, measured: two editors on the same melody\n\n"
    if not path.exists():
        return f"{head}Not measured for this build; run `{cmd}`.\n"
    a = json.loads(path.read_text())
    lo, hi = a["interval95"]
    dis = ", ".join(f"{k.replace('|', ' vs ')} {v}" for k, v in sorted(a["disagreements"].items()))
    w = a["within_collection"]
    return (f"{head}Command: `{cmd}`. Many melodies are in both collections, so the same tune "
            "carries a type chosen by two editors (Ryan's `R:`, the section of O'Neill's it sits "
            "in). Matching the first renderings' melodies (top voice, runs of 6 intervals: "
            f"transposition- and tempo-free; Jaccard similarity >= {a['threshold']}), "
            f"{a['pairs']} pairs come from different collections: **{a['agree']} carry the same "
            f"type (agreement {a['agreement']:.3f}, 95 % Wilson interval {lo:.3f}-{hi:.3f}); "
            f"disagreements: {dis or 'none'}**. Within one collection {w['agree']} of "
            f"{w['pairs']} matching pairs agree. Groups holding renderings of two types, per "
            f"split: {a['conflicting_groups']}; matching pairs in different splits: "
            f"{a['pairs_across_splits']}. Read as two editors erring independently and equally "
            "often between the types that disagree (agreement = (1 - e)^2 + e^2), each editor "
            f"files e = {a['per_editor_error']:.3f} of those tunes under the other type"
            + _noise_on_test(out, a) + ".\n")


def _noise_on_test(out: Path, a: dict) -> str:
    """What ``folk``'s measured label noise means on the test split: how many test labels
    would be the other editor's choice, and the accuracy a model that reads the tune could be
    expected to reach (an estimate under the card's stated assumption, not a bound)."""
    split_path = out / "manifest.split.json"
    kinds = {k for pair in a["disagreements"] for k in pair.split("|")}
    if not kinds or not split_path.exists():
        return ""
    assignment = json.loads(split_path.read_text())["assignment"]
    rows = _read_jsonl(out / "manifest.jsonl")
    test = [r for r in rows if assignment.get(r["id"]) == "test"]
    n = sum(r["label"] in kinds for r in test)
    if not test or not n:
        return ""
    lo, hi = a["interval95"]
    e, e_lo, e_hi = a["per_editor_error"], editor_error(hi), editor_error(lo)
    return (f" (interval {e_lo:.3f}-{e_hi:.3f}). The test split holds {n} clips of those types "
            f"of {len(test)}: about {e * n:.0f} test labels ({e_lo * n:.0f}-{e_hi * n:.0f}) "
            "would be the other editor's choice, so a model that reads the tune could be "
            f"expected to agree with about {1 - e * n / len(test):.3f} of the test labels "
            f"({1 - e_hi * n / len(test):.3f}-{1 - e_lo * n / len(test):.3f}; an estimate under "
            "that assumption, not a bound)")


def _ceiling_section(out: Path, task: str) -> str:
    """The label ceiling of ``vocal`` (``mmengine.data.corpus.ceiling``), when measured, and
    the measured label noise of ``folk``."""
    if task == "folk":
        return _agreement_section(out, task)
    if task != "vocal":
        return ""
    cmd = "python -m mmengine.data.corpus.ceiling vocal"
    path = out / "ceiling.json"
    if not path.exists():
        return f"## Label ceiling\n\nNot measured for this build; run `{cmd}`.\n"
    c = json.loads(path.read_text())
    lines = [[s, c[s]["n"], c[s]["agree"], f"{c[s]['accuracy']:.3f}", f"{c[s]['macro_f1']:.3f}"]
             for s in ("train", "val", "test") if s in c]
    return ("## Label ceiling\n\nThe label is music21's key analysis of the whole chorale; the "
            "same analysis run on each 30 s clip's own notes (its MIDI file) agrees with the "
            "label on the share of clips below. Read as a classifier that sees the notes "
            "perfectly and reasons as the labeller does, it is the practical ceiling (a model "
            "can pass it only through cues other than the clip's own pitch content). Command: "
            f"`{cmd}`.\n\n" + _table(["split", "clips", "agree", "accuracy", "macro-F1"], lines))


def _extras_line(out: Path, rows, runs: List[dict]) -> str:
    """The card's line on extra training renderings (``--train-renderings N``): how many,
    their disk and their render time."""
    extra = [r for r in rows if r.get("extra")]
    if not extra:
        return ("- extra training renderings: none (`--train-renderings N` adds N per tune of "
                "the training split; validation and test stay as they are).")
    size = sum((out / r[k]).stat().st_size for r in extra for k in ("path", "midi_path")
               if (out / r[k]).exists())
    size += sum((out / "rows" / f"{r['id']}.json").stat().st_size for r in extra
                if (out / "rows" / f"{r['id']}.json").exists())
    n = max(Counter((r["source"], r["tune_index"]) for r in extra).values())
    timed = [r for r in runs if r.get("extra_rendered")]
    secs = sum(r.get("extra_wall_s", 0.0) for r in timed)
    clips = sum(r["extra_rendered"] for r in timed)
    when = (f"rendered in {secs:.0f} s ({clips} clips, {secs / clips:.2f} s per clip on "
            f"{timed[-1].get('workers', '?')} worker(s))" if clips else "render time not recorded")
    return (f"- extra training renderings: {n} per tune of the training split "
            f"(`--train-renderings {n}`): {len(extra)} clips of "
            f"{len({r['group'] for r in extra})} groups, all in `train` (rows marked `extra`, "
            f"with `loop_start_q`), {size / 1e6:.0f} MB on disk, {when}. Each has its own "
            "instrument, transposition and tempo and starts at a random note onset of the tune; "
            "the recipe's own renderings, the split of their tunes and every validation and "
            "test file are those of a build without extras.")


def render_card(task: str, out: Path) -> Path:
    """Write ``out/DATA.md`` from what the folder holds. Returns its path."""

    rows = _read_jsonl(out / "manifest.jsonl")
    failures = _read_jsonl(out / "failures.jsonl")
    assignment = json.loads((out / "manifest.split.json").read_text())["assignment"]
    runs = _runs(out)
    last = runs[-1] if runs else {}
    recipe = json.loads(recipes.recipe_path(task).read_text(encoding="utf-8"))
    size = sum(p.stat().st_size for sub in ("audio", "midi", "rows") if (out / sub).is_dir()
               for p in (out / sub).iterdir())
    programs = render.FOLK_PROGRAMS if task == "folk" else render.VOCAL_PROGRAMS
    bpm = render.BEAT_BPM if task == "folk" else render.VOCAL_BEAT_BPM
    fail = Counter(f.get("label") or "?" for f in failures)
    fallbacks = Counter(r.get("repeats", "expanded") for r in rows)
    limit = last.get("limit")
    sel = recipe["selection"]
    text = [
        f"# Data card: `{task}`\n",
        f"{TASKS[task]}. Labels: {', '.join(sorted({r['label'] for r in rows}))}.\n",
        "## Sources and licences\n",
        f"- Scores: {SOURCES[task]} They ship inside the `music21` wheel (music21 "
        f"{recipe['music21']}, BSD-3-Clause; the corpus' own terms are in "
        "`music21/corpus/license.txt`: encodings distributed with the encoders' permission, "
        "works out of copyright in the US, some encodings restricted to non-commercial use).",
        "- Soundfont: `TimGM6mb.sf2` (General MIDI, by Tim Brechbill, distributed under the "
        "GNU GPL v2 with MuseScore 1) from the `pretty_midi` wheel (MIT); synthesiser "
        "`tinysoundfont` (MIT). The rendered audio derives from both the scores and the "
        "soundfont: check their terms before redistributing it. The package ships only the "
        "recipe.\n",
        "## Selection (shipped recipe)\n",
        f"`mmengine/data/recipes/{task}.json`, generated by `{recipe['generated_by']}`: "
        f"{len(recipe['items'])} pieces in {sel['groups']} groups.\n",
        _table(["pieces per class and collection", "n"],
               [[k, v] for k, v in sel.get("tunes_per_class_and_collection", {}).items()]),
        _table(["left out", "n"], [[k.replace("left out: ", ""), v]
                                   for k, v in sel["left_out"].items()]) if sel["left_out"]
        else "Nothing left out.\n",
        "## Build\n",
        f"- command: `mmengine data build {task}" + (f" --limit {limit}" if limit else "")
        + (f" --train-renderings {last['train_renderings']}`"
           if last.get("train_renderings") else "`"),
        f"- size on disk (audio + MIDI + rows): {size / 1e6:.0f} MB for {len(rows)} clips; "
        f"runs into this folder (wall time, clips rendered / reused from an earlier run):\n",
        _table(["finished", "wall s", "workers", "rendered", "reused", "limit"],
               [[r.get("finished", "?"), f"{r.get('wall_s', float('nan')):.0f}",
                 r.get("workers", "?"), r.get("rendered", "?"), r.get("reused", "?"),
                 r.get("limit") or "-"] for r in runs]),
        "- clips: 30 s at 22,050 Hz, mono FLAC 16-bit, RMS-normalised to "
        f"{render.TARGET_DBFS:.0f} dBFS (scaled down if the peak would exceed 0.999), the "
        "piece looped back to back (never padded with silence).",
        f"- instrument: one General MIDI program per clip from {list(programs)}, the same "
        "pool for every class; soundfont `TimGM6mb.sf2`; constant velocity.",
        f"- tempo: the beat of the meter at {bpm[0]:.0f}-{bpm[1]:.0f} bpm for every class; "
        f"transposition {render.TRANSPOSE[0]}..{render.TRANSPOSE[1] - 1} semitones on the "
        "notes (never the key signature).",
        f"- repeats: {dict(fallbacks)} (`expanded`: music21 `expandRepeats`; otherwise the "
        "fallback that produced the notes).",
        _extras_line(out, rows, runs),
        f"- seeds: rendering k of a piece uses a generator seeded by SHA-256 of (seed "
        f"{rows[0]['seed']}, task, source, tune index, k); the split uses the same seed.\n",
        "## Counts per class and split\n",
        "70/15/15, stratified by label, grouped by `group` (tune identity: normalised title or "
        "melody incipit, and for chorales lyric incipit), in "
        "`manifest.split.json`.\n",
        _split_table(rows, assignment),
        "## Failures\n",
        (f"{len(failures)} renderings failed after every fallback and are left out "
         f"(reasons in `failures.jsonl`):\n\n" + _table(["class", "failed"], sorted(fail.items()))
         if failures else "No rendering failed.\n"),
        "## Known leaks and how big they are\n",
        "\n".join(f"- {x}" for x in LEAKS[task] + _measured_leaks(task, rows)) + "\n",
        "## Quick baselines\n",
        _baseline_section(out, task),
        _ceiling_section(out, task),
        "## Files\n",
        "`manifest.jsonl` (one clip per line: `id`, `path`, `label`, `title` (folk), `lyrics` "
        "(vocal), `midi_path`, `group`, then provenance), `manifest.split.json`, "
        "`failures.jsonl`, `build.json` (runs), `audio/*.flac`, `midi/*.mid`, `rows/*.json` "
        "(one finished clip each: what makes a build resumable).\n",
    ]
    path = out / "DATA.md"
    atomic_write(path, lambda t: Path(t).write_text("\n".join(text), encoding="utf-8"))
    return path


# ------------------------------------------------------------------------ docs/DATA.md
def _summary_row(task: str, out: Path) -> List:
    rows = _read_jsonl(out / "manifest.jsonl")
    runs = [r for r in _runs(out) if r.get("rendered")]
    wall = sum(r.get("wall_s", 0.0) for r in runs)
    size = sum(p.stat().st_size for sub in ("audio", "midi", "rows") if (out / sub).is_dir()
               for p in (out / sub).iterdir())
    b = {}
    if (out / "baselines.json").exists():
        b = json.loads((out / "baselines.json").read_text())["scores"]
    text = b.get("title TF-IDF", b.get("lyrics TF-IDF"))
    fmt = (lambda v: "-" if v is None else f"{v:.2f}")  # noqa: E731
    return [f"`{task}`", len(rows), len({r["label"] for r in rows}),
            len({r["group"] for r in rows}), f"{wall:.0f}", f"{size / 1e6:.0f}",
            fmt(b.get("chance")), fmt(b.get("MFCC mean/std")), fmt(b.get("symbolic mean/std")),
            fmt(text)]


#: docs/DATA.md's section on ``--train-renderings`` (the figures were measured once, by hand,
#: with the commands written next to them; ``write_docs`` copies the text as it is)
EXTRA_RENDERINGS_DOC = """## Extra training renderings

`mmengine data build TASK --train-renderings N` renders N more versions of every tune whose group \
is in the training split. Their rendering indices continue after the recipe's own (ids \
`<task>-<hash>-r<k>`), each has its own seed, hence its own instrument from the pool, \
transposition and tempo, and a random loop start: the 30 s clip starts at a random note onset \
of the looped tune instead of its beginning. Their rows carry `"extra": true` and \
`loop_start_q` (quarters into the tune). The persisted split (`manifest.split.json`) is kept \
and only extended, every extra going to `train`; when the folder has no split yet, the plain \
data set is built and split first, from the base renderings only. Validation and test rows, \
audio and MIDI stay byte for byte those of a build without the option, and the recipe's own \
renderings are unchanged. `mmengine features`, `train`, `experiment` and the baselines read \
the extras as training rows like any other (a split extended with new records of training \
groups is accepted; any other mismatch is still refused). A rerun with a smaller N removes \
the extras above it; N = 0, the default, gives the plain build back. Every tune gets N more \
renderings, so the classes with one rendering per tune grow by a larger share of `train` \
than slip jigs (2-3 per tune); the training loss's class weights (on by \
default) follow the training counts.

Cost on `folk` with N = 1, measured on the development machine (2 cores, load average 4-6: \
two trainings were running), into a hard-linked copy of the default build \
(`cp -al ~/.cache/mmengine/data/folk /tmp/folk-aug`; the copy's top-level files were copied \
rather than linked, and its feature cache, which is keyed by absolute audio path, was re-keyed \
to the new folder so that only the new clips were computed):

| step | command | wall time | disk added |
|---|---|---|---|
| render 924 extra clips (one per training tune; the 1469 base clips reused) | \
`time mmengine data build folk --out /tmp/folk-aug --train-renderings 1 --workers 1` | \
6 min 40 s (398 s rendering: 0.43 s per clip on 1 worker) | 757 MB (722 MiB: audio, MIDI, \
rows of the 924 clips) |
| audio features of the 924 new clips (the 1469 others read from the cache), symbolic and \
text features of all 2393 | `time mmengine features /tmp/folk-aug/manifest.jsonl` | 1 min 28 s \
| 708 MB (675 MiB of feature shards) |

The features row above was measured with the previous default front end (the float64 \
reference, no chroma). With today's default (the native front end and the 12-row chroma pitch \
stream), `mmengine features` of the plain builds takes 35 s (folk, 1469 clips) and 15 s \
(vocal, 676 clips) on a quiet machine (`time mmengine features folk --cache /tmp/fc-folk`), \
and the caches hold 1.2 GB and 534 MB (128 log-Mel + 20 MFCC + 12 chroma rows of 1292 float32 \
frames per clip).

The training split grows from 1027 to 1951 clips (in 779 groups); validation (222) and test \
(220) are unchanged.

Effect on the models (docs/results.md, "folk with one extra rendering of each training tune", \
3 seeds, test macro-F1): fusion 0.865 → 0.893, the notes alone 0.872 → 0.893, the network \
without its LSTM 0.883 → 0.886, the random forest 0.866 → 0.870. One training run of 45 epochs \
(36 on the notes, 9 on everything: `mmengine train --data folk --max-epochs 45 --set \
stage1_frac=0.8`) takes about 12 min on 2 threads, 7.0 GB peak RSS.
"""


def write_docs(tasks=("folk", "vocal"), path: Path = DOCS_PATH) -> Path:
    """``docs/DATA.md``: a preface, a summary table and the card of each default build."""

    parts = [
        "# Built-in data sets\n",
        "Real music with no download: scores from the corpus inside the `music21` wheel, "
        "rendered to audio with `tinysoundfont` and the General MIDI soundfont inside the "
        "`pretty_midi` wheel. The package ships the recipes (`mmengine/data/recipes/*.json`: "
        "tune references, labels, groups); `mmengine data build TASK` renders them into "
        "`~/.cache/mmengine/data/TASK` (or `$MMENGINE_DATA_DIR/TASK`, or `--out DIR`), "
        "deterministically for a seed, resumably (rerun after an interruption), on every "
        "core, with `--limit N` for quick runs. The cards below are copies of the `DATA.md` "
        "written next to each build on the development machine (2 cores shared with other "
        "work); regenerate this file with `python -m mmengine.data.corpus.card --docs` after "
        "`python -m mmengine.features.data_baselines TASK` (baselines) and `python -m "
        "mmengine.data.corpus.ceiling TASK` (label ceiling / label noise).\n",
        "| task | clips | classes | groups | render wall s | MB | chance | MFCC | symbolic "
        "| text |\n|---|---|---|---|---|---|---|---|---|---|",
    ]
    cards = []
    for task in tasks:
        out = default_dir(task)
        if not (out / "DATA.md").exists():
            parts.append(f"| `{task}` | not built | | | | | | | | |")
            continue
        parts.append("| " + " | ".join(str(c) for c in _summary_row(task, out)) + " |")
        cards.append((out / "DATA.md").read_text(encoding="utf-8").replace("\n## ", "\n### ")
                     .replace("# Data card", "## Data card", 1))
    parts.append("\nBalanced accuracy on the test split, logistic regression on pooled "
                 "features; details and leak checks in each card. Tasks: "
                 + "; ".join(f"`{k}`: {v}" for k, v in TASKS.items()) + ".\n")
    parts.append(EXTRA_RENDERINGS_DOC)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(parts + cards), encoding="utf-8")
    return path


def main(argv: List[str]) -> int:
    import argparse

    ap = argparse.ArgumentParser(prog="python -m mmengine.data.corpus.card",
                                 description="rewrite the data card of a built data set "
                                 "(its baselines: python -m mmengine.features.data_baselines)")
    ap.add_argument("task", nargs="?", choices=sorted(TASKS))
    ap.add_argument("--out", help="build folder (default: the default build of TASK)")
    ap.add_argument("--docs", action="store_true",
                    help="write docs/DATA.md from the default builds of every task")
    args = ap.parse_args(argv)
    if args.task:
        out = Path(args.out) if args.out else default_dir(args.task)
        sys.stdout.write(f"{render_card(args.task, out)}\n")
    if args.docs:
        sys.stdout.write(f"{write_docs()}\n")
    if not (args.task or args.docs):
        ap.error("give a TASK, --docs or both")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
