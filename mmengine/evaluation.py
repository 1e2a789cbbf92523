"""Evaluation: test metrics, modality contributions, reports and plots, and the multi-seed
model comparison (fusion LSTM vs SVM, RF, CNN, plain RNN, and each single modality).

Protocol: every choice (epochs, hyper-parameters) is made on the validation split; the test
split is scored once per trained model and the result is stored (``test_metrics.json``), so a
repeated call reuses it instead of scoring again.

The runs are here (``test_once``, ``evaluate_run``, ``run_experiment`` and the variants it
compares); beside this module, and re-exported by it: ``evaluation_scoring`` (metrics, the
paired bootstrap, modality contributions) and ``evaluation_reports`` (plots and Markdown).
"""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Dict, Iterable, List, Optional, Sequence

import numpy as np

from .checkpoint import atomic_write_json, load_checkpoint
from .config import (LEGACY_MODEL_DEFAULTS, LEGACY_TRAIN_DEFAULTS, MODALITIES,
                     ExperimentConfig, ModelConfig, TrainConfig, to_dict)
from .errors import DataError
from .evaluation_reports import (SUMMARY_KEYS, _comparison_markdown,  # noqa: F401
                                 _fmt_metrics, _mean_sd, _pyplot, _run_markdown, plot_bars,
                                 plot_confusion, plot_learning_curves)
from .evaluation_scoring import (_predictions, label_map,  # noqa: F401 (re-exported)
                                 modality_contributions, paired_bootstrap, score)
from .metrics import classification_metrics
from .training import decide, predict_logits, train, validate_feature_set  # noqa: F401

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
#: the models an experiment compares by default
DEFAULT_MODELS = ExperimentConfig.models


# ------------------------------------------------------------------ one run
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


def run_experiment(feature_set, out_dir, *, seeds: Iterable[int] = ExperimentConfig.seeds,
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


def _mean_std(runs: List[dict]) -> dict:
    stats = {k: _mean_sd([r["test"][k] for r in runs]) for k in SUMMARY_KEYS}
    return {"mean": {k: m for k, (m, _) in stats.items()},
            "std": {k: sd for k, (_, sd) in stats.items()}}
