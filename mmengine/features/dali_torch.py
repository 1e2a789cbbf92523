"""DALI front end → torch without a host round trip: DLPack views and padded batches.

:meth:`DaliFrontend.from_arrays_torch` / :meth:`DaliFrontend.from_files_torch` return per-clip
torch tensors that alias DALI's output buffers through DLPack (``torch.from_dlpack`` on DALI's
``TensorCPU`` / ``TensorGPU``): on ``cuda:0`` for ``device="gpu"`` (nothing is copied to host
memory), on the CPU for ``device="cpu"``. :meth:`DaliFrontend.from_arrays_padded` /
:meth:`DaliFrontend.from_files_padded` return one batch ``{"logmel": (B, n_mels, T_max), "mfcc":
(B, n_mfcc, T_max), "lengths": (B,)}`` on that device, ready for a classifier; a batch of
equal-length clips (the engine's fixed inference windows) that fits one DALI iteration is a
zero-copy view of DALI's dense output.

Stream safety: ``torch.from_dlpack`` hands torch's current CUDA stream to DALI's ``__dlpack__``,
and DALI makes that stream wait for the iteration's work (a CUDA event, no host wait), so work
queued afterwards on the current stream sees finished features. Use the tensors on that stream
(or make another stream wait on it). A DLPack view keeps DALI's buffer alive until the last torch
reference to it goes; DALI may reuse the memory as soon as that happens, so keep the tensor (or a
copy) alive until the work reading it has finished.

``DaliTorchOutputs`` holds these methods of :class:`mmengine.features.dali.DaliFrontend` (it
is its base class: the methods run the front end's DALI iterations, ``_array_batches`` and
``_file_batches``, and check them with ``_check_frames``); ``dali_to_torch`` and
``pad_features`` are the free functions. Kept apart from ``dali.py`` (the DALI graph, its pinned
defaults and the numpy outputs) because this is the torch side: torch is imported here only.
``mmengine.features.dali`` re-exports every name.
"""
from __future__ import annotations

from typing import Dict, List, Sequence

import numpy as np


def _is_gpu(dali_data) -> bool:
    """True for DALI's device-memory containers (TensorGPU, TensorListGPU)."""
    return type(dali_data).__name__.endswith("GPU")


def dali_to_torch(dali_tensor):
    """A torch tensor aliasing one DALI ``TensorCPU`` / ``TensorGPU`` (no copy where possible).

    With a DALI whose tensors implement the DLPack protocol (``__dlpack__``; DALI 2.4 does) this
    is ``torch.from_dlpack(dali_tensor)``: zero-copy, on the DALI tensor's device, and for a GPU
    tensor torch passes its current CUDA stream so that DALI makes that stream wait for the data
    (no host synchronisation). Older DALI without ``__dlpack__``: GPU tensors are copied device-to-device with
    ``nvidia.dali.plugin.pytorch.feed_ndarray`` on torch's current stream (still no host copy);
    CPU tensors are wrapped with ``torch.from_numpy`` over their ``__array_interface__``
    (zero-copy).
    """
    import torch

    if hasattr(dali_tensor, "__dlpack__"):
        return torch.from_dlpack(dali_tensor)
    if _is_gpu(dali_tensor):
        from nvidia.dali.plugin.pytorch import feed_ndarray, to_torch_type

        out = torch.empty(dali_tensor.shape(), dtype=to_torch_type[dali_tensor.dtype],
                          device=torch.device("cuda", dali_tensor.device_id()))
        return feed_ndarray(dali_tensor, out, cuda_stream=torch.cuda.current_stream(out.device))
    return torch.from_numpy(np.asarray(dali_tensor))


def pad_features(items: Sequence[Dict[str, "object"]], pad_value: float = 0.0) -> dict:
    """Stack per-clip torch features into one right-padded batch on their device.

    Args:
        items: ``[{"logmel": (n_mels, T_i), "mfcc": (n_mfcc, T_i)}]`` torch tensors on one
            device (what :meth:`DaliFrontend.from_files_torch` returns).
        pad_value: value of the frames past each clip's end (both features).
    Returns:
        ``{"logmel": (B, n_mels, T_max), "mfcc": (B, n_mfcc, T_max), "lengths": (B,) int64}``,
        all on the items' device; ``lengths[i] = T_i``. Copies on torch's current stream.
    """
    import torch

    if not items:
        raise ValueError("pad_features needs at least one clip")
    lengths = [int(it["logmel"].shape[-1]) for it in items]
    ref = items[0]["logmel"]
    t_max = max(lengths)
    out = {}
    for key in ("logmel", "mfcc"):
        rows = int(items[0][key].shape[0])
        buf = torch.full((len(items), rows, t_max), float(pad_value), dtype=ref.dtype,
                         device=ref.device)
        for i, it in enumerate(items):
            buf[i, :, :lengths[i]] = it[key]
        out[key] = buf
    out["lengths"] = torch.tensor(lengths, dtype=torch.int64, device=ref.device)
    return out


