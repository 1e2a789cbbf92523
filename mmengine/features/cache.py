"""On-disk cache of per-clip audio features (log-Mel + MFCC), reused across runs.

Layout of ``cache_dir``::

    manifest.json              settings + one entry per source file
    shard-000000.safetensors   "logmel" (n, n_mels, T) and "mfcc" (n, n_mfcc, T) float32
                               (+ "chroma" (n, chroma_bins, T) with the pitch stream)
    shard-000001.safetensors   ...

``manifest.json``::

    {"format": "mmengine-feature-cache/1",
     "settings": {"feature_version": 1, "frontend": "reference",
                  "audio": AudioConfig dict, "frontend_cfg": FrontendConfig dict},
     "n_frames": T, "next_shard": k,
     "items": {"<absolute audio path>": {"size": bytes, "mtime_ns": int,
                                         "shard": "shard-000000.safetensors", "row": i}}}

Rules: items are keyed by the resolved audio path (features do not depend on ids or labels,
so manifests over the same audio share a cache). Changed settings (any field of either config,
the front end, or ``FEATURE_VERSION``) drop the whole cache; a source whose size or mtime
changed, or a new one, is recomputed alone. New features go to new shards; a shard no entry
points to any more is deleted. Shards and ``manifest.json`` are written atomically (temporary
file + ``os.replace``), the manifest after each shard, so an interrupted run keeps what it
finished. One writer at a time: an exclusive ``fcntl`` lock on ``cache_dir/.lock`` (POSIX)
makes concurrent runs (e.g. DDP ranks) wait and then reuse.

Every clip is decoded with ``mmengine.data.audio.load_audio`` at ``AudioConfig.sample_rate``,
looped or cut to ``AudioConfig.clip_seconds``, and passed through the chosen front end. Clips
that fail to decode are listed in ``AudioFeatures.failed``, counted in an
``ExcludedClipsWarning`` and left out; they are retried on the next run.
"""
from __future__ import annotations

import contextlib
import json
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from ..config import AudioConfig, FeatureLoadConfig, FrontendConfig, to_dict
from ..data.safe_io import atomic_write

FEATURE_VERSION = 2  # 2: float32 path windows and FFTs in float64
CACHE_FORMAT = "mmengine-feature-cache/1"
SHARD_PREFIX = "shard-"
SHARD_SUFFIX = ".safetensors"


class ExcludedClipsWarning(UserWarning):
    """Some clips could not be decoded and were left out (listed in the message)."""


def _reference_frontend() -> Callable:
    from . import reference

    return reference.compute_features


def _dispatch_frontend(name: str) -> Callable:
    """A batch function over ``features.frontend.get_frontend(name)`` (one instance per cfg)."""
    def factory() -> Callable:
        from .frontend import get_frontend

        made: dict = {}

        def fn(y: np.ndarray, cfg: FrontendConfig, dtype=np.float32) -> dict:
            if cfg not in made:
                made[cfg] = get_frontend(name, cfg)
            outs = made[cfg].compute(list(y))
            return {k: np.stack([o[k] for o in outs]) for k in stream_keys(cfg)}
        return fn
    return factory


def stream_keys(cfg: FrontendConfig) -> tuple:
    """The arrays a front end computes for ``cfg``: log-Mel, MFCC and, when configured, the
    chroma pitch stream."""
    return ("logmel", "mfcc") + (("chroma",) if cfg.chroma_bins else ())


#: front-end name -> factory returning ``fn(y (B, n) float32, cfg, dtype=) -> {"logmel", "mfcc"}``
#: ("reference": float64 FFT, the parity target; "native": the C++ kernels (what "auto" picks),
#: within ~1e-5 dB of it; "dali": DALI CPU operators)
FRONTENDS: dict = {"reference": _reference_frontend, "native": _dispatch_frontend("native"),
                   "dali": _dispatch_frontend("dali")}


@dataclass
class AudioFeatures:
    """Features of the clips that decoded, aligned by row.

    Attributes:
        ids: record ids, in the order given, failed ones left out.
        mfcc: ``(N, n_mfcc, T)`` float32.
        logmel: ``(N, n_mels, T)`` float32.
        chroma: ``(N, chroma_bins, T)`` float32 (the pitch stream), or None when the front-end
            config has none.
        failed: ``{record id: reason}`` for every excluded clip.
        n_computed: clips computed in this call; n_reused: clips read from the cache.
    """

    ids: list[str]
    mfcc: np.ndarray
    logmel: np.ndarray
    chroma: "np.ndarray | None" = None
    failed: dict[str, str] = field(default_factory=dict)
    n_computed: int = 0
    n_reused: int = 0

    def __len__(self) -> int:
        return len(self.ids)


def cache_settings(audio_cfg: AudioConfig, frontend_cfg: FrontendConfig, frontend: str) -> dict:
    """The settings a cache is valid for (compared as JSON). Without the pitch stream the
    chroma fields are left out, so caches written before it stay valid."""
    fe = to_dict(frontend_cfg)
    if not frontend_cfg.chroma_bins:
        fe = {k: v for k, v in fe.items() if not k.startswith("chroma_")}
    return json.loads(json.dumps({
        "feature_version": FEATURE_VERSION,
        "frontend": frontend,
        "audio": to_dict(audio_cfg),
        "frontend_cfg": fe,
    }))


