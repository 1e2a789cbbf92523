"""The whole fusion model in C++ (``mmengine._C.FusionGraph``), assembled without torch.

Everything between the front end's arrays and the logits runs in csrc/model (normalisation,
spectral flux, the dilated convolution stems with their BatchNorms folded in, fusion with the
mask channels, average pooling, the LSTM stack of csrc/lstm, mean/max pooling, the late text,
key-score and meter streams, the audio key scores of the chroma, the head). The weights come from the engine's safetensors payload
through a torch-free reader (``read_safetensors``); the architecture from the engine header's
model description (``export.model_spec``), checked against every tensor's shape before
anything is built, and every tensor of the payload must be used (a model with a part the graph
does not run is refused with the reason, and the native backend falls back to torch for it).

The graph covers the default design (``ModelConfig(stem="dilated")``) with ``cell`` "lstm" or
"none", any subset of modalities, text fused late, every pooling. ``unsupported_reason`` says
why another model cannot run here.
"""
from __future__ import annotations

from typing import Dict, Mapping, Optional, Tuple

import numpy as np

from ..config import AUDIO_METER_WIDTH, MODALITIES, log_lag_weights
from ..spec import (METER_START, PITCH_CLASS_ROWS, architecture,  # noqa: F401 (re-exported)
                    state_shapes, unsupported_reason)
from ..errors import EngineFileError

#: BatchNorm1d's default epsilon (the models never change it)
BN_EPS = 1e-5
_SERIES = {"mfcc": "mfcc", "mel": "logmel", "symbolic": "symbolic"}
#: safetensors dtype -> numpy dtype (BF16: read as uint16 bits, widened to float32)
_NP_DTYPES = {"F32": np.float32, "F64": np.float64, "F16": np.float16, "I64": np.int64,
              "I32": np.int32, "I16": np.int16, "I8": np.int8, "U64": np.uint64,
              "U32": np.uint32, "U16": np.uint16, "U8": np.uint8, "BOOL": np.bool_,
              "BF16": np.uint16}


def read_safetensors(data: bytes, path: str = "<payload>") -> Tuple[Dict[str, np.ndarray], dict]:
    """(name -> numpy array, metadata) of a safetensors blob, without torch.

    The header is read and every tensor's byte range checked by ``data.safe_io.safetensors_index``
    (within ``InputLimits``' JSON size and depth) before any array is made; bfloat16 tensors
    come back as float32 holding the same values. ``EngineFileError`` on a bad blob."""
    from ..config import InputLimits
    from ..data.safe_io import safetensors_index

    limits = InputLimits()
    try:
        index, start, meta = safetensors_index(data, limits.max_json_bytes,
                                               limits.max_json_depth)
        dtypes = {d for d, _, _, _ in index.values()}
        if not dtypes <= set(_NP_DTYPES):
            raise ValueError(f"unsupported dtypes {sorted(dtypes - set(_NP_DTYPES))}")
    except ValueError as exc:
        raise EngineFileError(path, f"payload is not valid safetensors ({exc})") from None
    body = memoryview(data)[start:]
    out: Dict[str, np.ndarray] = {}
    for name, (dtype, shape, begin, end) in index.items():
        arr = np.frombuffer(body[begin:end], dtype=np.dtype(_NP_DTYPES[dtype]).newbyteorder("<"))
        if dtype == "BF16":
            arr = (arr.astype(np.uint32) << 16).view(np.float32)
        out[name] = arr.astype(arr.dtype.newbyteorder("="), copy=True).reshape(shape)
    return out, meta


