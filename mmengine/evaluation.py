"""Evaluation: test metrics, modality contributions, reports and plots, and the multi-seed
model comparison (fusion LSTM vs SVM, RF, CNN, plain RNN, and each single modality).

Protocol: every choice (epochs, hyper-parameters) is made on the validation split; the test
split is scored once per trained model and the result is stored (``test_metrics.json``), so a
repeated call reuses it instead of scoring again.
"""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Dict, Iterable, List, Optional, Sequence, Tuple

import numpy as np
import torch

from .checkpoint import atomic_write_json, load_checkpoint
from .config import (LEGACY_MODEL_DEFAULTS, LEGACY_TRAIN_DEFAULTS, MODALITIES, ModelConfig,
                     TrainConfig, to_dict)
from .errors import DataError
from .metrics import classification_metrics
from .models import batch_from_arrays
from .models.fusion import batch_keys
from .training import decide, predict_logits, train, validate_feature_set

SUMMARY_KEYS = ("accuracy", "macro_precision", "macro_recall", "macro_f1", "weighted_f1")
#: the first fusion design (the paper's per-frame early fusion, strided stems, last step,
#: constant Adam on whole clips), kept as a variant to measure what the default changed
PAPER_MODEL = {**{k: v for k, v in LEGACY_MODEL_DEFAULTS.items()
                  if k not in ("text_dropout", "symbolic_dropout")},
               "text_dropout": ModelConfig().modality_dropout,
               "symbolic_dropout": ModelConfig().modality_dropout}
PAPER_TRAIN = {**LEGACY_TRAIN_DEFAULTS, "weight_decay": 0.0, "patience": 10}
#: model name -> how it is built from the experiment's base ``ModelConfig`` (and, for
#: ``TRAIN_VARIANTS``, ``TrainConfig``)
TORCH_VARIANTS = {
    "fusion": {},
    "fusion_paper": PAPER_MODEL,
    "fusion_mean": {**PAPER_MODEL, "pooling": "mean"},  # the first design, mean over time
    "rnn": {"cell": "rnn"},
    "gru": {"cell": "gru"},
    "cnn": {"arch": "cnn"},
    # the feature-matched CNN: the fusion model's inputs, streams and dilated convolutions,
    # pooled without the recurrence
    "tcn": {"cell": "none"},
    **{f"only_{m}": {"modalities": (m,)} for m in MODALITIES},
    # text alone has no sequence to fuse with: it is broadcast over the steps (early)
    "only_text": {"modalities": ("text",), "text_fusion": "early"},
    "only_audio": {"modalities": ("mfcc", "mel")},
}
TRAIN_VARIANTS = {"fusion_paper": PAPER_TRAIN, "fusion_mean": PAPER_TRAIN}
#: scikit-learn baselines: name -> (kind, pooled features with the fusion model's streams)
SKLEARN_VARIANTS = {"svm": ("svm", False), "rf": ("rf", False),
                    "svm_streams": ("svm", True), "rf_streams": ("rf", True)}
DEFAULT_MODELS = ("fusion", "svm", "rf", "svm_streams", "rf_streams", "cnn", "tcn", "rnn",
                  "only_audio", "only_text", "only_symbolic")


# ------------------------------------------------------------------ scoring
def label_map(model_names: Sequence[str], data_names: Sequence[str],
              labels: np.ndarray) -> np.ndarray:
    """Re-express ``labels`` (indices into ``data_names``) as indices into ``model_names``.
    Raises ``DataError`` when a label used in ``labels`` is unknown to the model."""
    index = {n: i for i, n in enumerate(model_names)}
    labels = np.asarray(labels)
    used = (np.flatnonzero(labels.sum(0) > 0) if labels.ndim == 2
            else np.unique(labels)).tolist()
    unknown = [data_names[i] for i in used if data_names[i] not in index]
    if unknown:
        raise DataError(f"label(s) {unknown} are not among the model's classes {list(model_names)}")
    if list(model_names) == list(data_names):
        return labels
    if labels.ndim == 2:
        out = np.zeros((len(labels), len(model_names)), labels.dtype)
        for j, n in enumerate(data_names):
            if n in index:
                out[:, index[n]] = labels[:, j]
        return out
    return np.array([index[data_names[i]] for i in labels], dtype=np.int64)


