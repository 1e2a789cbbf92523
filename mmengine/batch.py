"""``mmengine batch``: classify a whole library, in this process or on a Ray cluster.

    >>> from mmengine.batch import batch_classify
    >>> s = batch_classify("folk.mme", "library/", "results.parquet")            # in-process
    >>> s = batch_classify("folk.mme", "tracks.csv", "results.jsonl", ray=True)  # local Ray
    >>> s = batch_classify("folk.mme", "tracks.csv", "results.jsonl", ray="head:6379")
    >>> print(s.format())                     # counts, failures by error type, items/s

INPUT is a manifest (``.csv``/``.jsonl``/``.ndjson``: the columns ``mmengine classify``
reads: ``path`` required, ``id``, ``lyrics``/``lyrics_path``, ``title``, ``midi_path``
optional) or a folder, searched recursively for audio files (id = the path relative to the
folder). Ids must be unique: results are keyed by them.

RESULTS is Parquet (``.parquet``, needs pyarrow) or JSON lines (``.jsonl``/``.ndjson``), one
row per input (``COLUMNS``): ``id``, ``path``, ``label``, ``score``, ``top_k`` (a list of
``{"label", "score"}``, best first), ``windows`` (windows classified), ``error_type`` and
``error`` for an input that could not be classified (the others are null), and the engine's
``engine_sha256`` (of the whole ``.mme`` file) and ``engine_version`` (the mmengine version
that built it). One bad input never stops a batch: it becomes its row.

Resumable, exactly once. Results are committed batch by batch, each batch as one shard file in
``RESULTS.parts/`` written whole (a temporary file, fsync, rename), by the driver only. A run
first reads what is committed (the shards, and RESULTS itself when an earlier run finished) and
classifies only the ids that have no row yet; when every id has one, RESULTS is assembled in
input order, every id once (a row that arrives twice, e.g. from a Ray task retried after an
actor died, is dropped at the driver), written atomically, and the shards are removed. So a run
killed at any point, driver or worker, is finished by running the same command again, and a
finished run run again classifies nothing. Results of another engine (another SHA-256) are
refused, not mixed; a lock stops two runs writing the same RESULTS at once.

Without ``ray`` the batches run in this process on one engine (``threads`` threads). With
``ray``: the driver reads the inputs and hands the ids still to do to Ray Data
(``ray.data.from_items``), ``map_batches`` runs them over a fixed pool of ``workers`` actors
(``ActorPoolStrategy``), each loading the engine once and reserving ``threads`` CPUs, and the
driver streams the results back and commits them. ``ray=True`` joins the cluster Ray finds
(``RAY_ADDRESS``, or one ``ray start`` left on this machine) or starts a local one for the run;
``ray="HOST:PORT"`` joins that cluster. Every node must see the audio and the engine at the same
paths (actors check the engine's SHA-256 against the driver's).
"""
from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import logging
import math
import os
import re
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, Iterable, List, Optional, Sequence, Union

from .config import BatchConfig, EngineConfig
from .data.safe_io import atomic_write
from .errors import BatchError, ManifestError, OptionalDependencyError

log = logging.getLogger("mmengine.batch")

#: the columns of RESULTS, in order
COLUMNS = ("id", "path", "label", "score", "top_k", "windows", "error_type", "error",
           "engine_sha256", "engine_version")
#: RESULTS formats by extension
PARQUET_SUFFIXES = (".parquet", ".pq")
JSONL_SUFFIXES = (".jsonl", ".ndjson")
RAY_HINT = "pip install 'mmengine-music[ray]'"
PARTS_SUFFIX = ".parts"
_RUN_FILE = "run.json"
_LOCK_FILE = ".lock"
_PART_PREFIX = "part-"


# ------------------------------------------------------------------------------- inputs
@dataclass
class BatchInput:
    """One input of a batch: its id, audio path, text and MIDI; ``error_type``/``error`` when
    it is known to be unusable before classification (a bad manifest row)."""

    id: str
    path: Optional[str]
    text: Optional[str] = None
    midi: Optional[str] = None
    error_type: Optional[str] = None
    error: Optional[str] = None


