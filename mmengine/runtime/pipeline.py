"""The decoding side of ``Engine.classify``: decoding threads that stream each input file,
cut it into windows and (with a front end that featurises on those threads) compute each
window's features as it is cut, under a memory budget that keeps what waits for the
classifier at about one batch of windows plus one file per thread.

``Engine._streamed`` (one file: ``WindowStream`` into a ``WindowStore``) and ``Engine._decode``
(arrays, and files already known bad) are the per-item steps; ``decoded`` runs them on a
thread pool in input order.
"""
from __future__ import annotations

import collections
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Iterator, Sequence, Tuple

from ..errors import InputLimitError
from .inputs import _ITEM_ERRORS, _Item
from .window_store import WindowStore


def decoded(engine, items: Sequence[_Item], workers: int, ahead: int = 1,
            queue: int = 0) -> Iterator[Tuple[_Item, Any]]:
    """(item, (samples, windows or None, per-window features or None) or exception) in
    order.

    Memory: a file is streamed (``_streamed``: the thread holds one block, the
    resampler's state and one window); with a front end that featurises on the decoding
    threads, an item keeps only its windows' features (each window is dropped on the
    thread that cut it). Up to ``max(2 * workers, queue)`` items are queued (short clips keep
    the threads busy while the backend runs a batch), but a thread starts a new file only
    while the finished items not yet taken hold fewer than ``ahead`` windows (the batch
    size): what waits is about one batch of windows plus one file per thread, whatever
    the files' lengths.
    """
    from ..data.audio import windows as cut_windows

    budget = threading.Condition()
    held = [0]  # windows of finished items not yet taken by the caller
    taken = [0]  # items taken by the caller: item number taken[0] is the one it waits for
    closed = [False]  # the caller stopped taking items: nothing waits any more
    limit = max(ahead, 1)

    def n_windows(got) -> int:
        return 0 if isinstance(got, Exception) else len(
            got[2] if got[2] is not None else got[1])

    def one(item, seq: int = 0):
        if workers > 1:
            with budget:  # the item the caller waits for never waits (no deadlock)
                while held[0] >= limit and seq > taken[0] and not closed[0]:
                    budget.wait(1.0)
                if closed[0]:
                    return None
        try:
            if item.array is None and item.error is None:  # a file: streamed
                got = engine._streamed(item, keep=limit)
            else:
                y = engine._decode(item)
                n = len(y)
                wins = cut_windows(y, engine.window)
                if engine._worker_features:
                    feats = engine.frontend.compute_serial(wins)
                    del y, wins
                    got = (n, None, feats)
                else:
                    got = (n, wins, None)
        except _ITEM_ERRORS as exc:
            return exc
        except (MemoryError, RecursionError) as exc:  # defence in depth: one item only
            err = InputLimitError(f"{item.path}: input needs more resources than "
                                  f"available ({type(exc).__name__})")
            err.limit = "max_decoded_bytes"
            return err
        with budget:
            held[0] += n_windows(got)
        return got

    if workers == 1:
        for it in items:
            yield it, one(it)
        return
    pending: collections.deque = collections.deque()
    with ThreadPoolExecutor(max_workers=workers) as pool:
        try:
            for seq, it in enumerate(items):
                pending.append((it, pool.submit(one, it, seq)))
                if len(pending) >= max(2 * workers, queue):
                    yield _take(pending, budget, held, taken, n_windows)
            while pending:
                yield _take(pending, budget, held, taken, n_windows)
        finally:  # also when the caller stops early (an exception, a closed generator)
            with budget:
                closed[0] = True
                budget.notify_all()
            for _, fut in pending:
                fut.cancel()


def _take(pending, budget, held, taken, n_windows):
    """The oldest pending (item, result); its windows leave the budget of ``_decoded``."""
    head, fut = pending.popleft()
    got = fut.result()
    with budget:
        held[0] -= n_windows(got)
        taken[0] += 1
        budget.notify_all()
    return head, got


def _close_store(got) -> None:
    """Close the ``WindowStore`` of a decoded item's result, if it has one."""
    if isinstance(got, tuple) and len(got) == 3 and isinstance(got[2], WindowStore):
        got[2].close()
