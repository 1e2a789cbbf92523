"""The ``mmengine`` command: a thin layer that parses arguments, calls the library, prints.

Every default comes from ``mmengine.config``; nothing here computes anything itself.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import sys
from pathlib import Path
from typing import Dict, List, Optional

from . import PROJECT, __version__
from .cli_data import HANDLERS as _DATA_HANDLERS
from .cli_data import Handler, add_data_parsers
from .config import (BatchConfig, BenchConfig, BuildConfig, CorpusConfig, EngineConfig,
                     ExperimentConfig, ModelConfig, TrainConfig)
from .errors import MMEngineError

#: exit status of ``mmengine classify`` when at least one input failed (every result printed)
EXIT_INPUT_FAILED = 3

_HANDLERS: Dict[str, Handler] = dict(_DATA_HANDLERS)  # the data side: cli_data.py


def _handler(name: str):
    def deco(fn: Handler) -> Handler:
        _HANDLERS[name] = fn
        return fn

    return deco


# ---------------------------------------------------------------------- train / eval
def _settings(args, cls) -> dict:
    """``--set FIELD=VALUE`` pairs that name fields of ``cls``, parsed by the field's type
    (booleans: true/false/1/0; tuples: comma-separated)."""
    out = {}
    known = {f.name: f for f in dataclasses.fields(ModelConfig) + dataclasses.fields(TrainConfig)}
    for item in getattr(args, "set", None) or []:
        name, sep, text = item.partition("=")
        name = name.strip().replace("-", "_")
        if not sep or name not in known:
            raise MMEngineError(f"--set {item!r}: expected FIELD=VALUE with FIELD one of "
                                f"{', '.join(sorted(known))}")
        if name not in {f.name for f in dataclasses.fields(cls)}:
            continue
        default = getattr(cls(), name)
        try:
            if isinstance(default, bool):
                if text.lower() not in ("true", "false", "1", "0"):
                    raise ValueError(text)
                value = text.lower() in ("true", "1")
            elif isinstance(default, tuple):
                kind = type(default[0]) if default else str
                value = tuple(kind(v) for v in text.split(",") if v.strip())
            else:
                value = type(default)(text)
        except ValueError:
            raise MMEngineError(f"--set {item!r}: {text!r} is not a valid "
                                f"{type(default).__name__}") from None
        out[name] = value
    return out


def _model_cfg(args) -> ModelConfig:
    kw = _settings(args, ModelConfig)
    if args.modalities:
        kw["modalities"] = tuple(args.modalities.split(","))
    if args.arch:
        kw["arch"] = args.arch
    if getattr(args, "pooling", None):
        kw["pooling"] = args.pooling
    return dataclasses.replace(ModelConfig(), **kw)


def _train_cfg(args) -> TrainConfig:
    kw = _settings(args, TrainConfig)
    kw.update({k: getattr(args, k) for k in ("max_epochs", "seed", "num_threads")
               if getattr(args, k, None) is not None})
    return dataclasses.replace(TrainConfig(), **kw)


def _train_argv(args: argparse.Namespace) -> List[str]:
    """The ``mmengine train`` arguments of ``args`` without ``--nproc`` (for the processes
    that ``--nproc`` starts), rebuilt from the train parser's own options."""
    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    argv = (["-v"] if args.verbose else []) + ["train"]
    for action in sub.choices["train"]._actions:
        if not action.option_strings or action.dest in ("help", "nproc"):
            continue
        value, flag = getattr(args, action.dest, None), action.option_strings[-1]
        if value is None or value is False or value == action.default:
            continue
        if isinstance(action, argparse._StoreTrueAction):
            argv.append(flag)
        elif isinstance(action, argparse._AppendAction):
            for item in value:
                argv += [flag, str(item)]
        else:
            argv += [flag, str(value)]
    return argv