def read_manifest_inputs(path, text_field: Optional[str] = "lyrics") -> List[BatchInput]:
    """The inputs of a CSV/JSONL manifest, read by inference's manifest reader
    (``mmengine.runtime.engine.read_inference_manifest``: the one place batch parses a
    manifest). A row without an id is keyed by its path; a row that cannot be used keeps its
    error and is keyed ``<row N>`` when it has no path either."""
    from .runtime.engine import read_inference_manifest

    out = []
    for item in read_inference_manifest(path, text_field):
        key = item.id or item.path or f"<row {item.index + 1}>"
        text = item.text if isinstance(item.text, str) else None
        inp = BatchInput(id=str(key), path=item.path, text=text, midi=item.midi)
        if item.error is not None:
            inp.error_type, inp.error = type(item.error).__name__, str(item.error)
        out.append(inp)
    return out


def read_folder_inputs(root) -> List[BatchInput]:
    """Every audio file under ``root`` (recursively, by the extensions the decoder knows:
    ``mmengine.data.audio.KNOWN_EXTENSIONS``), sorted; id = the path relative to ``root``."""
    from .data.audio import KNOWN_EXTENSIONS

    root = Path(root).expanduser().resolve()
    found = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in filenames:
            if not name.startswith(".") and Path(name).suffix.lower() in KNOWN_EXTENSIONS:
                found.append(Path(dirpath) / name)
    return [BatchInput(id=p.relative_to(root).as_posix(), path=str(p)) for p in sorted(found)]


def read_batch_inputs(source, text_field: Optional[str] = "lyrics") -> List[BatchInput]:
    """INPUT of ``mmengine batch``: a folder of audio or a manifest. Raises ``ManifestError``
    for a missing source, an unknown kind of file, or ids that are not unique."""
    from .runtime.engine import MANIFEST_SUFFIXES

    p = Path(source).expanduser()
    if p.is_dir():
        items = read_folder_inputs(p)
    elif p.suffix.lower() in MANIFEST_SUFFIXES:
        items = read_manifest_inputs(p, text_field)
    elif not p.exists():
        raise ManifestError(p, ["no such file or folder"])
    else:
        raise ManifestError(p, [f"not a folder nor a manifest ({', '.join(MANIFEST_SUFFIXES)})"])
    seen: Counter = Counter(it.id for it in items)
    dups = [k for k, n in seen.items() if n > 1]
    if dups:
        raise ManifestError(p, [f"id {k!r} appears {seen[k]} times" for k in dups[:20]]
                            + ([f"... and {len(dups) - 20} more"] if len(dups) > 20 else [])
                            + ["results are keyed by id: give each row its own id"])
    return items


