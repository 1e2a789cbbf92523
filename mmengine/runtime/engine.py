"""``Engine``: load an engine file, classify audio.

    >>> eng = Engine.load("folk.mme")                  # backend "auto": logs which one it took
    >>> eng.classify("song.wav", lyrics="...")          # -> Prediction(label, score, top_k, ...)
    >>> eng.classify(["a.flac", "bad.wav", "b.wav"])    # -> [Prediction, ErrorEntry, Prediction]

Pipeline per item: decode (a file: ``mmengine.data.audio.WindowStream``, the windows of
``load_audio`` decoded, resampled and cut block by block; an ``(array, sr)`` tuple mixed to
mono, resampled and made peak-safe the same way) → windows of ``AudioConfig.clip_seconds``
(``mmengine.data.audio.windows``: a short file is looped to one window, a long one cut, its
tail kept when at least half a window) → log-Mel + MFCC
(``mmengine.features.reference.compute_features``) + TF-IDF of the lyrics (the vectoriser in the
header) + symbolic features of a MIDI file when the model uses them (missing → mask False) →
backend → softmax (sigmoid for multi-label models) → mean of the window probabilities.

Memory: a decoding thread streams its file (one block of it, the resampler's state and one
window at a time, whatever the file's length; with the native front end each window is
featurised as soon as it is cut and dropped); a decoded item keeps its windows' features (or,
with another front end, its windows), the first ``batch_size`` of them in memory and the
rest in a temporary file (``runtime.window_store``), and at most ``2 * workers`` items, or one
batch of windows, wait for the backend (``runtime.pipeline``). An array input is held whole
(the caller holds it anyway).

Roles: ``runtime.inputs`` (items, the inference manifest, which errors fail one input),
``runtime.pipeline`` (the decoding threads and their memory budget), ``runtime.results``
(``Prediction``, ``ErrorEntry`` and their JSON/text forms), this module (``Engine``: loading,
batching windows into the backend, assembling results).
Every input is checked against ``Engine.limits`` (``mmengine.config.InputLimits``) before it
is decoded or parsed.

A list (or manifest) returns one result per input in input order: ``Prediction`` or, for an
input that cannot be used (missing, corrupt, empty, too long, ...), ``ErrorEntry``; a single
input returns a ``Prediction`` or raises the typed error (``AudioError``...).
"""
from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any, Iterator, List, Optional, Sequence, Tuple

import numpy as np

from .. import _ext
from ..config import AudioConfig, EngineConfig, FrontendConfig, InputLimits, from_dict
from ..errors import AudioNonFiniteError, AudioTooLongError, AudioZeroLengthError
from ..errors import (BackendUnavailableError, EngineFileError,  # noqa: F401 (ManifestError: API)
                      ManifestError, MMEngineError)
from ..errors import InputLimitError, TextLimitError
from ..data.manifest import MANIFEST_SUFFIXES  # noqa: F401 (re-exported: cli, batch)
from . import engine_file
from .registry import BACKENDS, select_backend
# re-exported: runtime/__init__, cli and batch import these names from here
from .inputs import _ITEM_ERRORS, _Item, _without_frames, read_inference_manifest  # noqa: F401
from .results import (ErrorEntry, Prediction, Result, format_results,  # noqa: F401
                      results_to_json)
from . import pipeline
from .pipeline import _close_store
from .window_store import WindowStore

log = logging.getLogger("mmengine.runtime")

#: header keys ``mmengine.export.engine_metadata`` writes and ``Engine`` needs
_MODEL_KEYS = ("labels", "model", "audio", "frontend", "io")
#: options each backend's ``load`` accepts (``Engine.load`` passes only these)
_LOAD_OPTIONS = {"torch": ("device",), "native": ("threads",), "onnx": ("threads", "providers"),
                 "tensorrt": (), "cuda": (), "triton": ()}