def score(model, fs, label_names: Sequence[str], batch: Optional[dict] = None) -> dict:
    """Metrics of a torch ``model`` on all rows of ``fs`` (labels mapped by name)."""
    if len(fs.ids) == 0:
        raise DataError("nothing to evaluate: the split is empty")
    y = label_map(label_names, fs.label_names, fs.labels)
    logits = predict_logits(model, batch if batch is not None else batch_from_arrays(fs))
    C = len(label_names)
    return classification_metrics(y, decide(logits, model.multilabel), C,
                                  multilabel=model.multilabel, label_names=label_names)


def _predictions(model, fs, label_names: Sequence[str]) -> Optional[dict]:
    """Per-clip predictions (single-label only) for the paired bootstrap: ids, predicted
    class names and true class names."""
    if model.multilabel:
        return None
    pred = decide(predict_logits(model, batch_from_arrays(fs)), False)
    return {"ids": list(fs.ids), "pred": [label_names[i] for i in pred],
            "true": [fs.label_names[i] for i in np.asarray(fs.labels)]}


def paired_bootstrap(a_runs: Sequence[dict], b_runs: Sequence[dict], groups: Dict[str, str],
                     *, n: int = 2000, seed: int = 0, level: float = 0.95) -> dict:
    """Macro-F1 difference of model A minus model B on the test split, each the mean over its
    seeds' runs, with a percentile interval from resampling the test *groups* (tunes, hymns)
    with replacement, the same draw for both models (paired).

    Args:
        a_runs, b_runs: ``test_metrics.json["predictions"]`` of each seed of A and of B
            (same clips).
        groups: clip id -> group key.
    Returns:
        ``{"diff": observed difference, "low", "high", "n_groups", "n_boot"}``.
    """
    from sklearn.metrics import f1_score

    ids = list(a_runs[0]["ids"])
    for r in list(a_runs) + list(b_runs):
        if list(r["ids"]) != ids:
            raise ValueError("the runs were scored on different test clips")
    names = sorted({x for r in a_runs for x in r["true"]})
    idx = {k: i for i, k in enumerate(names)}
    true = np.array([idx[x] for x in a_runs[0]["true"]])
    preds_a = [np.array([idx.get(x, -1) for x in r["pred"]]) for r in a_runs]
    preds_b = [np.array([idx.get(x, -1) for x in r["pred"]]) for r in b_runs]
    keys = sorted({groups[i] for i in ids})
    members = {k: [] for k in keys}
    for j, i in enumerate(ids):
        members[groups[i]].append(j)
    members_list = [np.array(members[k]) for k in keys]

    def stat(rows) -> float:
        f = lambda ps: np.mean([f1_score(true[rows], p[rows], labels=range(len(names)),  # noqa: E731
                                         average="macro", zero_division=0) for p in ps])
        return float(f(preds_a) - f(preds_b))

    rng = np.random.default_rng(seed)
    diffs = []
    for _ in range(n):
        pick = rng.integers(0, len(keys), len(keys))
        diffs.append(stat(np.concatenate([members_list[k] for k in pick])))
    lo, hi = np.quantile(diffs, [(1 - level) / 2, 1 - (1 - level) / 2])
    return {"diff": stat(np.arange(len(ids))), "low": float(lo), "high": float(hi),
            "n_groups": len(keys), "n_boot": n}


