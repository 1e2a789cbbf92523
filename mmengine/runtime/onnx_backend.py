"""The ONNX backend: the classifier exported to ONNX (``mmengine.export.export_onnx``), run by
ONNX Runtime (CPU; the CUDA execution provider first when this onnxruntime has it).

Payload: the serialized ``ModelProto`` (opset 17; inputs as in ``header["io"]["inputs"]``,
dynamic batch and frames; output ``logits`` (B, C)). Feature extraction is not in the graph
(ONNX Runtime's STFT is slow): the engine computes log-Mel/MFCC/TF-IDF and feeds arrays.
A model that points to external data files is refused (the payload must be self-contained).
"""
from __future__ import annotations

from typing import List, Mapping, Optional, Sequence, Tuple

import numpy as np

from .. import _ext
from ..errors import EngineFileError
from .engine_file import EngineFile

CPU = "CPUExecutionProvider"
CUDA = "CUDAExecutionProvider"
_NP_DTYPES = {"float32": np.float32, "bool": np.bool_}


def build(model, header: Mapping, *, dtype: str = "fp32", opset: Optional[int] = None
          ) -> Tuple[bytes, dict]:
    """Payload for ``--backend onnx``: (ONNX bytes, backend header options)."""
    import torch

    from ..spec import ONNX_OPSET, export_onnx

    if dtype != "fp32":
        raise ValueError("the onnx backend builds fp32 only (ONNX's LSTM op has no bf16)")
    opset = opset or ONNX_OPSET
    data = export_onnx(model, header["io"]["inputs"], opset=opset)
    return data, {"opset": opset, "exporter": f"torch {torch.__version__} (torchscript)"}


def check_self_contained(data: bytes, path: str = "<payload>") -> None:
    """Refuse an ONNX payload that is not a ModelProto or references external data files."""
    if not _ext.has("onnx"):
        return
    import onnx
    from google.protobuf.message import DecodeError

    try:
        proto = onnx.load_model_from_string(data)
    except (DecodeError, ValueError) as exc:
        raise EngineFileError(path, f"payload is not an ONNX model ({exc})") from exc
    external = [t.name for t in proto.graph.initializer
                if t.data_location == onnx.TensorProto.EXTERNAL]
    if external:
        raise EngineFileError(path, f"ONNX payload references external data ({external[:3]}); "
                              "engine payloads must be self-contained")


def default_providers() -> List[str]:
    """CUDA provider first when this onnxruntime build has it and a GPU is visible, then CPU."""
    import onnxruntime as ort

    have = ort.get_available_providers()
    out = [CUDA] if CUDA in have and _ext.cuda_available() else []
    return out + [CPU]


class OnnxRunner:
    """An ONNX Runtime session over the engine's ONNX payload.

    Args:
        data: ONNX bytes.
        inputs: ``header["io"]["inputs"]`` (names and dtypes fed to the session).
        providers: execution providers (default ``default_providers()``).
        threads: intra-op threads (None: onnxruntime's default, one per core).
    """

    backend = "onnx"

    def __init__(self, data: bytes, inputs: Sequence[Mapping], *,
                 providers: Optional[Sequence[str]] = None, threads: Optional[int] = None):
        ort = _ext.require("onnxruntime")
        opts = ort.SessionOptions()
        if threads:
            opts.intra_op_num_threads = int(threads)
        self.providers = list(providers or default_providers())
        self.session = ort.InferenceSession(data, sess_options=opts, providers=self.providers)
        graph_inputs = {i.name for i in self.session.get_inputs()}
        self.inputs = [(s["name"], _NP_DTYPES[s["dtype"]]) for s in inputs
                       if s["name"] in graph_inputs]
        missing = graph_inputs - {n for n, _ in self.inputs}
        if missing:
            raise ValueError(f"ONNX graph inputs {sorted(missing)} are not in the engine header")

    def __call__(self, inputs: Mapping[str, np.ndarray]) -> np.ndarray:
        """inputs: name -> array (see ``registry.Runner``). Returns logits (B, C) float32."""
        feed = {n: np.ascontiguousarray(inputs[n], dtype=dt) for n, dt in self.inputs}
        return np.asarray(self.session.run(None, feed)[0], dtype=np.float32)


def load(ef: EngineFile, *, providers: Optional[Sequence[str]] = None,
         threads: Optional[int] = None) -> OnnxRunner:
    check_self_contained(ef.payload, ef.path)
    try:
        return OnnxRunner(ef.payload, ef.header["io"]["inputs"], providers=providers,
                          threads=threads)
    except Exception as exc:
        if "onnxruntime" in type(exc).__module__:
            raise EngineFileError(ef.path, f"ONNX Runtime refused the payload ({exc})") from exc
        raise
