"""What every audio front end shares (the dispatcher ``features.frontend`` and the front ends
``native``, ``dali``, ... import it from here, so that no front end imports the dispatcher):
the base class ``Frontend`` with the capabilities a front end declares, and the waveform
checks and length groups of their ``compute``."""
from __future__ import annotations

from collections import defaultdict
from typing import Iterator, List, Sequence

import numpy as np


class Frontend:
    """The base of every audio front end: its name and the capabilities it declares.

    Every front end has ``compute(waveforms) -> [{"logmel": (n_mels, T_i), "mfcc": (n_mfcc,
    T_i)}, ...]`` (float32 numpy, one dict per mono waveform, in input order). The capability
    flags say which further methods it has; the engine reads them (never ``hasattr``), and a
    front end that sets one to True defines the method.

    Attributes:
        name: the registry key (``features.frontend.REGISTRY``).
        padded_tensors: ``from_arrays_padded(waveforms)`` returns the features of a batch as
            one padded batch of torch tensors on the front end's device (``{"logmel": (B,
            n_mels, T_max), "mfcc": ..., "lengths": (B,)}``), which a backend that takes torch
            tensors reads without a host round trip (DALI).
        serial_compute: ``compute_serial(waveforms)`` is ``compute`` on the calling thread only,
            so each decoding thread of the engine can featurise its own windows (native).
    """

    name: str = ""
    padded_tensors: bool = False
    serial_compute: bool = False


def check_waveforms(waveforms: Sequence[np.ndarray], dtype=np.float32) -> List[np.ndarray]:
    """Waveforms as 1-D arrays of ``dtype``; ``ValueError`` naming the index of a bad one."""
    out = []
    for i, w in enumerate(waveforms):
        w = np.asarray(w, dtype=dtype)
        if w.ndim != 1:
            raise ValueError(f"waveform {i}: expected a 1-D mono waveform, got shape {w.shape}")
        if not np.isfinite(w).all():
            raise ValueError(f"waveform {i}: contains non-finite samples")
        out.append(w)
    return out


def length_groups(waves: Sequence[np.ndarray], batch_size: int) -> Iterator[List[int]]:
    """Indices of equal-length waveforms, at most ``batch_size`` at a time (order kept)."""
    by_length = defaultdict(list)
    for i, w in enumerate(waves):
        by_length[w.size].append(i)
    for idx in by_length.values():
        for s in range(0, len(idx), batch_size):
            yield idx[s:s + batch_size]
