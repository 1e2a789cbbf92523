"""``mmengine data build|list|path`` and ``mmengine features``: the data side of the command
(its parsers and handlers; ``mmengine.cli`` adds them to the ``mmengine`` parser and runs them).

Every default comes from ``mmengine.config``; nothing here computes anything itself.
"""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Callable, Dict

from .config import CorpusConfig, FeatureLoadConfig
from .errors import MMEngineError

Handler = Callable[[argparse.Namespace], int]
#: handler name (a parser's ``handler`` default) -> function; ``mmengine.cli`` merges them
HANDLERS: Dict[str, Handler] = {}


def _handler(name: str):
    def deco(fn: Handler) -> Handler:
        HANDLERS[name] = fn
        return fn

    return deco


# ----------------------------------------------------------------------------- data
@_handler("data.build")
def _data_build(args: argparse.Namespace) -> int:
    from .data.corpus import build_dataset

    manifest = build_dataset(
        args.task, Path(args.out) if args.out else None, limit=args.limit, seed=args.seed,
        workers=args.workers, progress=not args.quiet, train_renderings=args.train_renderings,
    )
    print(f"manifest: {manifest}")
    return 0


@_handler("data.list")
def _data_list(args: argparse.Namespace) -> int:
    from .data.corpus import TASKS, default_manifest

    for name, desc in TASKS.items():
        m = default_manifest(name)
        state = "built" if m.exists() else "not built"
        print(f"{name:8s} {desc}  [{state}: {m.parent}]")
    return 0


@_handler("data.path")
def _data_path(args: argparse.Namespace) -> int:
    from .data.corpus import TASKS, default_dir

    if args.task not in TASKS:
        raise MMEngineError(f"unknown data set {args.task!r}; choose from {', '.join(TASKS)}")
    print(default_dir(args.task))
    return 0


# ------------------------------------------------------------------------- features
@_handler("features")
def _features(args: argparse.Namespace) -> int:
    from .api import load_features

    fs, vec = load_features(args.data, cache_dir=args.cache, frontend=args.frontend,
                            progress=not args.quiet, workers=args.workers)
    counts = {s: int((fs.split == s).sum()) for s in ("train", "val", "test")}
    print(f"{len(fs.ids)} clips, {fs.mfcc.shape[-1]} frames each; split {counts}; "
          f"text: {'TF-IDF ' + str(fs.text.shape[1]) + ' terms' if fs.text is not None else 'none'}; "
          f"symbolic: {'yes' if fs.symbolic is not None else 'no'}")
    if fs.excluded:
        print(f"excluded {len(fs.excluded)} clip(s): " +
              "; ".join(f"{k}: {v}" for k, v in list(fs.excluded.items())[:5]))
    return 0


# ---------------------------------------------------------------------------- parsers
def _non_negative_int(text: str) -> int:
    """argparse type: an integer >= 0."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {value}")
    return value


def add_data_parsers(sub) -> None:
    """Add the ``data`` (``build``, ``list``, ``path``) and ``features`` subcommands to the
    ``mmengine`` parser's subparsers ``sub``."""
    from .data.corpus.recipes import TASKS  # names for --help (stdlib + numpy)

    data = sub.add_parser("data", help="built-in data sets (rendered offline from music21 scores)")
    dsub = data.add_subparsers(dest="data_command", metavar="SUBCOMMAND")
    b = dsub.add_parser("build", help="render a built-in data set into the cache folder")
    b.add_argument("task", nargs="?", default=CorpusConfig.task,
                   help="a built-in data set: " + ", ".join(TASKS) +
                   f" (default {CorpusConfig.task})")
    b.add_argument("--out", help="output folder (default: $MMENGINE_DATA_DIR/<task> "
                   "or ~/.cache/mmengine/data/<task>)")
    b.add_argument("--limit", type=int, help="render only N items (quick runs, tests)")
    b.add_argument("--seed", type=int, default=CorpusConfig.seed,
                   help=f"render and split seed (default {CorpusConfig.seed})")
    b.add_argument("--workers", type=int, help="processes (default: all cores)")
    b.add_argument("--train-renderings", type=_non_negative_int,
                   default=CorpusConfig.train_renderings, metavar="N",
                   help="N extra renderings of each tune in the training split (own instrument, "
                   "tempo, transposition and a random loop start); the persisted split is kept "
                   "and extended, validation and test are untouched; "
                   f"{CorpusConfig.train_renderings} (default) builds no "
                   "extras and removes those of an earlier build")
    b.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    b.set_defaults(handler="data.build")
    ls = dsub.add_parser("list", help="list built-in data sets and whether they are built")
    ls.set_defaults(handler="data.list")
    dp = dsub.add_parser("path", help="print the folder of a built-in data set")
    dp.add_argument("task", help="folk, vocal, ...")
    dp.set_defaults(handler="data.path")

    f = sub.add_parser("features", help="extract and cache audio features of a data set")
    f.add_argument("data", help="built-in task name, manifest (.csv/.jsonl) or folder root/<label>/<file>")
    f.add_argument("--cache", help="cache folder (default: <data folder>/features)")
    f.add_argument("--frontend", default=FeatureLoadConfig.frontend,
                   choices=["auto", "reference", "native", "dali"],
                   help=f"feature implementation (default: {FeatureLoadConfig.frontend}: "
                        "native C++ where built, else reference)")
    f.add_argument("--workers", type=int, default=FeatureLoadConfig.workers,
                   help=f"decode threads (default {FeatureLoadConfig.workers})")
    f.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    f.set_defaults(handler="features")
