"""The per-window features of one input while it waits for the classifier, in bounded memory.

A decoding thread featurises each window of a file as it is cut (``Engine._streamed``); the
item then waits, with every window's features, until the classifier has taken them all. A
``WindowStore`` keeps the first ``keep`` windows in memory (the engine passes its batch size)
and writes any later ones to an anonymous temporary file (``tempfile.TemporaryFile``: gone when
closed, or when the process ends), read back one window at a time when the classifier takes
it. So what one item holds in memory is set by the batch size, whatever the file's length: a
15-minute file is 30 windows of 30 s, 0.76 MB of float32 features each.

The file's pages live in the page cache, not in the process (it is read with ``read``, not
mapped). A write that fails (a full disk) raises ``OSError``, which fails that item only.
"""
from __future__ import annotations

import tempfile
from typing import Dict, List, Optional, Tuple

import numpy as np

#: the feature arrays a window may have, in the order they are written (chroma: only when the
#: front end computes the pitch stream)
KEYS = ("mfcc", "logmel", "chroma")


class WindowStore:
    """A list of per-window feature dicts (``{"mfcc": (n_mfcc, T), "logmel": (n_mels, T)}``,
    float32): ``append``, ``truncate``, ``len`` and ``store[w]``.

    Args:
        keep: windows held in memory; later ones go to a temporary file (0: every window to
            the file; None: every window in memory).
    """

    def __init__(self, keep: Optional[int]):
        self.keep = keep
        self._mem: List[Dict[str, np.ndarray]] = []
        self._file = None
        # per spilled window: (offset, ((key, shape), ...)); the file ends at self._end
        self._spilled: List[Tuple[int, Tuple[Tuple[str, Tuple[int, ...]], ...]]] = []
        self._end = 0

    def __len__(self) -> int:
        return len(self._mem) + len(self._spilled)

    @property
    def spilled(self) -> int:
        """Windows held in the temporary file."""
        return len(self._spilled)

    def append(self, feats: Dict[str, np.ndarray]) -> None:
        if self.keep is None or len(self._mem) < self.keep and not self._spilled:
            self._mem.append(feats)
            return
        if self._file is None:
            self._file = tempfile.TemporaryFile(prefix="mmengine-windows-")
        keys = [k for k in KEYS if k in feats]
        arrays = [np.ascontiguousarray(feats[k], dtype=np.float32) for k in keys]
        self._file.seek(self._end)
        for a in arrays:
            self._file.write(a.tobytes())
        self._spilled.append((self._end, tuple((k, a.shape) for k, a in zip(keys, arrays))))
        self._end += sum(a.nbytes for a in arrays)

    def truncate(self, n: int) -> None:
        """Keep the first ``n`` windows (a restarted stream rewrites the rest)."""
        if n < len(self._mem):
            del self._mem[n:]
            n_file = 0
        else:
            n_file = n - len(self._mem)
        if n_file < len(self._spilled):
            self._end = self._spilled[n_file][0]
            del self._spilled[n_file:]

    def __getitem__(self, w: int) -> Dict[str, np.ndarray]:
        if w < 0:
            w += len(self)
        if w < len(self._mem):
            return self._mem[w]
        offset, shapes = self._spilled[w - len(self._mem)]
        self._file.seek(offset)
        out = {}
        for key, shape in shapes:
            n = int(np.prod(shape)) * 4
            buf = self._file.read(n)
            if len(buf) != n:
                raise OSError(f"temporary window file: read {len(buf)} of {n} bytes")
            out[key] = np.frombuffer(buf, dtype=np.float32).reshape(shape).copy()
        return out

    def close(self) -> None:
        """Drop every window (and the temporary file)."""
        self._mem.clear()
        self._spilled.clear()
        if self._file is not None:
            self._file.close()
            self._file = None
