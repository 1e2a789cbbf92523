"""The results of ``mmengine batch``: the RESULTS row of an input (``COLUMNS``,
``result_row``), the Parquet / JSON-lines formats (``read_results``), and ``ResultStore``, the
resume and exactly-once bookkeeping (shards committed atomically to ``RESULTS.parts/``, a run
file naming the engine, a lock, RESULTS assembled at the end). Separate from the driver
(``mmengine.batch``, which re-exports the public names) and from the runners: only the driver
process writes results, whichever runner produced them.
"""
from __future__ import annotations

import contextlib
import json
import time
import uuid
from pathlib import Path
from typing import Dict, Iterable, List, Optional, Sequence

from .batch_inputs import BatchInput
from .data.safe_io import atomic_write
from .errors import BatchError, OptionalDependencyError

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