class DaliTorchOutputs:
    """The torch outputs of :class:`~mmengine.features.dali.DaliFrontend` (its base class; see
    the module docstring)."""

    @property
    def torch_device(self):
        """The torch device of the ``*_torch`` / ``*_padded`` outputs: ``cuda:0`` for
        ``device="gpu"`` (the GPU DALI's pipelines run on), else ``cpu``."""
        import torch

        return torch.device("cuda", 0) if self.device == "gpu" else torch.device("cpu")

    def _torch_samples(self, tensor_lists: tuple, sizes: Sequence[int], names: Sequence[str]):
        """Per-clip ``{"logmel", "mfcc"}`` torch views of one iteration's outputs, checked."""
        lm_tl, mf_tl = tensor_lists
        out = []
        for j, (n, what) in enumerate(zip(sizes, names)):
            item = {"logmel": dali_to_torch(lm_tl[j]), "mfcc": dali_to_torch(mf_tl[j])}
            out.append(self._check_frames(item, n, what))
        return out

    def from_arrays_torch(self, waveforms: Sequence[np.ndarray]) -> List[Dict[str, "object"]]:
        """:meth:`from_arrays` as torch tensors on :attr:`torch_device`, never via host memory.

        Returns ``[{"logmel": (n_mels, T_i), "mfcc": (n_mfcc, T_i)}]`` float32 torch tensors,
        each a zero-copy DLPack view of DALI's output buffer (``cuda:0`` for ``device="gpu"``,
        CPU for ``device="cpu"``), equal element for element to :meth:`from_arrays`. See the
        module docstring for stream safety and buffer lifetime.
        """
        out = []
        for s, chunk, outputs in self._array_batches(waveforms):
            out += self._torch_samples(outputs, [w.size for w in chunk],
                                       [f"waveform {s + i}" for i in range(len(chunk))])
        return out

    def from_files_torch(self, paths: Sequence) -> List[Dict[str, "object"]]:
        """:meth:`from_files` as torch tensors on :attr:`torch_device`, never via host memory.

        Decoding and resampling run on the CPU as in :meth:`from_files`; the features are
        zero-copy DLPack views of DALI's outputs (``cuda:0`` for ``device="gpu"``), equal element
        for element to :meth:`from_files`, in the order of ``paths``. Errors as :meth:`from_files`.
        """
        out = []
        for chunk, lengths, outputs in self._file_batches(paths):
            out += self._torch_samples(outputs, lengths, [str(p) for p in chunk])
        return out

    def _padded(self, batches, pad_value: float) -> dict:
        """Assemble ``(sizes, names, tensor_lists)`` iterations into one padded torch batch."""
        import torch

        pieces = []  # (first clip, dense {"logmel", "mfcc"} (n, F, T) views or per-clip views)
        lengths: List[int] = []
        for sizes, names, (lm_tl, mf_tl) in batches:
            frames = [self.cfg.n_frames(n) for n in sizes]
            if len(set(frames)) == 1 and lm_tl.is_dense_tensor() and mf_tl.is_dense_tensor():
                dense = {"logmel": dali_to_torch(lm_tl.as_tensor()),
                         "mfcc": dali_to_torch(mf_tl.as_tensor())}
                self._check_frames({k: v[0] for k, v in dense.items()}, sizes[0], names[0])
                pieces.append((len(lengths), dense))
            else:
                pieces.append((len(lengths), self._torch_samples((lm_tl, mf_tl), sizes, names)))
            lengths += frames
        if not lengths:
            raise ValueError("no clips given")
        if len(pieces) == 1 and isinstance(pieces[0][1], dict):
            out = dict(pieces[0][1])  # one dense DALI iteration: its buffers, no copy
        else:
            out = self._merge(pieces, lengths, pad_value)
            if self.device == "gpu":
                # the views of DALI's buffers die on return and DALI may reuse that memory at
                # once: let the device-to-device copies finish first
                torch.cuda.current_stream(self.torch_device).synchronize()
        out["lengths"] = torch.tensor(lengths, dtype=torch.int64, device=self.torch_device)
        return out

    def _merge(self, pieces, lengths: List[int], pad_value: float) -> dict:
        """Copy ``pieces`` (on their device) into ``{"logmel": (B, n_mels, T_max), "mfcc"}``."""
        import torch

        t_max = max(lengths)
        rows = {"logmel": self.cfg.n_mels, "mfcc": self.cfg.n_mfcc}
        out = {k: torch.full((len(lengths), r, t_max), float(pad_value), dtype=torch.float32,
                             device=self.torch_device) for k, r in rows.items()}
        for start, piece in pieces:
            if isinstance(piece, dict):
                n, t = piece["logmel"].shape[0], piece["logmel"].shape[-1]
                for k in rows:
                    out[k][start:start + n, :, :t] = piece[k]
            else:
                for i, item in enumerate(piece):
                    for k in rows:
                        out[k][start + i, :, :item[k].shape[-1]] = item[k]
        return out

    def from_arrays_padded(self, waveforms: Sequence[np.ndarray], *,
                           pad_value: float = 0.0) -> dict:
        """Features of ``waveforms`` as one right-padded torch batch on :attr:`torch_device`.

        Returns ``{"logmel": (B, n_mels, T_max), "mfcc": (B, n_mfcc, T_max), "lengths": (B,)
        int64}`` with ``lengths[i] = cfg.n_frames(n_i)`` and ``pad_value`` past each clip's end;
        ``[i, :, :lengths[i]]`` equals :meth:`from_arrays`'s clip ``i``. Equal-length clips in
        one DALI iteration (``len(waveforms) <= batch_size``) are a zero-copy view of DALI's
        dense output; otherwise the iterations are copied, on the device, into one torch buffer.
        Nothing passes through host memory.
        """
        def batches():
            for s, chunk, outputs in self._array_batches(waveforms):
                yield ([w.size for w in chunk], [f"waveform {s + i}" for i in range(len(chunk))],
                       outputs)
        return self._padded(batches(), pad_value)

    def from_files_padded(self, paths: Sequence, *, pad_value: float = 0.0) -> dict:
        """:meth:`from_files` as one right-padded torch batch on :attr:`torch_device`.

        Same layout and copy rules as :meth:`from_arrays_padded` (``lengths`` from each file's
        decoded length at ``cfg.sample_rate``); errors as :meth:`from_files`.
        """
        def batches():
            for chunk, lengths, outputs in self._file_batches(paths):
                yield lengths, [str(p) for p in chunk], outputs
        return self._padded(batches(), pad_value)