def modality_contributions(model, fs, label_names: Sequence[str], *, repeats: int = 3,
                           seed: int = 0) -> Dict[str, dict]:
    """Loss in macro-F1 on ``fs`` when one modality is dropped (mask = missing) or permuted
    across clips (mean over ``repeats`` permutations). Positive = the modality helps."""
    full = batch_from_arrays(fs)
    base = score(model, fs, label_names, full)["macro_f1"]
    n = len(fs.ids)
    rng = np.random.default_rng(seed)
    out = {}
    for m in model.modalities:
        data_key, mask_key = batch_keys(m)
        if data_key not in full:
            continue
        dropped = dict(full)
        dropped[mask_key] = torch.zeros(n, dtype=torch.bool)
        drop_f1 = score(model, fs, label_names, dropped)["macro_f1"]
        perm_f1 = []
        for _ in range(repeats):
            p = torch.from_numpy(rng.permutation(n))
            permuted = dict(full)
            permuted[data_key] = full[data_key][p]
            if mask_key in full:
                permuted[mask_key] = full[mask_key][p]
            perm_f1.append(score(model, fs, label_names, permuted)["macro_f1"])
        out[m] = {"drop": base - drop_f1, "permute": base - float(np.mean(perm_f1)),
                  "macro_f1_full": base}
    return out


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


# ------------------------------------------------------------------ one run
def _fmt_metrics(m: dict) -> str:
    return " | ".join(f"{m[k]:.4f}" for k in SUMMARY_KEYS)


def test_once(run_dir: Path, feature_set, *, contributions: bool = True) -> dict:
    """Score the checkpoint in ``run_dir`` on the test split, once: the result is stored in
    ``run_dir/test_metrics.json`` and returned from there on later calls."""
    stored = Path(run_dir) / "test_metrics.json"
    if stored.exists():
        return json.loads(stored.read_text())
    model, meta = load_checkpoint(run_dir)
    validate_feature_set(feature_set, splits=("test",))
    fs = feature_set.subset("test")
    names = meta["label_names"]
    doc = {"test": score(model, fs, names), "n_test": len(fs.ids),
           "predictions": _predictions(model, fs, names)}
    if contributions and len(model.modalities) > 1:
        doc["modality_contributions"] = modality_contributions(model, fs, names)
    atomic_write_json(stored, doc)
    return doc


def evaluate_run(run_dir, feature_set=None, *, plots: bool = True) -> dict:
    """Report of one training run: ``report.json``, ``report.md`` and PNG plots
    (``confusion.png``, ``learning_curves.png``, ``modality_contributions.png``).

    Args:
        run_dir: a folder written by ``train``.
        feature_set: the data (its test split is scored once; omit it when
            ``test_metrics.json`` already exists).
    """
    run_dir = Path(run_dir)
    if feature_set is None and not (run_dir / "test_metrics.json").exists():
        raise DataError(f"{run_dir}: no stored test metrics; pass the feature set")
    model, meta = load_checkpoint(run_dir)
    doc = test_once(run_dir, feature_set)
    names = meta["label_names"]
    report = {"run_dir": str(run_dir), "arch": meta["arch"], "modalities": meta["modalities"],
              "label_names": names, "model_config": meta["model_config"],
              "train_config": meta["train_config"], "validation": meta["metrics"],
              **doc, "plots": {}}
    if plots:
        test = doc["test"]
        if not model.multilabel:
            report["plots"]["confusion"] = str(plot_confusion(
                test["confusion_matrix"], names, run_dir / "confusion.png").name)
        if meta.get("history"):
            report["plots"]["learning_curves"] = str(plot_learning_curves(
                meta["history"], run_dir / "learning_curves.png",
                meta["metrics"].get("best_epoch", -1)).name)
        mc = doc.get("modality_contributions")
        if mc:
            report["plots"]["modality_contributions"] = str(plot_bars(
                {m: v["drop"] for m, v in mc.items()}, None,
                run_dir / "modality_contributions.png", "macro-F1 lost when dropped",
                "modality contributions (test)").name)
    atomic_write_json(run_dir / "report.json", report)
    (run_dir / "report.md").write_text(_run_markdown(report), encoding="utf-8")
    return report


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


# ------------------------------------------------------------------ experiment
def _available(fs) -> tuple:
    present = {"mfcc": True, "mel": True, "text": fs.text is not None,
               "symbolic": fs.symbolic is not None}
    return tuple(m for m in MODALITIES if present[m])


