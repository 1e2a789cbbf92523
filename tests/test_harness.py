"""The benchmark harness (``mmengine/harness.py``): interleaved order, the statistics with a
fake clock, and ``run_interleaved`` on trivial contenders (one spawned process each), a crashing
one and one whose process dies included."""
from __future__ import annotations

import os
import time

import pytest

from mmengine import harness
from mmengine.harness import (Contender, Workload, interleaved_rounds, markdown, percentile,
                              ratios, rotation, run_interleaved, summarize, time_calls)


# ------------------------------------------------------------------ factories (run in workers)
def sleepy_factory(threads, seconds: float = 0.001, fail_after: int = 0, die_after: int = 0):
    """Calls that sleep ``seconds`` x batch; the call after ``fail_after`` calls raises, the
    one after ``die_after`` calls ends the process (exit code 3)."""
    calls = [0]

    def make(params, batch):
        def run():
            calls[0] += 1
            if fail_after and calls[0] > fail_after:
                raise RuntimeError("boom")
            if die_after and calls[0] > die_after:
                os._exit(3)
            time.sleep(seconds * batch * params.get("scale", 1))
        return run

    return f"sleeps {seconds} s per item, threads={threads}", make


def broken_factory(threads):
    raise ImportError("no such library here")


# ------------------------------------------------------------------ scheduling and statistics
def test_rotation_and_interleaved_order():
    assert rotation(["a", "b", "c"], 0) == ["a", "b", "c"]
    assert rotation(["a", "b", "c"], 1) == ["b", "c", "a"]
    assert rotation(["a", "b", "c"], 5) == ["c", "a", "b"]
    assert rotation([], 3) == []
    seen, ends = [], []
    got = interleaved_rounds(["a", "b"], [1, 8], 3, lambda n, k: seen.append((n, k)) or len(seen),
                             skip=lambda n, k: (n, k) == ("b", 8), after_round=ends.append)
    assert seen == [("a", 1), ("b", 1), ("a", 8),            # round 0: a first
                    ("b", 1), ("a", 1), ("a", 8),            # round 1: b first
                    ("a", 1), ("b", 1), ("a", 8)]            # round 2: a first again
    assert ends == [0, 1, 2]
    assert got[("a", 1)] == [1, 5, 7] and got[("b", 8)] == []


def test_time_calls_with_a_fake_clock():
    now = [0.0]

    def clock():
        return now[0]

    def call():
        now[0] += 0.1

    assert time_calls(call, target_s=0.25, max_reps=10, clock=clock) == pytest.approx([0.1] * 3)
    assert len(time_calls(call, target_s=100.0, max_reps=4, clock=clock)) == 4
    assert len(time_calls(call, target_s=0.0, max_reps=0, clock=clock)) == 1  # at least one


def test_summarize_and_ratios():
    s = summarize([[3.0, 2.0], [5.0], [1.0, 4.0, 9.0]])
    assert s["round_best_s"] == [2.0, 5.0, 1.0] and s["median_s"] == 2.0
    assert s["calls"] == 6
    assert s["p50_s"] == pytest.approx(3.5) and s["p99_s"] == pytest.approx(8.8)
    assert percentile([], 50) != percentile([], 50)  # NaN
    r = ratios({"fast": 1.0, "slow": 4.0})
    assert r == {"fast": {"slow": 4.0}, "slow": {"fast": 0.25}}


# ------------------------------------------------------------------ the multi-process harness
def test_run_interleaved_trivial_contenders(monkeypatch):
    monkeypatch.setattr(harness, "SETTLE_S", 0.0)
    me = f"{__name__}:sleepy_factory"
    contenders = [Contender("fast", me, {"seconds": 0.001}),
                  Contender("slow", me, {"seconds": 0.005}),
                  Contender("broken", f"{__name__}:broken_factory"),
                  Contender("crashes", me, {"fail_after": 3}),
                  Contender("dies", me, {"die_after": 3})]
    logs = []
    res = run_interleaved(contenders, [Workload("w", {"scale": 1}, "items", 1e6)], [1, 2],
                          rounds=2, threads=1, target_s=10.0, max_reps=2, peak_in=None,
                          suite="t", log=logs.append)
    rows = {(r["contender"], r["batch"]): r for r in res["results"]}
    for b in (1, 2):
        fast, slow = rows[("fast", b)], rows[("slow", b)]
        assert len(fast["round_best_s"]) == 2 and fast["calls"] == 4
        assert fast["median_s"] >= 0.001 * b and slow["median_s"] >= 0.005 * b
        assert fast["ratios"]["slow"] == pytest.approx(slow["median_s"] / fast["median_s"])
        assert fast["ratios"]["slow"] > 1.5
        assert fast["items_per_s"] == pytest.approx(b / fast["median_s"])
        assert fast["gflops"] == pytest.approx(1e6 * b / fast["median_s"] / 1e9)
        assert fast["peak_rss_mib"] > 0
    assert "ImportError: no such library here" in res["contenders"]["broken"]["skipped"]
    assert "ImportError" in rows[("broken", 1)]["skipped"]
    # calls count across keys: the warm-up of batch 2 fails, then the first timed call of 1
    assert rows[("crashes", 1)]["skipped"] == "RuntimeError: boom"
    assert "worker died" in rows[("dies", 1)]["skipped"]
    assert "exit code 3" in rows[("dies", 1)]["skipped"]
    assert any("crashes failed on w batch 1: RuntimeError: boom" in m for m in logs)
    md = markdown(res)
    assert "| 1 | fast |" in md and "| 1 | crashes | skipped |" in md