def clip_samples(audio_cfg: AudioConfig) -> int:
    """Samples per training clip: ``round(clip_seconds * sample_rate)``."""
    return int(round(audio_cfg.clip_seconds * audio_cfg.sample_rate))


def _write_json(path: Path, doc: dict) -> None:
    def write(tmp):
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(doc, f, ensure_ascii=False)

    atomic_write(path, write)


@contextlib.contextmanager
def _lock(cache_dir: Path):
    try:
        import fcntl
    except ImportError:
        yield
        return
    with open(cache_dir / ".lock", "a") as f:
        fcntl.flock(f.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f.fileno(), fcntl.LOCK_UN)


def _read_cache(cache_dir: Path, settings: dict) -> dict:
    """The cache manifest if it matches ``settings``, else an empty one (stale shards removed)."""
    path = cache_dir / "manifest.json"
    fresh = {"format": CACHE_FORMAT, "settings": settings, "n_frames": None, "next_shard": 0,
             "items": {}}
    doc = None
    if path.exists():
        try:
            doc = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            warnings.warn(f"{path}: unreadable feature cache manifest ({exc}); rebuilding",
                          stacklevel=3)
    if (isinstance(doc, dict) and doc.get("format") == CACHE_FORMAT
            and doc.get("settings") == settings and isinstance(doc.get("items"), dict)):
        return doc
    # shard numbers keep growing across rebuilds: a name never refers to two contents
    previous = doc.get("next_shard") if isinstance(doc, dict) else None
    numbers = [previous] if isinstance(previous, int) else []
    for shard in cache_dir.glob(SHARD_PREFIX + "*" + SHARD_SUFFIX):
        digits = shard.name[len(SHARD_PREFIX):-len(SHARD_SUFFIX)]
        if digits.isdigit():
            numbers.append(int(digits) + 1)
        shard.unlink()
    fresh["next_shard"] = max(numbers, default=0)
    return fresh


def _collect_garbage(cache_dir: Path, doc: dict) -> None:
    live = {e["shard"] for e in doc["items"].values()}
    for shard in cache_dir.glob(SHARD_PREFIX + "*" + SHARD_SUFFIX):
        if shard.name not in live:
            shard.unlink()


def _fingerprint(path: Path):
    st = path.stat()
    return {"size": int(st.st_size), "mtime_ns": int(st.st_mtime_ns)}


def _compute(todo: list, doc: dict, cache_dir: Path, audio_cfg: AudioConfig,
             frontend_cfg: FrontendConfig, fn: Callable, *, progress: bool, workers: int,
             batch_size: int, shard_size: int, failed_paths: dict) -> int:
    """Decode + featurise ``todo`` ``[(key, Path, fingerprint)]``; write shards; return count."""
    from safetensors.numpy import save_file

    from ..data import audio as audio_io

    n = clip_samples(audio_cfg)
    buf_keys: list = []
    names = stream_keys(frontend_cfg)
    bufs: dict = {k: [] for k in names}
    done = 0

    def flush():
        if not buf_keys:
            return
        name = f"{SHARD_PREFIX}{doc['next_shard']:06d}{SHARD_SUFFIX}"
        tensors = {k: np.ascontiguousarray(np.concatenate(bufs[k]), dtype=np.float32)
                   for k in names}
        atomic_write(cache_dir / name, lambda tmp: save_file(
            tensors, tmp, metadata={"format": CACHE_FORMAT}))
        doc["next_shard"] += 1
        for row, (key, fp) in enumerate(buf_keys):
            doc["items"][key] = {**fp, "shard": name, "row": row}
        doc["n_frames"] = int(tensors["logmel"].shape[-1])
        _write_json(cache_dir / "manifest.json", doc)
        buf_keys.clear()
        for b in bufs.values():
            b.clear()

    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(todo), desc="audio features", unit="clip")
    try:
        for start in range(0, len(todo), batch_size):
            chunk = todo[start:start + batch_size]
            results = audio_io.load_batch([p for _, p, _ in chunk], audio_cfg, progress=False,
                                          workers=workers)
            waves, keys = [], []
            for (key, _, fp), res in zip(chunk, results):
                if not res.ok:
                    failed_paths[key] = str(res.error)
                    continue
                waves.append(np.asarray(audio_io.loop_to_length(res.audio, n), dtype=np.float32))
                keys.append((key, fp))
            if waves:
                feats = fn(np.stack(waves), frontend_cfg, dtype=np.float32)
                for k in names:
                    bufs[k].append(np.asarray(feats[k], dtype=np.float32))
                buf_keys.extend(keys)
                done += len(keys)
            if len(buf_keys) >= shard_size:
                flush()
            if bar is not None:
                bar.update(len(chunk))
        flush()
    finally:
        if bar is not None:
            bar.close()
    return done