def _sklearn_run(name: str, feature_set, seed: int, modalities, run_dir: Path,
                 grid: Optional[dict] = None) -> dict:
    from .models import SklearnBaseline

    stored = run_dir / "test_metrics.json"
    if stored.exists():
        return json.loads(stored.read_text())
    kind, streams = SKLEARN_VARIANTS[name]
    fs_tr, fs_va, fs_te = (feature_set.subset(s) for s in ("train", "val", "test"))
    base = SklearnBaseline(kind, modalities=modalities, seed=seed, grid=grid,
                           streams=streams).fit(fs_tr, fs_va)
    C = len(feature_set.label_names)
    ml = feature_set.labels.ndim == 2
    val = classification_metrics(fs_va.labels, base.predict(fs_va), C, multilabel=ml)
    test_pred = base.predict(fs_te)
    test = classification_metrics(fs_te.labels, test_pred, C, multilabel=ml,
                                  label_names=feature_set.label_names)
    names = feature_set.label_names
    predictions = None if ml else {
        "ids": list(fs_te.ids), "pred": [names[int(i)] for i in test_pred],
        "true": [names[int(i)] for i in np.asarray(fs_te.labels)]}
    doc = {"test": test, "n_test": len(fs_te.ids), "validation": {"macro_f1": val["macro_f1"]},
           "predictions": predictions,
           "best_params": base.best_params,
           "search": [{"params": p, "val_macro_f1": f} for p, f in base.search]}
    run_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_json(stored, doc)
    return doc


def run_experiment(feature_set, out_dir, *, seeds: Iterable[int] = (0, 1, 2),
                   models: Sequence[str] = DEFAULT_MODELS,
                   model_cfg: ModelConfig = ModelConfig(), train_cfg: TrainConfig = TrainConfig(),
                   progress: bool = True, baseline_grids: Optional[Dict[str, dict]] = None,
                   train_missing: bool = True, **checkpoint_meta) -> dict:
    """Train and test every model of ``models`` with every seed; write the comparison.

    Args:
        feature_set: the data (train/val/test split inside).
        out_dir: ``out_dir/<model>/seed<k>/`` per run, ``comparison.{json,md,png}`` on top.
        seeds: training seeds (the split is fixed by the data).
        models: names from ``TORCH_VARIANTS`` and "svm", "rf"; ``only_<m>`` for a missing
            modality is skipped (listed under ``skipped``).
        model_cfg, train_cfg: the base settings; variants change only what their name says.
        baseline_grids: ``{"svm": grid, "rf": grid}`` overriding ``SVM_GRID`` / ``RF_GRID``.
        train_missing: False = report only: runs without a stored test score are not trained
            (listed under ``incomplete``); models are summarised over the seeds that finished.
        checkpoint_meta: ``audio_config``, ``frontend_config``, ``text_vectorizer`` for the
            saved checkpoints.
    Returns:
        the comparison dict (also in ``comparison.json``): per model, per seed metrics and
        mean ± std of ``SUMMARY_KEYS``.
    """
    validate_feature_set(feature_set, splits=("train", "val", "test"))
    out_dir = Path(out_dir)
    available = _available(feature_set)
    mods = tuple(m for m in model_cfg.modalities if m in available)
    unknown = [m for m in models if m not in TORCH_VARIANTS and m not in SKLEARN_VARIANTS]
    if unknown:
        raise ValueError(f"unknown model name(s) {unknown}; valid: "
                         f"{sorted(TORCH_VARIANTS) + sorted(SKLEARN_VARIANTS)}")
    results: Dict[str, dict] = {}
    skipped = {}
    incomplete: Dict[str, List[int]] = {}
    for name in models:
        if name.startswith("only_") and not set(TORCH_VARIANTS[name]["modalities"]) & \
                set(available):
            skipped[name] = "modality absent from the data"
            continue
        runs = []
        for seed in seeds:
            run_dir = out_dir / name / f"seed{seed}"
            if not train_missing and not (run_dir / "test_metrics.json").exists():
                incomplete.setdefault(name, []).append(seed)
                continue
            if name in SKLEARN_VARIANTS:
                doc = _sklearn_run(name, feature_set, seed, mods, run_dir,
                                   (baseline_grids or {}).get(SKLEARN_VARIANTS[name][0]))
            else:
                cfg = dataclasses.replace(model_cfg, **TORCH_VARIANTS[name])
                tcfg = dataclasses.replace(train_cfg, seed=seed, **TRAIN_VARIANTS.get(name, {}))
                if not (run_dir / "test_metrics.json").exists():
                    train(feature_set, cfg, tcfg, run_dir,
                          progress=progress, resume=True, **checkpoint_meta)
                doc = evaluate_run(run_dir, feature_set)
            stored = run_dir / "test_metrics.json"
            preds = json.loads(stored.read_text()).get("predictions") if stored.exists() else None
            runs.append({"seed": seed, "test": {k: doc["test"][k] for k in SUMMARY_KEYS},
                         "val_macro_f1": (doc.get("validation") or {}).get(
                             "best_val_macro_f1", (doc.get("validation") or {}).get("macro_f1")),
                         "modality_contributions": doc.get("modality_contributions"),
                         "predictions": preds})
        if not runs:
            skipped[name] = "no finished run yet"
            continue
        results[name] = {"runs": runs, **_mean_std(runs)}
    bootstrap = _fusion_bootstrap(results, feature_set)
    for r in results.values():
        for run in r["runs"]:
            run.pop("predictions", None)
    comparison = {"models": results, "skipped": skipped, "incomplete": incomplete,
                  "bootstrap": bootstrap,
                  "seeds": list(seeds),
                  "modalities": list(mods), "model_config": to_dict(model_cfg),
                  "train_config": to_dict(train_cfg), "n_test": int(
                      (np.asarray(feature_set.split) == "test").sum())}
    out_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out_dir / "comparison.json", comparison)
    (out_dir / "comparison.md").write_text(_comparison_markdown(comparison), encoding="utf-8")
    if results:
        plot_bars({n: r["mean"]["macro_f1"] for n, r in results.items()},
                  {n: r["std"]["macro_f1"] for n, r in results.items()},
                  out_dir / "comparison.png", "test macro-F1 (mean ± std over seeds)",
                  "model comparison")
    return comparison


