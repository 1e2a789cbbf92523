"""What every audio front end shares (the dispatcher ``features.frontend`` and the front ends
``native``, ``dali``, ... import it from here, so that no front end imports the dispatcher)."""
from __future__ import annotations

from collections import defaultdict
from typing import Iterator, List, Sequence

import numpy as np


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