class Engine:
    """A loaded engine file: header, runner, and the feature pipeline in front of it.

    Attributes:
        header: the engine file's JSON header.
        backend: the backend running it ("native", "onnx", "torch", ...).
        labels: class names (``Prediction.windows`` columns).
        audio_cfg, frontend_cfg: decoding and feature settings from the header.
        limits: the ``InputLimits`` every input is checked against (``Engine.load``: its
            ``limits`` argument, else the header's, else the defaults).
        frontend: the feature front end in use (``.name``: "native", "reference", "dali", ...).
        window: samples per inference window.
    """

    def __init__(self, header: dict, runner, path: str = "", *,
                 frontend: str = EngineConfig.frontend,
                 threads: Optional[int] = None, frontend_device: Optional[str] = None,
                 limits: Optional[InputLimits] = None):
        self.header = header
        self.limits = limits or InputLimits()
        self.runner = runner
        self.path = path
        self.backend = runner.backend
        self.labels: List[str] = list(header["labels"])
        self.multilabel = bool(header.get("multilabel", False))
        self.audio_cfg = from_dict(AudioConfig, header["audio"])
        self.frontend_cfg = from_dict(FrontendConfig, header["frontend"])
        if self.frontend_cfg.sample_rate != self.audio_cfg.sample_rate:
            raise MMEngineError(f"{path}: audio sample rate {self.audio_cfg.sample_rate} != "
                                f"front-end rate {self.frontend_cfg.sample_rate}")
        self.window = int(round(self.audio_cfg.clip_seconds * self.audio_cfg.sample_rate))
        self.frontend = _make_frontend(frontend, self.frontend_cfg, threads, frontend_device)
        # features that stay torch tensors (on the DALI device) up to a runner that takes them
        self._tensor_features = (getattr(runner, "accepts_torch", False)
                                 and self.frontend.padded_tensors)
        # front ends that can featurise on the decoding threads (native): each worker decodes
        # and featurises its own files while the main thread runs the classifier
        self._worker_features = self.frontend.serial_compute
        self.input_names = [s["name"] for s in header["io"]["inputs"]]
        # the front end's arrays: log-Mel and MFCC, and the chroma when the header's front
        # end computes it (an engine whose model reads the chroma has chroma_bins > 0: export)
        self._feature_keys = ("mfcc", "logmel") + (("chroma",) if self.frontend_cfg.chroma_bins
                                                   else ())
        self._vectorizer = None
        if "text" in self.input_names:
            from ..features.text import TextVectorizer

            self._vectorizer = TextVectorizer.from_json(header["text"])
        self._symbolic_dim = next((s["shape"][1] for s in header["io"]["inputs"]
                                   if s["name"] == "symbolic"), 0)

    # -- loading --------------------------------------------------------------------------
    @classmethod
    def load(cls, path, backend: str = EngineConfig.backend, *,
             frontend: str = EngineConfig.frontend,
             limits: Optional[InputLimits] = None, **options) -> "Engine":
        """Load and verify an engine file and start a backend for it.

        Args:
            path: the ``.mme`` file.
            backend: "auto" (fastest available that can run the file's payload, logged; a
                WARNING names the reason when it is not the backend the file was built for)
                or a name from ``registry.BACKENDS``.
            frontend: feature front end: "auto" (native C++ when built, else the numpy
                reference; logged), "native", "reference", "torch" or "dali".
            frontend_device: "cpu" or "gpu" for the "dali" and "torch" front ends (default
                "cpu"). With a backend that takes torch tensors (torch, cuda, triton), DALI's
                output goes to the classifier as torch tensors through DLPack: on the GPU, no
                host round trip.
            limits: ``InputLimits`` for the file itself and every input (default: those
                stored in the header, else ``InputLimits()``; the file is read within the
                given or default limits).
            options: ``threads`` (native, onnx, and the native front end), ``device``
                (torch), ``providers`` (onnx); options another backend does not take are
                ignored.
        Raises:
            EngineFileError: foreign, newer, truncated, tampered or malformed file; a header
                that fails its schema (``mmengine.schema``: types, ranges, the fixed token
                pattern) or whose weights do not have the shapes of the model it describes
                (checked from the safetensors header before any model is built).
            UnknownBackendError, BackendUnavailableError: see ``registry.get_backend``.
        """
        from .. import schema

        ef = engine_file.read_engine_file(path, limits)
        missing = [k for k in _MODEL_KEYS if k not in ef.header]
        if missing:
            raise EngineFileError(str(path), f"header lacks the model description key(s) "
                                  f"{missing}")
        schema.check_engine_header(ef.header, str(path))
        schema.check_engine_payload(ef, limits or InputLimits())
        if limits is None and ef.header.get("limits") is not None:
            limits = schema.check_limits(ef.header["limits"])
        name = select_backend(ef.header, backend)
        module = BACKENDS[name].load_module()
        kwargs = {k: v for k, v in options.items()
                  if k in _LOAD_OPTIONS[name] and v is not None}
        if name in ("torch", "cuda", "triton"):  # one module serves the three
            kwargs["backend"] = name
        runner = module.load(ef, **kwargs)
        eng = cls(ef.header, runner, str(path), frontend=frontend,
                  threads=options.get("threads"), frontend_device=options.get("frontend_device"),
                  limits=limits)
        log.info("loaded %s: backend %s, dtype %s, %d labels, front end %s", path, name,
                 ef.header["dtype"], len(ef.header["labels"]), eng.frontend.name)
        return eng

    def __repr__(self) -> str:
        return (f"Engine({self.path!r}, backend={self.backend!r}, "
                f"dtype={self.header['dtype']!r}, labels={len(self.labels)}, "
                f"frontend={self.frontend.name!r})")

    # -- low level ------------------------------------------------------------------------
    def predict_features(self, inputs) -> np.ndarray:
        """Probabilities (B, C) from model inputs (``header["io"]["inputs"]`` arrays)."""
        logits = np.asarray(self.runner(inputs), dtype=np.float64)
        if self.multilabel:
            return 1.0 / (1.0 + np.exp(-logits))
        z = np.exp(logits - logits.max(axis=1, keepdims=True))
        return z / z.sum(axis=1, keepdims=True)

    # -- classification -------------------------------------------------------------------
    def classify(self, x, lyrics=None, *, top_k: int = EngineConfig.top_k,
                 batch_size: int = EngineConfig.batch_size, midi=None,
                 workers: int = EngineConfig.workers):
        """Classify audio.

        Args:
            x: a path; a list of paths; an ``(array, sample_rate)`` tuple (array (n,),
                (n, channels), or (channels, n) when channels < n); a list mixing both; a
                manifest (``.csv``/``.jsonl`` path, columns as for training, labels not
                needed); or a ``Dataset`` (``mmengine.data.manifest.load_dataset``).
            lyrics: text for the model's text modality: a str for a single input, a list with
                one entry (str or None) per input, or None (manifests: their own column).
            top_k: labels in ``Prediction.top_k``.
            batch_size: windows per backend call.
            midi: MIDI path (single input) or list of paths for the symbolic modality.
            workers: decoding threads (0 = one per core, at most 4).
        Returns:
            ``Prediction`` for a single input (errors raise); otherwise a list, one
            ``Prediction`` or ``ErrorEntry`` per input, in input order.
        """
        if batch_size < 1 or top_k < 1 or workers < 0:
            raise ValueError("batch_size and top_k must be >= 1, workers >= 0")
        workers = workers or min(EngineConfig.max_auto_workers, os.cpu_count() or 1)
        items, single = self._items(x, lyrics, midi)
        results = self._run(items, top_k=top_k, batch_size=batch_size, workers=workers)
        if single:
            res = results[0]
            if isinstance(res, ErrorEntry):
                raise items[0].error
            return res
        return results

    def _items(self, x, lyrics, midi) -> Tuple[List[_Item], bool]:
        def is_array_input(v):
            return (isinstance(v, tuple) and len(v) == 2 and isinstance(v[0], np.ndarray)
                    and isinstance(v[1], (int, float, np.integer, np.floating)))

        if isinstance(x, (str, os.PathLike)) and Path(x).suffix.lower() in MANIFEST_SUFFIXES:
            if lyrics is not None or midi is not None:
                raise ValueError("a manifest carries its own lyrics/midi columns")
            return read_inference_manifest(x, self.header.get("text_field") or "lyrics"), False
        if hasattr(x, "records"):  # a Dataset
            if lyrics is not None or midi is not None:
                raise ValueError("a data set carries its own lyrics/midi")
            field_name = self.header.get("text_field") or "lyrics"
            return [_Item(i, path=str(r.path), id=r.id, text=getattr(r, field_name, None),
                          midi=None if r.midi_path is None else str(r.midi_path))
                    for i, r in enumerate(x.records)], False
        single = isinstance(x, (str, os.PathLike)) or is_array_input(x)
        inputs = [x] if single else list(x)

        def per_item(v, what):
            if v is None:
                return [None] * len(inputs)
            if single:
                return [v]
            if isinstance(v, (str, bytes)) or len(v) != len(inputs):
                raise ValueError(f"{what} must be a list with one entry per input "
                                 f"({len(inputs)})")
            return list(v)

        texts, midis = per_item(lyrics, "lyrics"), per_item(midi, "midi")
        if lyrics is not None and self._vectorizer is None:
            log.warning("this model uses no text: lyrics are ignored")
        items = []
        for i, (v, t, m) in enumerate(zip(inputs, texts, midis)):
            if is_array_input(v):
                items.append(_Item(i, path=f"<array {i}>", array=(v[0], float(v[1])), text=t,
                                   midi=m))
            elif isinstance(v, (str, os.PathLike)):
                items.append(_Item(i, path=os.fspath(v), text=t,
                                   midi=None if m is None else os.fspath(m)))
            else:
                raise TypeError(f"input {i}: expected a path or an (array, sample_rate) tuple, "
                                f"got {type(v).__name__}")
        return items, single

    def _decode(self, item: _Item) -> np.ndarray:
        """(n,) float32 waveform at the engine's rate, or raise the item's error. The engine
        uses it for array inputs and items already known bad; a file is decoded whole here
        (``load_audio``), while ``classify`` streams files (``_streamed``)."""
        from ..data import audio as audio_io

        if item.error is not None:
            raise item.error
        cfg, limits = self.audio_cfg, self.limits
        if item.array is None:
            return audio_io.load_audio(item.path, cfg, limits=limits)
        y, sr = item.array
        if sr <= 0 or sr != int(sr):
            raise ValueError(f"{item.path}: sample rate must be a positive integer, got {sr}")
        if y.size == 0:
            raise AudioZeroLengthError(item.path, "empty array")
        if y.ndim == 2 and y.shape[0] < y.shape[1]:
            y = y.T  # (channels, n) as librosa lays it out
        max_s = min(cfg.max_duration_s, limits.max_seconds)
        if len(y) > max_s * sr:
            raise AudioTooLongError(item.path, f"{len(y) / sr:.1f} s > limit {max_s:g} s")
        y = audio_io.to_mono(np.asarray(y, dtype=np.float32))
        if not np.all(np.isfinite(y)):
            raise AudioNonFiniteError(item.path)
        y = audio_io.peak_safe(audio_io.resample(y, int(sr), cfg.sample_rate,
                                                 cfg.resample_quality))
        if y.size == 0:
            raise AudioZeroLengthError(item.path, "resamples to nothing")
        return np.ascontiguousarray(y)

    def _decoded(self, items: Sequence[_Item], workers: int, ahead: int = 1,
                 queue: int = 0) -> Iterator[Tuple[_Item, Any]]:
        """``runtime.pipeline.decoded`` of this engine's items (see there)."""
        return pipeline.decoded(self, items, workers, ahead, queue)

    def _streamed(self, item: _Item, keep: Optional[int] = None
                  ) -> Tuple[int, Optional[List[np.ndarray]], Optional[WindowStore]]:
        """``(samples, windows or None, features or None)`` of a file, decoded, resampled and
        cut while streaming (``mmengine.data.audio.WindowStream``: the windows of
        ``windows(load_audio(path))``, bit-identical); with a front end that featurises on
        the decoding threads each window is featurised as soon as it is cut and dropped, so
        the thread holds one block of the file, the resampler's state and one window, and the
        features go to a ``WindowStore`` that holds ``keep`` windows in memory (the batch
        size) and the rest of a long file in a temporary file."""
        from ..data.audio import WindowStream

        stream = WindowStream(item.path, self.audio_cfg, self.window, limits=self.limits)
        if not self._worker_features:
            wins: list = []
            for i, w in stream:
                del wins[i:]  # a restart (rescaled or re-decoded file) voids windows from i on
                wins.append(w)
            return stream.samples, wins, None
        store = WindowStore(keep)
        try:
            for i, w in stream:
                store.truncate(i)  # a restart voids the windows from i on
                store.append(self.frontend.compute_serial([w])[0])
                del w
        except BaseException:
            store.close()
            raise
        return stream.samples, None, store

    def _checked_text(self, item: _Item):
        """The item's text, refused (``TextLimitError``) past ``limits.max_text_bytes``."""
        text = item.text
        if text is None:
            return None
        size = len(text) if isinstance(text, (bytes, bytearray)) else (
            len(text.encode("utf-8", "surrogatepass")) if isinstance(text, str) else 0)
        if size > self.limits.max_text_bytes:
            raise TextLimitError(item.path or "<text>", f"text of {size} bytes > "
                                 f"{self.limits.max_text_bytes}")
        return text

    def _symbolic(self, item: _Item, n_samples: int, n_win: int) -> Tuple[np.ndarray, bool]:
        """(n_win, S, T) symbolic features of the item's windows and presence."""
        cfg = self.frontend_cfg
        T = cfg.n_frames(self.window)
        out = np.zeros((n_win, self._symbolic_dim, T), np.float32)
        if item.midi is None:
            return out, False
        from ..features.symbolic import symbolic_windows

        total = cfg.n_frames(n_samples)
        first = [int(round(w * self.window / cfg.hop_length)) for w in range(n_win)]
        out = symbolic_windows(item.midi, total, first, T, sr=cfg.sample_rate,
                               hop=cfg.hop_length, rows=self._symbolic_dim, limits=self.limits)
        if out.shape != (n_win, self._symbolic_dim, T):
            raise ValueError(f"{item.midi}: symbolic features have shape {out.shape}, "
                             f"expected ({n_win}, {self._symbolic_dim}, {T})")
        return out, True

    def _run(self, items: Sequence[_Item], *, top_k: int, batch_size: int,
             workers: int) -> List[Result]:
        C = len(self.labels)
        results: List[Optional[Result]] = [None] * len(items)
        win_probs = {}  # item index -> list of per-window probability rows
        # windows waiting for the front end (none when the decoding threads featurise them)
        waves = (None if self._worker_features
                 else np.empty((batch_size, self.window), np.float32))
        rows: List[Tuple[int, dict]] = []  # (item index, per-window extra inputs)

        def flush():
            if not rows:
                return
            probs = self.predict_features(
                self._inputs(None if waves is None else waves[:len(rows)], rows))
            for (idx, _), p in zip(rows, probs):
                win_probs[idx].append(p)
            rows.clear()

        # with worker-side features the decoders keep a whole batch queued ahead of the
        # classifier; either way finished items wait with at most a batch of windows
        queue = batch_size if self._worker_features else 0
        for item, got in self._decoded(items, workers, batch_size, queue):
            try:
                if isinstance(got, Exception):
                    raise got
                n_samples, wins, feats = got
                n_win = len(feats if feats is not None else wins)
                extra = {}
                if self._vectorizer is not None:
                    X, mask = self._vectorizer.transform([self._checked_text(item)])
                    extra["text"], extra["text_mask"] = X[0], mask[0]
                if self._symbolic_dim:
                    sym, present = self._symbolic(item, n_samples, n_win)
                    extra["symbolic_mask"] = np.bool_(present)
            except (MemoryError, RecursionError) as exc:  # defence in depth: one item only
                _close_store(got)
                err = InputLimitError(f"{item.path}: input needs more resources than "
                                      f"available ({type(exc).__name__})")
                item.error = err
                results[item.index] = ErrorEntry(item.path, str(err), type(err).__name__,
                                                 item.id)
                continue
            except _ITEM_ERRORS as exc:
                _close_store(got)
                item.error = _without_frames(exc)
                results[item.index] = ErrorEntry(item.path, str(exc), type(exc).__name__,
                                                 item.id)
                continue
            win_probs[item.index] = []
            for w in range(n_win):
                row = dict(extra)
                if waves is None:
                    f = feats[w]  # a spilled window is read back once
                    for key in self._feature_keys:
                        row[key] = f[key]
                else:
                    waves[len(rows)] = wins[w]
                if self._symbolic_dim:
                    row["symbolic"] = sym[w]
                rows.append((item.index, row))
                if len(rows) == batch_size:
                    flush()
            _close_store(got)  # every window is in a batch row now
            del wins, feats, got
        flush()
        for item in items:
            if results[item.index] is not None:
                continue
            per_win = np.asarray(win_probs[item.index], dtype=np.float64).reshape(-1, C)
            mean = per_win.mean(axis=0)
            order = np.argsort(-mean, kind="stable")[:min(top_k, C)]
            results[item.index] = Prediction(
                label=self.labels[order[0]], score=float(mean[order[0]]),
                top_k=[(self.labels[j], float(mean[j])) for j in order],
                windows=[[float(v) for v in p] for p in per_win], path=item.path, id=item.id)
        return results  # type: ignore[return-value]

    def _inputs(self, waves: Optional[np.ndarray], rows: List[Tuple[int, dict]]) -> dict:
        """Model inputs for a batch of windows (B, window) — None when the decoding threads
        featurised them (the features are in the rows) — and their per-window extras."""
        if self._worker_features:
            feats = {k: np.stack([r[k] for _, r in rows]) for k in self._feature_keys}
        elif self._tensor_features:  # equal-length windows: DALI's dense batch, zero-copy
            feats = self.frontend.from_arrays_padded(list(waves))
        else:
            per_item = self.frontend.compute(list(waves))
            feats = {k: np.stack([f[k] for f in per_item]) for k in self._feature_keys}
        out = {}
        for name in self.input_names:
            if name in self._feature_keys:
                out[name] = (feats[name] if self._tensor_features
                             else np.asarray(feats[name], np.float32))
            else:
                out[name] = np.stack([r[name] for _, r in rows])
        return out


