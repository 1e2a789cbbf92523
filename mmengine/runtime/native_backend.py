"""The native CPU backend: the whole model in C++ (``mmengine._C``), no torch at inference.

A model of the default design (dilated stems, LSTM or no recurrence, text fused late) runs as
one ``mmengine._C.FusionGraph`` (``mmengine.runtime.native_model``): normalisation, stems,
fusion, the LSTM stack, pooling, late streams and head, weights read from the payload without
torch. Other designs (the first, strided one; GRU/RNN cells are refused at build time) run
``model.encode`` in torch and the LSTM stack in C++ (``NativeRunner``), so those need torch.

Payload (``safetensors``, one blob): the model's state dict in float32 (so ``auto`` can fall
back to torch from the same file when ``mmengine._C`` is missing; torch casts the classifier to
the engine's dtype itself) plus ``native.*``: the LSTM stack packed by ``native_lstm.pack_lstm`` in
the engine's dtype (fp32 or bf16 weights, fp32 accumulation). A torch-built file also runs here:
its LSTM is packed at load.

bf16 engines keep the float32 weights as the master copy: besides the bf16 graph, the runner
holds an fp32 twin that reruns every input whose bf16 decision is closer than
``EngineConfig.bf16_recheck_margin`` (``native_model.GraphRunner``), so bf16 decides like fp32.
Files written before this stored the classifier in bf16; their twin runs those bf16 weights in
fp32 arithmetic.
"""
from __future__ import annotations

import logging
from typing import Mapping, Tuple

import numpy as np

from ..errors import EngineFileError
from .engine_file import EngineFile

log = logging.getLogger("mmengine.runtime")


def _layers(model):
    from ..models.reference import layers_from_torch

    rnn = model.classifier.rnn
    if model.classifier.cell != "lstm":
        raise ValueError(f"the native backend runs LSTM stacks only, this model uses "
                         f"{model.classifier.cell!r}: build it for torch or onnx instead")
    return [tuple(t.float() for t in layer) for layer in layers_from_torch(rnn)]


def build(model, header: Mapping, *, dtype: str = "fp32") -> Tuple[bytes, dict]:
    """Payload for ``--backend native``: (safetensors bytes, backend header options)."""
    import torch

    from .native_lstm import pack_lstm
    from .torch_backend import NATIVE_PREFIX, serialize, state_tensors

    tensors = state_tensors(model, "fp32")  # master weights: the bf16 runner's fp32 twin
    for k, v in pack_lstm(_layers(model), dtype).items():
        tensors[NATIVE_PREFIX + k] = torch.from_numpy(np.ascontiguousarray(v))
    return serialize(tensors), {"packed": "mmengine.runtime.native_lstm.pack_lstm"}


class NativeRunner:
    """frontend (torch, float32) → ``NativeLSTM`` → pooling and head (numpy).

    Args:
        model: the engine's model (eval, float32); only ``encode`` and the head's weights are
            used.
        lstm: a ``NativeLSTM``.
        threads: threads for the C++ kernels (0: OpenMP default).
    """

    backend = "native"

    def __init__(self, model, lstm, *, threads: int = 0):
        self.model = model.eval()
        self.lstm = lstm
        self.threads = int(threads or 0)
        self.pooling = model.classifier.pooling
        head = model.classifier.head
        self.w = np.ascontiguousarray(head.weight.detach().float().numpy().T)  # (H, C)
        self.b = head.bias.detach().float().numpy().copy()  # (C,)

    def features(self, inputs: Mapping[str, np.ndarray]):
        """``(seq, late)``: (B, T', D) float32 fused per-frame features and the (B, late_dim)
        clip-level features or None (torch ``model.encode``)."""
        import torch

        with torch.inference_mode():
            batch = {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in inputs.items()}
            seq, late = self.model.encode(batch)
            return seq.float().numpy(), None if late is None else late.float().numpy()

    def __call__(self, inputs: Mapping[str, np.ndarray]) -> np.ndarray:
        """inputs: name -> array (see ``registry.Runner``). Returns logits (B, C) float32."""
        x, late = self.features(inputs)
        seq = self.pooling != "last"
        y = self.lstm.forward(x, return_sequence=seq, num_threads=self.threads)[0]
        if self.pooling == "last":
            pooled = y
        elif self.pooling == "mean":
            pooled = y.mean(axis=1)
        else:
            pooled = np.concatenate([y.mean(axis=1), y.max(axis=1)], axis=1)
        if late is not None:
            pooled = np.concatenate([pooled, late], axis=1)
        return (pooled @ self.w + self.b).astype(np.float32, copy=False)


def load(ef: EngineFile, *, threads: int = 0):
    """The engine's runner: the whole-model graph (``native_model.GraphRunner``, torch-free)
    when the C++ graph runs this model, else ``NativeRunner`` (torch front part)."""
    from . import native_model

    if native_model.unsupported_reason(ef.header["model"]) is None:
        from ..config import EngineConfig

        tensors, _ = native_model.read_safetensors(ef.payload, ef.path)
        packed = {k[len("native."):]: v for k, v in tensors.items() if k.startswith("native.")}
        dtype = ef.header["dtype"]
        graph = native_model.build_graph(ef.header["model"], tensors, path=ef.path,
                                         packed_lstm=packed or None, dtype=dtype)
        twin = None
        if dtype != "fp32":  # the fp32 twin packs its own LSTM from the float weights
            state = {k: v for k, v in tensors.items() if not k.startswith("native.")}
            twin = native_model.build_graph(ef.header["model"], state, path=ef.path,
                                            dtype="fp32")
        return native_model.GraphRunner(graph, threads=threads, recheck=twin,
                                        recheck_margin=EngineConfig.bf16_recheck_margin,
                                        multilabel=bool(ef.header.get("multilabel", False)))
    return load_split(ef, threads=threads)


def load_split(ef: EngineFile, *, threads: int = 0) -> NativeRunner:
    """``NativeRunner``: torch for ``model.encode``, the C++ LSTM stack, numpy head."""
    from .native_lstm import NativeLSTM, pack_lstm
    from .torch_backend import load_model, parse_weights

    state, packed = parse_weights(ef)
    model = load_model(ef, state)
    if not packed:
        log.info("%s holds no packed LSTM (built for %s): packing it now (%s)", ef.path,
                 ef.header.get("backend"), ef.header["dtype"])
        packed = pack_lstm(_layers(model), ef.header["dtype"])
    try:
        lstm = NativeLSTM.from_packed(packed)
    except (KeyError, ValueError) as exc:
        log.warning("%s: its packed LSTM does not fit this build of the native kernels (%s); "
                    "re-packing it from the stored weights", ef.path, exc)
        try:
            lstm = NativeLSTM.from_packed(pack_lstm(_layers(model), ef.header["dtype"]))
        except (KeyError, ValueError) as exc2:
            raise EngineFileError(ef.path, f"cannot build the native LSTM ({exc2})") from exc2
    return NativeRunner(model, lstm, threads=threads)
