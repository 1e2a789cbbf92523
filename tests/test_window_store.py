"""``runtime.window_store.WindowStore``: the first ``keep`` windows' features in memory, later
ones in a temporary file; reading back, truncating (a restarted stream) and closing."""
from __future__ import annotations

import numpy as np
import pytest

from mmengine.runtime.window_store import WindowStore


def feats(k, T=7):
    rng = np.random.default_rng(k)
    return {"mfcc": rng.standard_normal((3, T)).astype(np.float32),
            "logmel": rng.standard_normal((5, T)).astype(np.float32)}


def same(a, b):
    return all(np.array_equal(a[k], b[k]) and a[k].dtype == b[k].dtype for k in ("mfcc", "logmel"))


@pytest.mark.parametrize("keep", [None, 0, 1, 3, 10])
def test_every_window_reads_back_exactly(keep):
    s = WindowStore(keep)
    want = [feats(k, T=7 + k % 3) for k in range(6)]
    for f in want:
        s.append(f)
    assert len(s) == 6
    assert s.spilled == (0 if keep is None else max(0, 6 - keep))
    for w in range(6):
        assert same(s[w], want[w])
    assert same(s[-1], want[-1])
    got = s[5]
    got["mfcc"][:] = 0  # a read-back window is the caller's own copy
    assert same(s[5], want[5])
    s.close()
    assert len(s) == 0


@pytest.mark.parametrize("cut", [0, 1, 2, 4, 6])
def test_truncate_then_rewrite_like_a_restarted_stream(cut):
    s = WindowStore(2)
    first = [feats(k) for k in range(6)]
    for f in first:
        s.append(f)
    s.truncate(cut)
    again = [feats(100 + k) for k in range(cut, 6)]
    for f in again:
        s.append(f)
    want = first[:cut] + again
    assert len(s) == 6 and s.spilled == 4
    for w in range(6):
        assert same(s[w], want[w]), w
    s.close()


def test_memory_windows_are_not_copied_and_close_drops_the_file():
    s = WindowStore(1)
    a, b = feats(0), feats(1)
    s.append(a)
    s.append(b)
    assert s[0] is a and s.spilled == 1
    f = s._file
    s.close()
    assert f.closed