def _make_frontend(name: str, cfg: FrontendConfig, threads: Optional[int],
                   device: Optional[str] = None):
    from ..features.frontend import get_frontend

    if name == "auto":
        from ..features.frontend import auto_frontend

        name = auto_frontend(cfg)
    kw = {"num_threads": int(threads)} if name in ("native", "dali") and threads else {}
    if device is not None:
        if name not in ("dali", "torch"):
            raise ValueError(f"frontend_device applies to the 'dali' and 'torch' front ends, "
                             f"not {name!r}")
        if device not in ("cpu", "gpu"):
            raise ValueError(f"frontend_device must be 'cpu' or 'gpu', not {device!r}")
        if name == "torch" and device == "gpu":
            if not _ext.cuda_available():
                raise BackendUnavailableError(
                    "frontend_device='gpu' needs a CUDA GPU, and torch sees none "
                    "(torch.cuda.is_available() is False); use frontend_device='cpu'")
            device = "cuda"  # DALI names its devices "cpu"/"gpu"; torch's GPU is "cuda"
        kw["device"] = device
    return get_frontend(name, cfg, **kw)


def load_engine(path, backend: str = EngineConfig.backend, **options) -> Engine:
    """``Engine.load``."""
    return Engine.load(path, backend, **options)


def classify(model, x, lyrics=None, *, backend: str = EngineConfig.backend,
             top_k: int = EngineConfig.top_k, batch_size: int = EngineConfig.batch_size,
             midi=None, workers: int = EngineConfig.workers, **options):
    """``mmengine classify MODEL FILES...``: load the engine file ``model`` (or use an
    ``Engine``) and classify ``x`` (see ``Engine.classify``)."""
    eng = model if isinstance(model, Engine) else Engine.load(model, backend, **options)
    return eng.classify(x, lyrics, top_k=top_k, batch_size=batch_size, midi=midi,
                        workers=workers)
