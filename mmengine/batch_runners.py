"""The runners of ``mmengine batch``: ``BatchClassifier`` (one engine, loaded once, turning
batches of inputs into result rows: the in-process runner's engine and the body of each Ray
actor, so Ray imports it from here by name) and the two ways of running it, in this process
(``_run_in_process``) and over a Ray Data actor pool (``_run_ray``, with the cluster checks).
Separate from the driver (``mmengine.batch``, which re-exports ``BatchClassifier``): this is the
only part of a batch that touches Ray, and it writes nothing itself (each runner hands its rows
to the ``ResultStore`` it is given).
"""
from __future__ import annotations

import dataclasses
import json
import logging
import math
import re
from pathlib import Path
from typing import Dict, List, Optional, Sequence

from .batch_inputs import BatchInput, engine_identity
from .batch_store import RAY_HINT, result_row
from .config import BatchConfig, EngineConfig
from .errors import BatchError, OptionalDependencyError

log = logging.getLogger("mmengine.batch")


# ------------------------------------------------------------------------------- engine
class BatchClassifier:
    """One engine, loaded once, that turns batches of inputs into result rows (the in-process
    runner and the body of each Ray actor).

    Args:
        engine: the ``.mme`` file.
        backend, frontend: as ``Engine.load``.
        threads: threads of the engine (backend, front end) and its decoding threads (None:
            the engine's defaults).
        top_k: labels per row.
        window_batch: windows per backend call.
        expect_sha256: refuse an engine file whose SHA-256 differs (a node that sees another
            file at the same path).
    """

    def __init__(self, engine, *, backend: str = EngineConfig.backend,
                 frontend: str = EngineConfig.frontend,
                 threads: Optional[int] = None, top_k: int = BatchConfig.top_k,
                 window_batch: int = BatchConfig.window_batch,
                 expect_sha256: Optional[str] = None):
        from .runtime.engine import Engine

        ident = engine_identity(engine)
        if expect_sha256 and ident["engine_sha256"] != expect_sha256:
            raise BatchError(f"{engine}: SHA-256 {ident['engine_sha256'][:16]}… here, "
                             f"{expect_sha256[:16]}… on the driver: every node must see the "
                             f"same engine file at this path")
        self.identity = {k: ident[k] for k in ("engine_sha256", "engine_version")}
        self.engine = Engine.load(engine, backend, frontend=frontend, threads=threads)
        self.threads = threads
        self.top_k = top_k
        self.window_batch = window_batch
        self._text = "text" in self.engine.input_names
        self._midi = "symbolic" in self.engine.input_names

    def _classify(self, items: Sequence[BatchInput]):
        return self.engine.classify(
            [it.path for it in items],
            [it.text for it in items] if self._text else None,
            midi=[it.midi for it in items] if self._midi else None,
            top_k=self.top_k, batch_size=self.window_batch, workers=self.threads or 0)

    def rows(self, items: Sequence[BatchInput]) -> List[dict]:
        """One result row per input, in order. Items already marked bad become their error
        row; an error that escapes the engine for the whole batch (not an input's own) is
        retried item by item, so that it lands only on the input that causes it."""
        todo = [it for it in items if it.error_type is None and it.path]
        got: Dict[int, dict] = {}
        if todo:
            try:
                results = self._classify(todo)
            except Exception:  # noqa: BLE001 - isolate the input that breaks the engine
                log.warning("a batch of %d failed as a whole; classifying it item by item",
                            len(todo), exc_info=True)
                results = []
                for it in todo:
                    try:
                        results.extend(self._classify([it]))
                    except Exception as exc:  # noqa: BLE001
                        results.append(exc)
            for it, res in zip(todo, results):
                got[id(it)] = result_row(self.identity, it, res)
        return [got.get(id(it)) or result_row(self.identity, it, None) for it in items]

    def __call__(self, batch: dict) -> dict:
        """Ray Data ``map_batches``: a column ``input`` (each ``BatchInput`` as JSON) in, a
        column ``row`` (each result row as JSON) out. JSON on both sides: a column of
        optional strings survives no Arrow/numpy round trip unchanged (None becomes NaN)."""
        import numpy as np

        items = [BatchInput(**json.loads(s)) for s in batch["input"]]
        rows = self.rows(items)
        return {"row": np.array([json.dumps(r, allow_nan=False) for r in rows], dtype=object)}


# ------------------------------------------------------------------------------- running
def _import_ray():
    try:
        import ray
        import ray.data  # noqa: F401
    except ImportError as exc:
        raise OptionalDependencyError(f"--ray needs Ray Data: {RAY_HINT}") from exc
    return ray