class _Tensors:
    """The payload's tensors, each taken at most once and checked against the shape the
    architecture says it must have."""

    def __init__(self, tensors: Mapping[str, np.ndarray], path: str):
        self.tensors = dict(tensors)
        self.path = path
        self.used = set()

    def take(self, name: str, shape: Tuple[int, ...]) -> np.ndarray:
        if name not in self.tensors:
            raise EngineFileError(self.path, f"weights lack {name!r} (the model description "
                                             f"needs it)")
        arr = self.tensors[name]
        if tuple(arr.shape) != tuple(shape):
            raise EngineFileError(self.path, f"{name} has shape {list(arr.shape)}, the model "
                                             f"description says {list(shape)}")
        self.used.add(name)
        return np.ascontiguousarray(arr, dtype=np.float32)

    def batchnorm(self, prefix: str, n: int) -> Tuple[np.ndarray, np.ndarray]:
        """(scale, shift) of an eval-mode BatchNorm1d."""
        g = self.take(prefix + ".weight", (n,)).astype(np.float64)
        b = self.take(prefix + ".bias", (n,)).astype(np.float64)
        m = self.take(prefix + ".running_mean", (n,)).astype(np.float64)
        v = self.take(prefix + ".running_var", (n,)).astype(np.float64)
        self.used.add(prefix + ".num_batches_tracked")
        scale = g / np.sqrt(v + BN_EPS)
        return scale.astype(np.float32), (b - m * scale).astype(np.float32)

    def conv_bn(self, prefix: str, cout: int, cin: int, k: int = 3) -> Tuple[np.ndarray, np.ndarray]:
        """Conv1d (``prefix.0``) followed by BatchNorm1d (``prefix.1``), folded: (w, b)."""
        w = self.take(prefix + ".0.weight", (cout, cin, k)).astype(np.float64)
        b = self.take(prefix + ".0.bias", (cout,)).astype(np.float64)
        scale, shift = self.batchnorm(prefix + ".1", cout)
        w = w * scale.astype(np.float64)[:, None, None]
        b = b * scale + shift
        return np.ascontiguousarray(w, np.float32), np.ascontiguousarray(b, np.float32)

    def unused(self):
        return sorted(k for k in self.tensors if k not in self.used
                      and not k.startswith("native."))


def band_edges(n_mels: int, bands: int):
    """Same as ``models.streams.band_edges`` (kept torch-free here; a test compares them)."""
    return [int(round(i * n_mels / bands)) for i in range(bands + 1)]