#: the models "fusion" is compared with in the paired bootstrap: baselines, single modalities
BASELINES = ("svm", "rf", "svm_streams", "rf_streams", "cnn", "tcn", "rnn", "fusion_paper")


def _fusion_bootstrap(results: Dict[str, dict], feature_set) -> Dict[str, dict]:
    """Paired group bootstrap of fusion against the best baseline and the best single
    modality (by mean test macro-F1) among the models with stored predictions."""
    groups = feature_set.groups
    if "fusion" not in results or groups is None:
        return {}
    gmap = dict(zip(feature_set.ids, groups))

    def preds(name):
        p = [run.get("predictions") for run in results[name]["runs"]]
        return p if p and all(x is not None for x in p) else None

    fusion = preds("fusion")
    out = {}
    for kind, names in (("best baseline", BASELINES),
                        ("best single modality", [n for n in results if n.startswith("only_")])):
        cands = [n for n in names if n in results and preds(n) is not None]
        if fusion is None or not cands:
            continue
        best = max(cands, key=lambda n: results[n]["mean"]["macro_f1"])
        out[kind] = {"model": best, **paired_bootstrap(fusion, preds(best), gmap)}
    return out


def _mean_sd(values) -> Tuple[float, float]:
    """Mean and sample standard deviation (0 for a single value) of ``values``."""
    v = np.asarray(values, dtype=np.float64)
    return float(v.mean()), (float(v.std(ddof=1)) if v.size > 1 else 0.0)


def _mean_std(runs: List[dict]) -> dict:
    stats = {k: _mean_sd([r["test"][k] for r in runs]) for k in SUMMARY_KEYS}
    return {"mean": {k: m for k, (m, _) in stats.items()},
            "std": {k: sd for k, (_, sd) in stats.items()}}


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