@_handler("train")
def _train(args: argparse.Namespace) -> int:
    import os

    from .api import train
    from .config import DistConfig

    if args.nproc is not None and args.nproc < 1:
        raise MMEngineError(f"--nproc must be at least 1, got {args.nproc}")
    if args.nproc is not None and args.nproc > 1:
        from .distributed import launch

        if args.num_threads is None:  # share the cores out among the processes
            per = DistConfig().threads_per_process or max(1, (os.cpu_count() or 1) // args.nproc)
            args.num_threads = per
        return launch(args.nproc, _train_argv(args))
    data = args.manifest or args.data
    res = train(data, args.out, model_cfg=_model_cfg(args), train_cfg=_train_cfg(args),
                resume=args.resume, progress=not args.quiet)
    if os.environ.get("RANK", "0") != "0":  # under torchrun: rank 0 reports
        return 0
    print(f"best validation macro-F1 {res.best_val_f1:.4f} at epoch {res.best_epoch} "
          f"({res.epochs_run} epochs, {res.seconds:.0f} s); run folder: {res.out_dir}")
    return 0


@_handler("evaluate")
def _evaluate(args: argparse.Namespace) -> int:
    from .api import evaluate

    rep = evaluate(args.run, args.data, plots=not args.no_plots, progress=not args.quiet)
    t = rep["test"]
    print(f"test: accuracy {t['accuracy']:.4f}, macro-F1 {t['macro_f1']:.4f} "
          f"({rep['n_test']} clips); report: {Path(args.run) / 'report.md'}")
    return 0


@_handler("experiment")
def _experiment(args: argparse.Namespace) -> int:
    from .api import experiment

    seeds = [int(x) for x in args.seeds.split(",")]
    models = args.models.split(",") if args.models else None
    comp = experiment(args.data, args.out, seeds=seeds, models=models,
                      model_cfg=dataclasses.replace(ModelConfig(), **_settings(args, ModelConfig)),
                      train_cfg=_train_cfg(args), progress=not args.quiet,
                      report_only=args.report_only)
    for name, r in comp["models"].items():
        print(f"{name:16s} macro-F1 {r['mean']['macro_f1']:.4f} ± {r['std']['macro_f1']:.4f}")
    return 0


# ------------------------------------------------------------------------ engines
@_handler("build")
def _build(args: argparse.Namespace) -> int:
    from .api import build_engine

    out = build_engine(args.run, args.output, backend=args.backend, dtype=args.dtype)
    print(f"engine: {out}")
    return 0


@_handler("classify")
def _classify(args: argparse.Namespace) -> int:
    from .api import classify
    from .runtime.engine import MANIFEST_SUFFIXES, format_results, results_to_json

    inputs = list(args.files)
    # one manifest: its rows are the inputs, with their own lyrics/midi columns
    if len(inputs) == 1 and Path(inputs[0]).suffix.lower() in MANIFEST_SUFFIXES:
        if args.lyrics:
            raise MMEngineError("--lyrics cannot be used with a manifest (it has its own column)")
        inputs = inputs[0]
    lyrics = None
    if args.lyrics:
        from .data.manifest import read_text

        lyrics = [read_text(args.lyrics, what="lyrics")] * len(args.files)
    res = classify(args.model, inputs, lyrics, backend=args.backend,
                   top_k=args.top_k, batch_size=args.batch_size, frontend=args.frontend,
                   workers=args.workers, threads=args.threads)
    print(json.dumps(results_to_json(res), indent=1) if args.json else format_results(res))
    return EXIT_INPUT_FAILED if any(not r.ok for r in res) else 0


@_handler("batch")
def _batch(args: argparse.Namespace) -> int:
    from .batch import batch_classify

    ray = None
    if args.ray is not None:
        ray = args.ray or True
    summary = batch_classify(args.model, args.input, args.out, ray=ray, workers=args.workers,
                             threads=args.threads, batch_size=args.batch_size,
                             top_k=args.top_k, backend=args.backend, frontend=args.frontend,
                             retry_errors=args.retry_errors, progress=not args.quiet)
    print(summary.format())
    return 0


@_handler("bench")
def _bench(args: argparse.Namespace) -> int:
    from .api import benchmark
    from .bench import format_table

    res = benchmark(args.model, batches=[int(b) for b in args.batches.split(",")],
                    rounds=args.rounds, threads=args.threads, out_json=args.json,
                    backends=args.backends.split(",") if args.backends else None)
    print(format_table(res))
    return 1 if res["failed"] else 0


# ----------------------------------------------------------------------------- main
def _add_engine_choice(p: argparse.ArgumentParser) -> None:
    """``--backend`` and ``--frontend`` of the commands that run an engine (classify, batch)."""
    p.add_argument("--backend", default=EngineConfig.backend,
                   help=f"{EngineConfig.backend} (default), native, onnx, torch, ...")
    p.add_argument("--frontend", default=EngineConfig.frontend,
                   choices=["auto", "native", "reference", "torch", "dali"],
                   help=f"feature front end (default {EngineConfig.frontend}: native C++ when "
                   "built)")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="mmengine",
        description=f"{PROJECT}: multimodal music classification (audio + text + symbolic) "
        "with fast LSTM inference engines. Not OpenMMLab's mmengine.",
    )
    p.add_argument("--version", action="version", version=f"{PROJECT} {__version__}")
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    add_data_parsers(sub)  # data build|list|path, features (cli_data.py)

    t = sub.add_parser("train", help="train the fusion LSTM (or a baseline) on a data set")
    t.add_argument("--data", default=CorpusConfig.task,
                   help=f"built-in task name, manifest or folder (default {CorpusConfig.task})")
    t.add_argument("--manifest", help="a user manifest (.csv/.jsonl); overrides --data")
    t.add_argument("--out", help="run folder (default runs/<data>)")
    t.add_argument("--arch", choices=["fusion", "cnn"], help="model (default from ModelConfig)")
    t.add_argument("--modalities", help="comma-separated subset of mfcc,mel,text,symbolic")
    t.add_argument("--pooling", choices=["last", "mean", "meanmax"],
                   help="recurrent models: last step (paper), mean, or mean and max over time "
                        f"(default from ModelConfig: {ModelConfig.pooling}; docs/results.md)")
    t.add_argument("--max-epochs", dest="max_epochs", type=int, help="default from TrainConfig")
    t.add_argument("--threads", dest="num_threads", type=int,
                   help=f"torch threads (default from TrainConfig: {TrainConfig.num_threads})")
    t.add_argument("--seed", type=int, help="training seed (default from TrainConfig)")
    t.add_argument("--set", action="append", metavar="FIELD=VALUE",
                   help="any ModelConfig or TrainConfig field, e.g. --set modality_dropout=0.5 "
                        "--set aux_weight=1 --set modalities=mel,symbolic (repeatable)")
    t.add_argument("--resume", action="store_true", help="continue an interrupted run")
    t.add_argument("--nproc", type=int, metavar="N",
                   help="data-parallel training in N local processes: runs this command under "
                        "torchrun (torch.distributed.run --standalone, DDP over gloo) with the "
                        "same global batch; --threads defaults to the cores / N. Several "
                        "nodes: launch 'torchrun ... -m mmengine train ...' yourself (README)")
    t.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    t.set_defaults(handler="train")

    e = sub.add_parser("evaluate", help="test metrics, report.md and plots of a training run")
    e.add_argument("run", help="run folder written by 'mmengine train'")
    e.add_argument("--data", help="data set (default: the one the run was trained on)")
    e.add_argument("--no-plots", action="store_true", help="skip the PNG plots")
    e.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    e.set_defaults(handler="evaluate")

    x = sub.add_parser("experiment", help="fusion LSTM vs SVM, RF, CNN, RNN and single "
                       "modalities, over several seeds")
    x.add_argument("--data", default=CorpusConfig.task,
                   help="built-in task name, manifest or folder")
    x.add_argument("--out", help="output folder (default runs/<data>-experiment)")
    seeds = ",".join(str(s) for s in ExperimentConfig.seeds)
    x.add_argument("--seeds", default=seeds, help=f"comma-separated seeds (default {seeds})")
    notes = {"rf_streams": "the feature-matched baselines",
             "tcn": "the fusion model without its recurrence: the feature-matched CNN"}
    x.add_argument("--models", help="comma-separated (default: " + ", ".join(
                   m + (f" ({notes[m]})" if m in notes else "") for m in ExperimentConfig.models)
                   + "; also available: fusion_paper (the first, paper-style design), "
                   "fusion_mean (it with mean pooling), gru, only_mfcc, only_mel)")
    x.add_argument("--max-epochs", dest="max_epochs", type=int, help="default from TrainConfig")
    x.add_argument("--threads", dest="num_threads", type=int,
                   help="torch threads per training (default from TrainConfig: "
                   f"{TrainConfig.num_threads})")
    x.add_argument("--set", action="append", metavar="FIELD=VALUE",
                   help="a ModelConfig or TrainConfig field of the base settings every model "
                        "starts from (repeatable; see 'mmengine train --help')")
    x.add_argument("--report-only", dest="report_only", action="store_true",
                   help="train nothing: summarise the runs that finished (e.g. while it runs)")
    x.add_argument("--seed", type=int, help=argparse.SUPPRESS)
    x.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    x.set_defaults(handler="experiment")

    bd = sub.add_parser("build", help="build an engine file (.mme) from a run or checkpoint")
    bd.add_argument("run", help="run folder or checkpoint file")
    bd.add_argument("-o", "--output", required=True, help="engine file to write")
    bd.add_argument("--backend", default=BuildConfig.backend,
                    choices=["native", "onnx", "tensorrt", "torch", "triton", "cuda"],
                    help=f"payload to pre-pack (default {BuildConfig.backend})")
    bd.add_argument("--dtype", default=BuildConfig.dtype, choices=["fp32", "bf16", "fp16"],
                    help=f"compute precision (default {BuildConfig.dtype}); a native bf16 "
                    "engine reruns its close calls (top-two margin < "
                    f"{EngineConfig.bf16_recheck_margin:g}, EngineConfig.bf16_recheck_margin) "
                    "in fp32, so it decides like the fp32 engine")
    bd.set_defaults(handler="build")

    c = sub.add_parser(
        "classify", help="classify audio files with an engine file",
        description="Classify audio files (or the rows of one manifest) with an engine file. "
        "Every input gets one result line (or JSON item with --json), in input order; an "
        "input that cannot be used (missing, corrupt, outside the input limits: see README, "
        "'Inputs and limits') gets an ERROR line naming its typed error, and the others "
        "still run.",
        epilog=f"exit status: 0 every input classified; {EXIT_INPUT_FAILED} at least one "
        "input failed (after printing every result); 1 the command failed (e.g. the engine "
        "file was refused); 2 bad arguments.")
    c.add_argument("model", help="engine file (.mme)")
    c.add_argument("files", nargs="+", help="audio files (WAV, FLAC, OGG, MP3) or a manifest")
    c.add_argument("--lyrics", help="a text file used as the lyrics/title of every input")
    c.add_argument("--top-k", dest="top_k", type=int, default=EngineConfig.top_k,
                   help=f"labels shown (default {EngineConfig.top_k})")
    c.add_argument("--batch-size", dest="batch_size", type=int, default=EngineConfig.batch_size,
                   help=f"windows per engine call (default {EngineConfig.batch_size})")
    _add_engine_choice(c)
    c.add_argument("--workers", type=int, default=EngineConfig.workers,
                   help=f"decoding threads (default {EngineConfig.workers}: one per core, at "
                   f"most {EngineConfig.max_auto_workers})")
    c.add_argument("--threads", type=int, help="threads of the native/onnx backend and front end")
    c.add_argument("--json", action="store_true", help="JSON output")
    c.set_defaults(handler="classify")

    bt = sub.add_parser("batch", help="classify a whole library (manifest or folder) into one "
                        "Parquet/JSONL file, resumably, in-process or on Ray")
    bt.add_argument("model", metavar="ENGINE", help="engine file (.mme)")
    bt.add_argument("input", metavar="INPUT", help="manifest (.csv/.jsonl, the columns "
                    "'classify' reads) or a folder of audio (searched recursively)")
    bt.add_argument("--out", required=True, metavar="RESULTS",
                    help="results: .parquet (pyarrow) or .jsonl, one row per input; rerun the "
                         "same command to finish an interrupted run (shards in RESULTS.parts/)")
    bt.add_argument("--ray", nargs="?", const="", default=None, metavar="ADDRESS",
                    help="run on Ray: alone, the cluster Ray finds or a local one it starts; "
                         "with HOST:PORT, join that cluster (needs mmengine-music[ray])")
    bt.add_argument("--workers", type=int,
                    help="Ray actors, each loading the engine once (default: the cluster's "
                         "CPUs / --threads); without --ray only 1")
    bt.add_argument("--threads", type=int,
                    help=f"threads per engine copy (Ray default: {BatchConfig.ray_threads}, or "
                         f"CPUs / --workers; in-process: the engine's default)")
    bt.add_argument("--batch-size", dest="batch_size", type=int, default=BatchConfig.batch_size,
                    help=f"inputs per actor call and per committed shard (default "
                         f"{BatchConfig.batch_size})")
    bt.add_argument("--top-k", dest="top_k", type=int, default=BatchConfig.top_k,
                    help=f"labels per row (default {BatchConfig.top_k})")
    _add_engine_choice(bt)
    bt.add_argument("--retry-errors", dest="retry_errors", action="store_true",
                    help="classify again the inputs whose committed row is an error")
    bt.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    bt.set_defaults(handler="batch")

    bn = sub.add_parser(
        "bench", help="throughput/latency of an engine on every backend here",
        description="Throughput and latency of Engine.predict_features on every backend that "
        "can run the engine (or --backends), each backend warm in its own process, the "
        "backends interleaved round by round (mmengine.harness). Per backend and batch: "
        "seq/s (batch / median over rounds of each round's best call), p50/p99 ms of every "
        "call, GFLOP/s of the recurrent stack and of the whole model (mmengine.flops, from "
        "the engine header), the ratio to torch, the backend process's peak RSS.",
        epilog="exit status: 0 every backend timed; 1 a backend could not be loaded or timed "
        "(the table names why)")
    bn.add_argument("model", help="engine file (.mme)")
    bn.add_argument("--batches", default=",".join(str(b) for b in BenchConfig.batches),
                    help="comma-separated batch sizes")
    bn.add_argument("--rounds", type=int, default=BenchConfig.rounds,
                    help=f"interleaved timed rounds (default {BenchConfig.rounds}; in each, every "
                    f"backend and batch runs up to {BenchConfig.max_reps} calls, stopping once "
                    f"{BenchConfig.target_s:g} s has passed, and keeps the best)")
    bn.add_argument("--threads", type=int,
                    help="threads for native/onnx (default: the backend's own default)")
    bn.add_argument("--backends", help="comma-separated backends (default: all available that "
                    "can run the file)")
    bn.add_argument("--json", help="also write the results as JSON here")
    bn.set_defaults(handler="bench")
    return p


def main(argv: Optional[List[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    # a name no encoding can hold (a lone surrogate from a manifest's JSON escape) is printed
    # escaped instead of failing the whole command after the work is done
    for stream in (sys.stdout, sys.stderr):
        if hasattr(stream, "reconfigure"):
            stream.reconfigure(errors="backslashreplace")
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(levelname)s %(name)s: %(message)s")
    handler = getattr(args, "handler", None)
    if handler is None:
        # a group without its subcommand: show that group's help
        if args.command == "data":
            parser.parse_args(["data", "--help"])
        parser.print_help()
        return 2
    try:
        return _HANDLERS[handler](args)
    except MMEngineError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except ModuleNotFoundError as exc:
        if exc.name != "torch":
            raise
        # the core install classifies (native, onnx) without torch; the rest needs it
        print("error: this command needs torch (training, evaluation, building engines, the "
              "torch backends): pip install torch==2.13.0 'mmengine-music[train]'",
              file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