def build_graph(spec: Mapping, tensors: Mapping[str, np.ndarray], *, path: str = "<engine>",
                packed_lstm: Optional[Mapping[str, np.ndarray]] = None, dtype: str = "fp32"):
    """A finalized ``mmengine._C.FusionGraph`` for the model of ``spec`` with ``tensors`` (its
    state dict as numpy arrays, bf16 ones as float32 values). ``packed_lstm``: the payload's
    ``native.*`` arrays (``native_lstm.pack_lstm``), else the stack is packed here in ``dtype``.
    Raises ``EngineFileError`` when a tensor is missing, has the wrong shape, or is not used."""
    from .._ext import require_native_extension
    from .native_lstm import pack_lstm

    why = unsupported_reason(spec)
    if why is not None:
        raise ValueError(f"the native graph cannot run this model: {why}")
    C = require_native_extension()
    a = architecture(spec)
    cfg, sizes, width = a["cfg"], a["sizes"], a["width"]
    t = _Tensors(tensors, path)
    fused = sum(width[m] + 1 for m in a["sequence"])
    g = C.FusionGraph(fused, int(cfg.pool_stride), cfg.pooling, dtype)
    col = 0
    for m in a["sequence"]:
        rows = METER_START if (m == "symbolic" and a["meter_rows"]) else sizes[m]
        mean = t.take(f"norm.{m}_mean", (sizes[m],))[:rows]
        std = t.take(f"norm.{m}_std", (sizes[m],))[:rows]
        extra = {}
        cin = rows
        if m == "mel" and a["flux"]:
            scale, shift = t.batchnorm("flux_norm", a["flux"])
            extra = dict(band_edges=band_edges(sizes["mel"], a["flux"]), flux_scale=scale,
                         flux_shift=shift)
            cin += a["flux"]
        w = width[m]
        convs = [(*t.conv_bn(f"stems.{m}.inp", w, cin), 1)]
        for i, d in enumerate(cfg.dilations):
            convs.append((*t.conv_bn(f"stems.{m}.blocks.{i}", w, w), int(d)))
        g.add_stem(_SERIES[m], m, rows, mean, std, convs, col, **extra)
        col += w + 1
    if cfg.cell == "lstm":
        H, L = int(cfg.hidden_size), int(cfg.num_layers)
        layers = []
        for k in range(L):
            d = fused if k == 0 else H
            layers.append((t.take(f"classifier.rnn.weight_ih_l{k}", (4 * H, d)),
                           t.take(f"classifier.rnn.weight_hh_l{k}", (4 * H, H)),
                           t.take(f"classifier.rnn.bias_ih_l{k}", (4 * H,)),
                           t.take(f"classifier.rnn.bias_hh_l{k}", (4 * H,))))
        packed = dict(packed_lstm) if packed_lstm else pack_lstm(layers, dtype)
        try:
            g.set_lstm(L, fused, H, dtype, [packed[f"l{k}.w_ih"] for k in range(L)],
                       [packed[f"l{k}.w_hh"] for k in range(L)],
                       [packed[f"l{k}.bias"] for k in range(L)])
        except (KeyError, ValueError, RuntimeError):
            packed = pack_lstm(layers, dtype)  # a packing this build cannot read: redo it
            g.set_lstm(L, fused, H, dtype, [packed[f"l{k}.w_ih"] for k in range(L)],
                       [packed[f"l{k}.w_hh"] for k in range(L)],
                       [packed[f"l{k}.bias"] for k in range(L)])
        pooled = H
    else:
        pooled = fused
    if cfg.pooling == "meanmax":
        pooled *= 2
    late = 0
    if a["late_text"]:
        E = int(cfg.text_dim)
        w = t.take("stems.text.0.weight", (E, sizes["text"]))
        g.set_text(np.ascontiguousarray(w.T), t.take("stems.text.0.bias", (E,)))
        late += E + 1
    if "symbolic" in a["modalities"] and (a["pitch"] or a["meter_rows"]):
        K, R = a["pitch"], a["meter_rows"]
        tpl = t.take("pitch.templates", (K, PITCH_CLASS_ROWS)) if K else None
        ps, pb = t.batchnorm("pitch_norm", K) if K else (None, None)
        ms, mb = t.batchnorm("meter_norm", R) if R else (None, None)
        g.set_symbolic(sizes["symbolic"], tpl, ps, pb, METER_START, ms, mb)
        late += K + R
    if a["audio_pitch"]:
        K = a["audio_pitch"]
        g.set_chroma(t.take("audio_pitch.templates", (K, PITCH_CLASS_ROWS)),
                     *t.batchnorm("audio_pitch_norm", K))
        late += K
    if a["audio_meter"]:
        K = a["audio_meter"]
        lags, lag_w = log_lag_weights()
        g.set_audio_meter(lags.astype(np.int64), lag_w.astype(np.float32),
                          t.take("audio_meter.templates", (K, 2, AUDIO_METER_WIDTH)),
                          *t.batchnorm("audio_meter_norm", a["audio_meter_dim"]),
                          reads_chroma=bool(a["reads_chroma"]))
        late += a["audio_meter_dim"]
    C_ = a["n_classes"]
    head = t.take("classifier.head.weight", (C_, pooled + late))
    g.set_head(np.ascontiguousarray(head.T), t.take("classifier.head.bias", (C_,)))
    left = t.unused()
    if left:
        raise EngineFileError(path, f"weights the native graph does not use: {left[:8]} (the "
                                    f"model has a part this build cannot run)")
    g.finalize()
    return g


def modality_masks(inputs: Mapping[str, np.ndarray], batch: int) -> np.ndarray:
    """(B, 4) float32 0/1 in ``MODALITIES`` order, as ``FusionLSTM.modality_masks``: 0 where
    the modality's array is absent, its mask where one is given, else 1."""
    out = np.zeros((batch, len(MODALITIES)), np.float32)
    for j, m in enumerate(MODALITIES):
        if _SERIES.get(m, m) not in inputs:
            continue
        mask = inputs.get(f"{m}_mask")
        out[:, j] = 1.0 if mask is None else np.asarray(mask, np.float32).reshape(batch)
    return out