def compute_or_load_audio_features(
    dataset,
    audio_cfg: AudioConfig,
    frontend_cfg: FrontendConfig,
    cache_dir,
    *,
    frontend: str = FeatureLoadConfig.frontend,
    progress: bool = True,
    workers: int = FeatureLoadConfig.workers,
    batch_size: int = 32,
    shard_size: int = 256,
) -> AudioFeatures:
    """Features of every record's clip, computed once and then read from ``cache_dir``.

    Args:
        dataset: a ``Dataset`` or a sequence of ``Record``.
        audio_cfg: decoding settings; ``clip_seconds`` fixes ``T``.
        frontend_cfg: log-Mel/MFCC settings (``sample_rate`` must equal the audio one).
        cache_dir: folder of the cache (created).
        frontend: a key of ``FRONTENDS``, or "auto" (``features.frontend.auto_frontend``:
            native where built, else reference).
        progress: show a progress bar while computing.
        workers: decoding threads (passed to ``load_batch``).
        batch_size: clips per front-end call; shard_size: clips per shard file.

    Returns:
        ``AudioFeatures`` with ``T = frontend_cfg.n_frames(round(clip_seconds * sample_rate))``.
    """
    if frontend_cfg.sample_rate != audio_cfg.sample_rate:
        raise ValueError(f"FrontendConfig.sample_rate {frontend_cfg.sample_rate} differs from "
                         f"AudioConfig.sample_rate {audio_cfg.sample_rate}")
    if frontend == "auto":
        from .frontend import auto_frontend

        frontend = auto_frontend(frontend_cfg)
    if frontend not in FRONTENDS:
        raise ValueError(f"unknown front end {frontend!r}; valid: auto, {sorted(FRONTENDS)}")
    records: Sequence = getattr(dataset, "records", dataset)
    fn = FRONTENDS[frontend]()
    cache_dir = Path(cache_dir)
    cache_dir.mkdir(parents=True, exist_ok=True)
    settings = cache_settings(audio_cfg, frontend_cfg, frontend)
    keys = [str(Path(r.path).resolve()) for r in records]
    failed_paths: dict = {}
    with _lock(cache_dir):
        doc = _read_cache(cache_dir, settings)
        todo, seen = [], set()
        for key in keys:
            if key in seen:
                continue
            seen.add(key)
            try:
                fp = _fingerprint(Path(key))
            except OSError as exc:
                failed_paths[key] = f"cannot stat: {exc}"
                continue
            entry = doc["items"].get(key)
            if (entry is None or entry.get("size") != fp["size"]
                    or entry.get("mtime_ns") != fp["mtime_ns"]
                    or not (cache_dir / entry["shard"]).is_file()):
                todo.append((key, Path(key), fp))
        n_computed = _compute(todo, doc, cache_dir, audio_cfg, frontend_cfg, fn,
                              progress=progress, workers=workers, batch_size=batch_size,
                              shard_size=shard_size, failed_paths=failed_paths)
        for key in failed_paths:
            doc["items"].pop(key, None)
        if failed_paths:
            _write_json(cache_dir / "manifest.json", doc)
        _collect_garbage(cache_dir, doc)
        out = _gather(records, keys, doc, cache_dir, frontend_cfg, failed_paths)
    out.n_computed = n_computed
    out.n_reused = len({k for k in keys if k not in failed_paths}) - n_computed
    if out.failed:
        listed = "\n".join(f"  {rid}: {why}" for rid, why in list(out.failed.items())[:20])
        more = f"\n  ... and {len(out.failed) - 20} more" if len(out.failed) > 20 else ""
        warnings.warn(f"{len(out.failed)} of {len(records)} clip(s) could not be decoded and are "
                      f"excluded:\n{listed}{more}", ExcludedClipsWarning, stacklevel=2)
    return out


def _gather(records, keys, doc, cache_dir: Path, frontend_cfg: FrontendConfig,
            failed_paths: dict) -> AudioFeatures:
    from safetensors import safe_open

    ok = [i for i, k in enumerate(keys) if k not in failed_paths]
    failed = {records[i].id: failed_paths[k] for i, k in enumerate(keys) if k in failed_paths}
    t = doc["n_frames"] or 0
    rows_of = {"mfcc": frontend_cfg.n_mfcc, "logmel": frontend_cfg.n_mels,
               "chroma": frontend_cfg.chroma_bins}
    out = {k: np.empty((len(ok), rows_of[k], t), dtype=np.float32)
           for k in stream_keys(frontend_cfg)}
    by_shard: dict = {}
    for out_row, i in enumerate(ok):
        entry = doc["items"][keys[i]]
        by_shard.setdefault(entry["shard"], []).append((out_row, entry["row"]))
    for shard, rows in by_shard.items():
        dst = np.array([r[0] for r in rows])
        src = np.array([r[1] for r in rows])
        with safe_open(str(cache_dir / shard), framework="numpy") as f:
            for k, arr in out.items():
                arr[dst] = f.get_tensor(k)[src]
    return AudioFeatures(ids=[records[i].id for i in ok], mfcc=out["mfcc"],
                         logmel=out["logmel"], chroma=out.get("chroma"), failed=failed)