# ------------------------------------------------------------------------------- engine
def file_sha256(path) -> str:
    """Hex SHA-256 of a whole file."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def engine_identity(path) -> dict:
    """``engine_sha256``, ``engine_version`` and the ``text_field`` of an engine file (its
    header is checked; the payload is checked when an engine loads it)."""
    from .runtime.engine_file import read_header

    header = read_header(path)
    return {"engine_sha256": file_sha256(path),
            "engine_version": str(header.get("mmengine_version", "")),
            "text_field": header.get("text_field") or "lyrics"}


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


def result_row(identity: dict, it: BatchInput, res) -> dict:
    """The RESULTS row of input ``it``: ``res`` is its ``Prediction``, ``ErrorEntry`` or
    exception, or None for an input known bad before classification."""
    row = {"id": it.id, "path": it.path, "label": None, "score": None, "top_k": None,
           "windows": None, "error_type": None, "error": None, **identity}
    if res is None:
        row["error_type"] = it.error_type or "ManifestError"
        row["error"] = it.error or "row has no audio path"
    elif isinstance(res, Exception):
        row["error_type"], row["error"] = type(res).__name__, str(res)
    elif getattr(res, "ok", False):
        row.update(label=res.label, score=float(res.score),
                   top_k=[{"label": k, "score": float(s)} for k, s in res.top_k],
                   windows=len(res.windows))
    else:  # ErrorEntry
        row["error_type"], row["error"] = res.error_type, res.error
    return row


# ------------------------------------------------------------------------------- results
def _results_format(out: Path) -> str:
    suffix = out.suffix.lower()
    if suffix in PARQUET_SUFFIXES:
        return "parquet"
    if suffix in JSONL_SUFFIXES:
        return "jsonl"
    raise BatchError(f"{out}: RESULTS must end in {', '.join(PARQUET_SUFFIXES + JSONL_SUFFIXES)}")


def _import_pyarrow():
    try:
        import pyarrow
        import pyarrow.parquet  # noqa: F401
    except ImportError as exc:
        raise OptionalDependencyError(f"Parquet results need pyarrow: {RAY_HINT} (or write "
                                      f".jsonl)") from exc
    return pyarrow


def _arrow_schema():
    pa = _import_pyarrow()
    return pa.schema([
        ("id", pa.string()), ("path", pa.string()), ("label", pa.string()),
        ("score", pa.float64()),
        ("top_k", pa.list_(pa.struct([("label", pa.string()), ("score", pa.float64())]))),
        ("windows", pa.int32()), ("error_type", pa.string()), ("error", pa.string()),
        ("engine_sha256", pa.string()), ("engine_version", pa.string())])


def read_results(path) -> List[dict]:
    """The rows of a RESULTS file (Parquet or JSON lines) as dicts."""
    path = Path(path)
    if _results_format(path) == "parquet":
        import pyarrow.parquet as pq

        _import_pyarrow()
        return pq.read_table(path).to_pylist()
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


class ResultStore:
    """The committed results of one RESULTS file: RESULTS itself (a finished earlier run) and
    the shard files of ``RESULTS.parts/``. Holds one JSON line per id; ``commit`` writes a
    shard atomically before it counts, ``finish`` assembles RESULTS and removes the shards.
    Use as a context manager (it holds the lock of ``RESULTS.parts/``)."""

    def __init__(self, out, identity: dict, *, retry_errors: bool = False):
        self.out = Path(out).expanduser().absolute()
        self.format = _results_format(self.out)
        self.parts = self.out.with_name(self.out.name + PARTS_SUFFIX)
        self.identity = identity
        self.retry_errors = retry_errors
        self.lines: Dict[str, str] = {}  # id -> its row as one JSON line
        self.failed: Dict[str, str] = {}  # id -> error_type, for the ids whose row is an error
        self.first_commit: Optional[float] = None  # perf_counter() of the first commit
        self.first_rows = 0  # rows of the first commit
        self._lock = None

    # -- opening ---------------------------------------------------------------------------
    def __enter__(self) -> "ResultStore":
        if self.format == "parquet":
            _import_pyarrow()
        try:
            self.parts.mkdir(parents=True, exist_ok=True)
            probe = self.parts / f".probe-{uuid.uuid4().hex}"
            probe.write_bytes(b"")
            probe.unlink()
        except OSError as exc:
            raise BatchError(f"{self.out}: cannot write results there "
                             f"({exc.strerror or exc}): choose another --out") from None
        self._take_lock()
        try:
            self._check_run_file()
            # temporary files left by a run killed while writing (data.safe_io.atomic_write
            # names them .NAME.XXXX.tmp; runs before it used .tmp-*)
            for tmp in [*self.parts.glob(".*.tmp"), *self.parts.glob(".tmp-*")]:
                tmp.unlink(missing_ok=True)
            if self.out.exists():
                self._load_rows(read_results(self.out), str(self.out))
            for shard in sorted(self.parts.glob(_PART_PREFIX + "*.jsonl")):
                with open(shard, encoding="utf-8") as f:
                    self._load_rows((json.loads(line) for line in f if line.strip()),
                                    str(shard))
        except BaseException:
            self._release_lock()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self._release_lock()

    def _take_lock(self) -> None:
        try:
            import fcntl
        except ImportError:  # not POSIX: no lock
            return
        f = open(self.parts / _LOCK_FILE, "a+")
        try:
            fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            f.close()
            raise BatchError(f"{self.out}: another mmengine batch is writing these results "
                             f"(lock {self.parts / _LOCK_FILE}); wait for it or choose another "
                             f"--out") from None
        self._lock = f

    def _release_lock(self) -> None:
        if self._lock is not None:
            self._lock.close()  # closing the file releases the flock
            self._lock = None

    def _check_run_file(self) -> None:
        run = self.parts / _RUN_FILE
        sha = self.identity["engine_sha256"]
        if run.exists():
            try:
                doc = json.loads(run.read_text())
            except (OSError, ValueError) as exc:
                raise BatchError(f"{run}: unreadable ({exc}); remove {self.parts} to start "
                                 f"over") from None
            if doc.get("engine_sha256") != sha:
                raise BatchError(self._other_engine(str(self.parts), doc.get("engine_sha256")))
        else:
            self._write_atomic(run, json.dumps({"engine_sha256": sha,
                                                "engine_version": self.identity["engine_version"],
                                                "results": str(self.out)}) + "\n")

    def _other_engine(self, where: str, other) -> str:
        return (f"{where} holds results of another engine (SHA-256 {str(other)[:16]}…, this one "
                f"is {self.identity['engine_sha256'][:16]}…): choose another --out, or remove "
                f"{self.out} and {self.parts} to classify again")

    def _load_rows(self, rows: Iterable[dict], where: str) -> None:
        for row in rows:
            if row.get("engine_sha256") != self.identity["engine_sha256"]:
                raise BatchError(self._other_engine(where, row.get("engine_sha256")))
            self._keep(row)

    def _keep(self, row: dict) -> bool:
        """Keep ``row`` unless its id already has one (a result beats an error); True when
        kept."""
        key = row["id"]
        failed = row.get("error_type") is not None
        if key in self.lines and (failed or key not in self.failed):
            return False
        self.lines[key] = json.dumps({c: row.get(c) for c in COLUMNS}, allow_nan=False)
        if failed:
            self.failed[key] = row["error_type"]
        else:
            self.failed.pop(key, None)
        return True

    # -- running ---------------------------------------------------------------------------
    def todo(self, items: Sequence[BatchInput]) -> List[BatchInput]:
        """The inputs that still need a row (with ``retry_errors``, also those whose row is
        an error)."""
        return [it for it in items
                if it.id not in self.lines or (self.retry_errors and it.id in self.failed)]

    def commit(self, rows: Sequence[dict]) -> List[dict]:
        """Write the new rows (ids without a row yet, or a result for an id whose row was an
        error) as one shard, atomically; returns the rows written."""
        fresh = []
        for row in rows:
            key = row["id"]
            failed = row.get("error_type") is not None
            if key in self.lines and (failed or key not in self.failed):
                continue  # a duplicate (e.g. a Ray task retried after its actor died)
            fresh.append(row)
        if not fresh:
            return []
        text = "".join(json.dumps({c: r.get(c) for c in COLUMNS}, allow_nan=False) + "\n"
                       for r in fresh)
        self._write_atomic(self.parts / f"{_PART_PREFIX}{time.time_ns():020d}-"
                           f"{uuid.uuid4().hex[:8]}.jsonl", text)
        for r in fresh:
            self._keep(r)
        if self.first_commit is None:
            self.first_commit, self.first_rows = time.perf_counter(), len(fresh)
        return fresh

    def _write_atomic(self, path: Path, text: str) -> None:
        atomic_write(path, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"),
                     sync_dir=True)

    def finish(self, items: Sequence[BatchInput]) -> Path:
        """Write RESULTS (every input's row once, in input order) atomically and remove the
        shards. Raises ``BatchError`` when an input has no row."""
        missing = [it.id for it in items if it.id not in self.lines]
        if missing:
            raise BatchError(f"{len(missing)} input(s) have no result yet (e.g. {missing[0]!r}): "
                             f"run the same command again to finish")
        def write(tmp: str) -> None:
            if self.format == "jsonl":
                with open(tmp, "w", encoding="utf-8") as f:
                    for it in items:
                        f.write(self.lines[it.id] + "\n")
            else:
                self._write_parquet(tmp, items)

        atomic_write(self.out, write, sync_dir=True)
        for shard in self.parts.glob(_PART_PREFIX + "*.jsonl"):
            shard.unlink()
        (self.parts / _RUN_FILE).unlink(missing_ok=True)
        self._release_lock()
        (self.parts / _LOCK_FILE).unlink(missing_ok=True)
        with contextlib.suppress(OSError):
            self.parts.rmdir()
        return self.out

    def _write_parquet(self, tmp: str, items: Sequence[BatchInput], chunk: int = 8192) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        schema = _arrow_schema()
        with pq.ParquetWriter(tmp, schema) as w:
            for s in range(0, len(items), chunk):
                rows = [json.loads(self.lines[it.id]) for it in items[s:s + chunk]]
                w.write_table(pa.Table.from_pylist(rows, schema=schema))


# ------------------------------------------------------------------------------- summary
@dataclass
class BatchSummary:
    """What a batch run did.

    Attributes:
        results: the RESULTS file written.
        total: inputs.
        skipped: inputs that already had a row (committed by an earlier run) and were not
            classified again.
        classified: inputs classified by this run (including those that failed).
        failed: inputs whose row is an error, in RESULTS (this run's and earlier ones').
        errors: ``{error_type: count}`` of those.
        seconds: wall time of the classification (without loading inputs and writing
            RESULTS).
        startup_s: of ``seconds``, the time until the first batch was committed (engine
            loading, and on Ray the cluster connection and the actors' start).
        startup_items: inputs of that first batch.
        mode: "in-process" or "ray".
        workers, threads: engine copies and threads each.
    """

    results: Path
    total: int
    skipped: int
    classified: int
    failed: int
    errors: Dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0
    startup_s: float = 0.0
    startup_items: int = 0
    mode: str = "in-process"
    workers: int = 1
    threads: Optional[int] = None

    @property
    def items_per_s(self) -> float:
        """Inputs classified by this run per second of ``seconds``."""
        return self.classified / self.seconds if self.seconds > 0 else 0.0

    @property
    def steady_items_per_s(self) -> float:
        """Inputs per second after the first batch (without the start-up)."""
        n, t = self.classified - self.startup_items, self.seconds - self.startup_s
        return n / t if n > 0 and t > 0 else 0.0

    def format(self) -> str:
        """The summary ``mmengine batch`` prints."""
        threads = "default" if self.threads is None else self.threads
        lines = [f"{self.total} inputs: {self.total - self.failed} classified, {self.failed} "
                 f"failed; {self.classified} done by this run ({self.items_per_s:.1f} items/s, "
                 f"{self.mode}, {self.workers} x {threads} threads, first results after "
                 f"{self.startup_s:.1f} s), {self.skipped} already written"]
        if self.errors:
            by_count = sorted(self.errors.items(), key=lambda kv: (-kv[1], kv[0]))
            lines.append("failures by error type: "
                         + ", ".join(f"{k} {n}" for k, n in by_count))
        lines.append(f"results: {self.results}")
        return "\n".join(lines)


# ------------------------------------------------------------------------------- running
def _import_ray():
    try:
        import ray
        import ray.data  # noqa: F401
    except ImportError as exc:
        raise OptionalDependencyError(f"--ray needs Ray Data: {RAY_HINT}") from exc
    return ray


def _progress(total: int, enabled: bool, desc: str):
    from tqdm import tqdm

    return tqdm(total=total, unit="items", desc=desc, disable=not enabled, smoothing=0.1)


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


def batch_classify(engine, source, out, *, ray: Union[bool, str, None] = None,
                   workers: Optional[int] = None, threads: Optional[int] = None,
                   batch_size: int = BatchConfig.batch_size, top_k: int = BatchConfig.top_k,
                   window_batch: int = BatchConfig.window_batch,
                   backend: str = EngineConfig.backend, frontend: str = EngineConfig.frontend,
                   retry_errors: bool = False,
                   progress: bool = True) -> BatchSummary:
    """Classify every input of ``source`` with ``engine`` into ``out``, resumably and exactly
    once (see the module docstring for the formats and the guarantees).

    Args:
        engine: the ``.mme`` engine file.
        source: a manifest (``.csv``/``.jsonl``/``.ndjson``) or a folder of audio.
        out: RESULTS, ``.parquet`` or ``.jsonl``; its shards live in ``out + ".parts"`` until
            it is complete.
        ray: None/False: in this process. True: on Ray (the cluster ``ray.init`` finds, else a
            local one started for the run; an already initialised Ray is used as it is).
            "HOST:PORT": join that cluster.
        workers: Ray actors (default: the cluster's CPUs / ``threads``); in-process only 1.
        threads: threads per engine copy (Ray default ``BatchConfig.ray_threads``, or CPUs /
            ``workers`` when ``workers`` is given; in-process default: the engine's own).
        batch_size: inputs per actor call and per committed shard.
        top_k: labels per row.
        window_batch: windows per backend call.
        backend, frontend: as ``Engine.load``.
        retry_errors: classify again the inputs whose committed row is an error.
        progress: a tqdm bar (items/s) on stderr.
    Returns:
        ``BatchSummary``.
    Raises:
        EngineFileError: the engine file is missing or not an engine.
        ManifestError: the source is missing, of an unknown kind, or has duplicate ids.
        BatchError: RESULTS cannot be written, holds another engine's results, is being
            written by another run, or the Ray cluster cannot hold the actors asked for.
        OptionalDependencyError: Ray (``ray``) or pyarrow (Parquet) is not installed.
    """
    if batch_size < 1 or top_k < 1 or window_batch < 1:
        raise ValueError("batch_size, top_k and window_batch must be >= 1")
    if (workers is not None and workers < 1) or (threads is not None and threads < 1):
        raise ValueError("workers and threads must be >= 1")
    use_ray = ray not in (None, False)
    if use_ray:
        ray_mod = _import_ray()  # fail before any work when Ray is asked for and missing
        if isinstance(ray, str) and ray not in ("", "local") and not ray_mod.is_initialized():
            _probe(ray)
    elif workers not in (None, 1):
        raise BatchError(f"--workers {workers} needs --ray: in-process runs one engine "
                         f"(use --threads for its threads)")
    ident = engine_identity(engine)
    items = read_batch_inputs(source, ident["text_field"])
    identity = {k: ident[k] for k in ("engine_sha256", "engine_version")}
    with ResultStore(out, identity, retry_errors=retry_errors) as store:
        todo = store.todo(items)
        skipped = len(items) - len(todo)
        # inputs known bad before classification need no engine: commit them here
        bad = [it for it in todo if it.error_type is not None or not it.path]
        if bad:
            store.commit([result_row(identity, it, None) for it in bad])
        todo = [it for it in todo if it.error_type is None and it.path]
        store.first_commit, store.first_rows = None, 0
        t0 = time.perf_counter()
        mode = "ray" if use_ray else "in-process"
        with _progress(len(todo) + len(bad), progress, f"batch ({mode})") as bar:
            bar.update(len(bad))
            if todo and use_ray:
                workers, threads = _run_ray(
                    todo, store, bar, address=ray, workers=workers, threads=threads,
                    batch_size=batch_size, engine=engine, backend=backend, frontend=frontend,
                    top_k=top_k, window_batch=window_batch,
                    expect_sha256=identity["engine_sha256"])
            elif todo:
                _run_in_process(todo, store, bar, engine=engine, backend=backend,
                                frontend=frontend, threads=threads, batch_size=batch_size,
                                top_k=top_k, window_batch=window_batch,
                                expect_sha256=identity["engine_sha256"])
        seconds = time.perf_counter() - t0
        startup = (store.first_commit or t0 + seconds) - t0 if todo else 0.0
        ids = {it.id for it in items}
        errors = Counter(t for k, t in store.failed.items() if k in ids)
        results = store.finish(items)
    return BatchSummary(results=results, total=len(items), skipped=skipped,
                        classified=len(todo) + len(bad), failed=sum(errors.values()),
                        errors=dict(errors), seconds=seconds, startup_s=startup,
                        startup_items=store.first_rows if todo else 0, mode=mode,
                        workers=workers or 1, threads=threads)


__all__ = ["COLUMNS", "BatchInput", "BatchClassifier", "BatchSummary", "ResultStore",
           "batch_classify", "result_row", "read_batch_inputs", "read_manifest_inputs",
           "read_folder_inputs", "read_results", "engine_identity", "file_sha256"]