class GraphRunner:
    """Runner (``registry.Runner``) of the whole model in C++: numpy in, numpy logits out.

    A bf16 graph can carry an fp32 twin (``recheck``): every input whose bf16 decision is
    closer than ``recheck_margin`` is run again in fp32 and takes the fp32 logits, so that the
    bf16 engine decides like the fp32 one wherever bf16 rounding could change the decision.
    "Close" is the top-two probability margin (softmax) of a single-label model, or any label's
    distance to the 0.5 threshold times two (sigmoid) of a multi-label one. Its default
    (``EngineConfig.bf16_recheck_margin``) is several times the largest bf16 change of that margin
    measured on both built-in tasks (see there).

    Args:
        graph: a finalized ``mmengine._C.FusionGraph`` (``build_graph``).
        threads: threads for the C++ kernels (0: the OpenMP default).
        recheck: an fp32 ``FusionGraph`` of the same model, or None.
        recheck_margin: margin below which an input is rerun by ``recheck``.
        multilabel: the model's outputs are independent sigmoids.
    """

    backend = "native"
    whole_model = True

    def __init__(self, graph, *, threads: int = 0, recheck=None, recheck_margin: float = 0.0,
                 multilabel: bool = False):
        self.graph = graph
        self.threads = int(threads or 0)
        self.recheck = recheck
        self.recheck_margin = float(recheck_margin)
        self.multilabel = bool(multilabel)
        #: inputs run so far, and how many of them were run again in fp32
        self.calls = 0
        self.rechecked = 0

    def _forward(self, graph, inputs: Mapping[str, np.ndarray]) -> np.ndarray:
        def arr(name):
            v = inputs.get(name)
            return None if v is None else np.ascontiguousarray(v, dtype=np.float32)

        series = [arr("mfcc"), arr("logmel"), arr("symbolic")]
        ref = next((s for s in series if s is not None), None)
        if ref is None:
            raise ValueError("the inputs hold no time series (mfcc, logmel or symbolic)")
        masks = modality_masks(inputs, ref.shape[0])
        return graph.forward(series[0], series[1], arr("text"), series[2], masks, self.threads,
                             arr("chroma"))

    def __call__(self, inputs: Mapping[str, np.ndarray]) -> np.ndarray:
        logits = np.asarray(self._forward(self.graph, inputs))
        self.calls += len(logits)
        if self.recheck is None or self.recheck_margin <= 0 or len(logits) == 0:
            return logits
        close = np.flatnonzero(decision_margin(logits, self.multilabel) < self.recheck_margin)
        if close.size:
            self.rechecked += int(close.size)
            sub = {k: (v[close] if isinstance(v, np.ndarray) and v.ndim and len(v) == len(logits)
                       else v) for k, v in inputs.items()}
            logits = np.array(logits, copy=True)
            logits[close] = self._forward(self.recheck, sub)
        return logits


def decision_margin(logits: np.ndarray, multilabel: bool = False) -> np.ndarray:
    """(B,) how far each row's decision is from changing, in probability
    (``probability_margin`` of the softmax, or for a multi-label model the sigmoid, of
    ``logits``)."""
    z = np.asarray(logits, np.float64)
    if multilabel:
        return probability_margin(1.0 / (1.0 + np.exp(-z)), True)
    p = np.exp(z - z.max(axis=1, keepdims=True))
    return probability_margin(p / p.sum(axis=1, keepdims=True), False)


def probability_margin(probs: np.ndarray, multilabel: bool = False) -> np.ndarray:
    """(B,) the top-two margin of each row of probabilities, or for a multi-label model twice
    the smallest distance of a label's probability to the 0.5 threshold (inf for a single
    class)."""
    p = np.asarray(probs, np.float64)
    if multilabel:
        return 2.0 * np.abs(p - 0.5).min(axis=1)
    if p.shape[1] < 2:
        return np.full(len(p), np.inf)
    top2 = np.partition(p, -2, axis=1)[:, -2:]
    return top2[:, 1] - top2[:, 0]
