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

The parts live beside this module, which re-exports their public names: ``batch_inputs``
(``BatchInput``, reading INPUT, the engine's identity), ``batch_store`` (the RESULTS row and
formats, ``ResultStore``: resuming, exactly once) and ``batch_runners`` (``BatchClassifier``,
in-process and on Ray). Here: ``batch_classify``, which drives them, and ``BatchSummary``.
"""
from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, Optional, Union

from .batch_inputs import (BatchInput, engine_identity, file_sha256,  # noqa: F401 (re-exported)
                           read_batch_inputs, read_folder_inputs, read_manifest_inputs)
from .batch_runners import (BatchClassifier, _import_ray, _probe,  # noqa: F401 (re-exported)
                            _run_in_process, _run_ray, log)
from .batch_store import (COLUMNS, JSONL_SUFFIXES, PARQUET_SUFFIXES,  # noqa: F401 (re-exported)
                          PARTS_SUFFIX, RAY_HINT, ResultStore, read_results, result_row)
from .config import BatchConfig, EngineConfig
from .errors import BatchError


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
def _progress(total: int, enabled: bool, desc: str):
    from tqdm import tqdm

    return tqdm(total=total, unit="items", desc=desc, disable=not enabled, smoothing=0.1)


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
