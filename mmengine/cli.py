"""The ``mmengine`` command: a thin layer that parses arguments, calls the library, prints.

Every default comes from ``mmengine.config``; nothing here computes anything itself.
"""
from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Callable, Dict, List, Optional

from . import PROJECT, __version__
from .config import AudioConfig, FrontendConfig
from .errors import MMEngineError

Handler = Callable[[argparse.Namespace], int]
_HANDLERS: Dict[str, Handler] = {}


def _handler(name: str):
    def deco(fn: Handler) -> Handler:
        _HANDLERS[name] = fn
        return fn

    return deco


# ----------------------------------------------------------------------------- data
@_handler("data.build")
def _data_build(args: argparse.Namespace) -> int:
    from .data.corpus import build_dataset

    manifest = build_dataset(
        args.task, Path(args.out) if args.out else None, limit=args.limit, seed=args.seed,
        workers=args.workers, progress=not args.quiet,
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


# ------------------------------------------------------------------------- features
def resolve_data(spec: str) -> Path:
    """A built-in task name (built on demand), a manifest file or a folder layout."""
    p = Path(spec)
    if p.exists():
        return p
    from .data.corpus import TASKS, build_dataset, default_manifest

    if spec in TASKS:
        m = default_manifest(spec)
        return m if m.exists() else build_dataset(spec)
    raise MMEngineError(f"{spec}: neither an existing manifest/folder nor a built-in data set "
                        f"({', '.join(TASKS)})")


@_handler("features")
def _features(args: argparse.Namespace) -> int:
    from .data.manifest import load_dataset
    from .features.cache import compute_or_load_audio_features

    ds = load_dataset(resolve_data(args.data))
    cache_dir = Path(args.cache) if args.cache else ds.source.parent / "features"
    feats = compute_or_load_audio_features(
        ds, AudioConfig(), FrontendConfig(), cache_dir, frontend=args.frontend,
        progress=not args.quiet, workers=args.workers,
    )
    print(f"{len(feats)} clips with features in {cache_dir}")
    return 0


# ----------------------------------------------------------------------------- main
def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="mmengine",
        description=f"{PROJECT}: multimodal music classification (audio + text + symbolic) "
        "with fast LSTM inference engines. Not OpenMMLab's mmengine.",
    )
    p.add_argument("--version", action="version", version=f"{PROJECT} {__version__}")
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")

    data = sub.add_parser("data", help="built-in data sets (rendered offline from music21 scores)")
    dsub = data.add_subparsers(dest="data_command", metavar="SUBCOMMAND")
    b = dsub.add_parser("build", help="render a built-in data set into the cache folder")
    b.add_argument("task", nargs="?", default="folk", help="folk (default), vocal or essen")
    b.add_argument("--out", help="output folder (default: $MMENGINE_DATA_DIR/<task> "
                   "or ~/.cache/mmengine/data/<task>)")
    b.add_argument("--limit", type=int, help="render only N items (quick runs, tests)")
    b.add_argument("--seed", type=int, default=0, help="render and split seed (default 0)")
    b.add_argument("--workers", type=int, help="processes (default: all cores)")
    b.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    b.set_defaults(handler="data.build")
    ls = dsub.add_parser("list", help="list built-in data sets and whether they are built")
    ls.set_defaults(handler="data.list")

    f = sub.add_parser("features", help="extract and cache audio features of a data set")
    f.add_argument("data", help="built-in task name, manifest (.csv/.jsonl) or folder root/<label>/<file>")
    f.add_argument("--cache", help="cache folder (default: <data folder>/features)")
    f.add_argument("--frontend", default="reference", choices=["reference", "dali"],
                   help="feature implementation (default: reference)")
    f.add_argument("--workers", type=int, default=1, help="decode threads (default 1)")
    f.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    f.set_defaults(handler="features")
    return p


def main(argv: Optional[List[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
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
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
