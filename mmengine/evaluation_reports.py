"""What evaluation writes for people to read: the PNG plots (confusion matrix, learning curves,
bars), the Markdown of one run's report (``_run_markdown``) and of the model comparison
(``_comparison_markdown``), with the metrics they summarise (``SUMMARY_KEYS``) and the mean ±
standard deviation they print (``_mean_sd``). Separate from the runs (``mmengine.evaluation``,
which re-exports these names) and from the scoring: these format results already computed and
compute none.
"""
from __future__ import annotations

from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

SUMMARY_KEYS = ("accuracy", "macro_precision", "macro_recall", "macro_f1", "weighted_f1")


# ------------------------------------------------------------------ plots
def _pyplot():
    import matplotlib as mpl  # a core dependency

    mpl.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_confusion(cm, names: Sequence[str], path: Path, title: str = "") -> Path:
    plt = _pyplot()
    cm = np.asarray(cm, dtype=float)
    norm = cm / np.maximum(cm.sum(1, keepdims=True), 1)
    size = 2.5 + 0.45 * len(names)
    fig, ax = plt.subplots(figsize=(size, size))
    ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    for i in range(len(names)):
        for j in range(len(names)):
            ax.text(j, i, f"{int(cm[i, j])}", ha="center", va="center",
                    color="white" if norm[i, j] > 0.5 else "black", fontsize=8)
    ax.set_xticks(range(len(names)), names, rotation=45, ha="right")
    ax.set_yticks(range(len(names)), names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title or "confusion matrix (test)")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def plot_learning_curves(history: List[dict], path: Path, best_epoch: int = -1) -> Path:
    plt = _pyplot()
    ep = [h["epoch"] for h in history]
    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 3.6))
    a.plot(ep, [h["train_loss"] for h in history], label="train loss")
    a.plot(ep, [h["val_loss"] for h in history], label="val loss")
    a.set_xlabel("epoch")
    a.legend()
    b.plot(ep, [h["val_macro_f1"] for h in history], label="val macro-F1")
    b.plot(ep, [h["val_accuracy"] for h in history], label="val accuracy")
    nn = [(h["epoch"], h["val_macro_f1_without_notes"]) for h in history
          if "val_macro_f1_without_notes" in h]
    if nn:  # a model that reads the notes: what it gives without them (a user without MIDI)
        b.plot(*zip(*nn), label="val macro-F1 without notes")
    for ax in (a, b):
        if best_epoch > 0:
            ax.axvline(best_epoch, color="grey", ls="--", lw=0.8)
    b.set_xlabel("epoch")
    b.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def plot_bars(values: Dict[str, float], errors: Optional[Dict[str, float]], path: Path,
              ylabel: str, title: str) -> Path:
    plt = _pyplot()
    names = list(values)
    fig, ax = plt.subplots(figsize=(1.5 + 0.8 * len(names), 3.6))
    ax.bar(range(len(names)), [values[n] for n in names],
           yerr=None if errors is None else [errors.get(n, 0.0) for n in names], capsize=3)
    ax.set_xticks(range(len(names)), names, rotation=30, ha="right")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.axhline(0, color="black", lw=0.6)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


# ------------------------------------------------------------------ Markdown
def _fmt_metrics(m: dict) -> str:
    return " | ".join(f"{m[k]:.4f}" for k in SUMMARY_KEYS)


def _run_markdown(r: dict) -> str:
    t = r["test"]
    best_f1 = r["validation"].get("best_val_macro_f1", float("nan"))
    lines = [f"# Run report: {r['arch']} ({', '.join(r['modalities'])})", "",
             f"Best validation macro-F1 {best_f1:.4f} at epoch "
             f"{r['validation'].get('best_epoch')}; test clips: {r['n_test']}.", "",
             "| " + " | ".join(SUMMARY_KEYS) + " |", "|" + "---|" * len(SUMMARY_KEYS),
             "| " + _fmt_metrics(t) + " |", "", "| class | precision | recall | F1 | support |",
             "|---|---|---|---|---|"]
    lines += [f"| {c['name']} | {c['precision']:.4f} | {c['recall']:.4f} | {c['f1']:.4f} | "
              f"{c['support']} |" for c in t["per_class"]]
    mc = r.get("modality_contributions")
    if mc:
        lines += ["", "Modality contributions (macro-F1 lost on test):", "",
                  "| modality | dropped | permuted |", "|---|---|---|"]
        lines += [f"| {m} | {v['drop']:+.4f} | {v['permute']:+.4f} |" for m, v in mc.items()]
    lines += [""] + [f"![{k}]({v})" for k, v in r["plots"].items()]
    return "\n".join(lines) + "\n"


def _mean_sd(values) -> Tuple[float, float]:
    """Mean and sample standard deviation (0 for a single value) of ``values``."""
    v = np.asarray(values, dtype=np.float64)
    return float(v.mean()), (float(v.std(ddof=1)) if v.size > 1 else 0.0)


def _comparison_markdown(c: dict) -> str:
    """The comparison as Markdown: test metrics (mean ± std over seeds) with the validation
    macro-F1 that selected each model, then the modality contributions of every model that
    has them (loss of test macro-F1 when a modality is dropped or permuted, mean ± std)."""
    def ms(values):
        v = [x for x in values if x is not None]
        return "{:.4f} ± {:.4f}".format(*_mean_sd(v)) if v else "–"

    lines = [f"# Model comparison (test split, {c['n_test']} clips; mean ± std over seeds "
             f"{c['seeds']})", "",
             "| model | seeds | " + " | ".join(SUMMARY_KEYS) + " | val macro_f1 |",
             "|---|---|" + "---|" * (len(SUMMARY_KEYS) + 1)]
    for name, r in c["models"].items():
        cells = [str(len(r["runs"]))]
        cells += [f"{r['mean'][k]:.4f} ± {r['std'][k]:.4f}" for k in SUMMARY_KEYS]
        cells.append(ms(run.get("val_macro_f1") for run in r["runs"]))
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    if c.get("bootstrap"):
        lines += ["", "Paired bootstrap over test groups (fusion minus the other model's "
                  "test macro-F1, each averaged over its seeds; 95% interval of 2,000 "
                  "resamplings of the test tunes/hymns):", ""]
        for kind, b in c["bootstrap"].items():
            lines.append(f"- vs {kind} `{b['model']}`: {b['diff']:+.4f} "
                         f"[{b['low']:+.4f}, {b['high']:+.4f}] ({b['n_groups']} groups)")
    if c["skipped"]:
        lines += ["", "Skipped: " + ", ".join(f"{k} ({v})" for k, v in c["skipped"].items())]
    if c.get("incomplete"):
        lines += ["", "Not finished (seeds without a test score): " + ", ".join(
            f"{k} {v}" for k, v in c["incomplete"].items())]
    contrib = {n: [run["modality_contributions"] for run in r["runs"]
                   if run.get("modality_contributions")] for n, r in c["models"].items()}
    contrib = {n: v for n, v in contrib.items() if v}
    if contrib:
        lines += ["", "## Modality contributions (test macro-F1 lost when the modality is "
                  "dropped / permuted across clips; positive = the model uses it)", "",
                  "| model | modality | drop | permute |", "|---|---|---|---|"]
        for name, runs in contrib.items():
            for mod in runs[0]:
                lines.append(f"| {name} | {mod} | {ms(r[mod]['drop'] for r in runs)} | "
                             f"{ms(r[mod]['permute'] for r in runs)} |")
    return "\n".join(lines) + "\n"