def _run_in_process(todo, store, bar, *, engine, backend, frontend, threads, batch_size,
                    top_k, window_batch, expect_sha256) -> None:
    clf = BatchClassifier(engine, backend=backend, frontend=frontend, threads=threads,
                          top_k=top_k, window_batch=window_batch, expect_sha256=expect_sha256)
    for s in range(0, len(todo), batch_size):
        rows = clf.rows(todo[s:s + batch_size])
        store.commit(rows)
        bar.update(len(rows))
        bar.set_postfix(failed=len(store.failed), refresh=False)


def _ray_plan(ray, workers: Optional[int], threads: Optional[int]):
    cpus = int(ray.cluster_resources().get("CPU", 0))
    if cpus < 1:
        raise BatchError("the Ray cluster has no CPUs to run actors on")
    if threads is None:
        threads = max(1, cpus // workers) if workers else BatchConfig.ray_threads
    if workers is None:
        workers = max(1, cpus // threads)
    if workers * threads > cpus:
        raise BatchError(f"{workers} actor(s) x {threads} thread(s) = {workers * threads} CPUs, "
                         f"but the Ray cluster has {cpus}: lower --workers or --threads")
    return workers, threads


def _probe(address: str, timeout: float = 5.0) -> None:
    """Refuse at once a HOST:PORT where nothing listens (``ray.init`` would wait minutes)."""
    import socket

    m = re.fullmatch(r"\[?([^\]]+?)\]?:(\d+)", address.strip())
    if m is None:  # "auto", "ray://...": Ray's own forms
        return
    try:
        socket.create_connection((m.group(1), int(m.group(2))), timeout=timeout).close()
    except OSError as exc:
        raise BatchError(f"no Ray cluster answers at {address} ({exc.strerror or exc}): start "
                         f"one there with `ray start --head --port={m.group(2)}`, or leave "
                         f"the address out to run on a local one") from None


def _run_ray(todo, store, bar, *, address, workers, threads, batch_size, engine, backend,
             frontend, top_k, window_batch, expect_sha256):
    ray = _import_ray()
    started = False
    if not ray.is_initialized():
        addr = None if address in (None, True, "", "local") else str(address)
        try:
            ray.init(address=addr, include_dashboard=False, logging_level=logging.WARNING)
        except ConnectionError as exc:
            raise BatchError(f"cannot join the Ray cluster at {addr}: {exc}") from None
        started = True
    # Ray Data's progress bars and per-run INFO lines would interleave with ours
    quiet = {name: logging.getLogger(name) for name in (
        "ray.data._internal.progress", "ray.data._internal.execution.streaming_executor")}
    levels = {name: lg.level for name, lg in quiet.items()}
    for lg in quiet.values():
        lg.setLevel(logging.ERROR)
    ctx = ray.data.DataContext.get_current()
    bars = ctx.enable_progress_bars
    ctx.enable_progress_bars = False  # ours counts committed results
    try:
        workers, threads = _ray_plan(ray, workers, threads)
        ds = ray.data.from_items(
            [{"input": json.dumps(dataclasses.asdict(it))} for it in todo],
            override_num_blocks=max(1, math.ceil(len(todo) / batch_size)))
        ds = ds.map_batches(
            BatchClassifier, batch_size=batch_size, batch_format="numpy",
            compute=ray.data.ActorPoolStrategy(size=workers), num_cpus=threads,
            fn_constructor_args=(str(Path(engine).absolute()),),
            fn_constructor_kwargs=dict(backend=backend, frontend=frontend, threads=threads,
                                       top_k=top_k, window_batch=window_batch,
                                       expect_sha256=expect_sha256))
        try:
            for batch in ds.iter_batches(batch_size=None, batch_format="numpy"):
                rows = [json.loads(s) for s in batch["row"]]
                store.commit(rows)
                bar.update(len(rows))
                bar.set_postfix(failed=len(store.failed), refresh=False)
        except ray.exceptions.RayError as exc:
            raise BatchError(f"the Ray run stopped: {_root_cause(exc)}; the {len(store.lines)} "
                             f"results committed are kept: fix the cause and run the same "
                             f"command again") from exc
    finally:
        ctx.enable_progress_bars = bars
        for name, lg in quiet.items():
            lg.setLevel(levels[name])
        if started:
            ray.shutdown()
    return workers, threads


def _root_cause(exc: BaseException) -> str:
    """The innermost ``SomeError: message`` line of a Ray error (whose text carries the remote
    traceback), else its first line."""
    text = str(exc)
    found = re.findall(r"^(?:[A-Za-z_][\w.]*\.)?([A-Za-z_]\w*(?:Error|Exception)): (.+)$", text,
                       flags=re.M)
    if found:
        name, msg = found[-1]
        return f"{name}: {msg}"
    return text.strip().splitlines()[0] if text.strip() else type(exc).__name__
