"""The benchmark harness moved into the package: ``mmengine/harness.py`` (``mmengine bench``
runs through it too, and cannot import from ``bench/``). This module re-exports it for old
imports; new code imports ``mmengine.harness``."""
from mmengine.harness import *  # noqa: F401,F403
from mmengine.harness import (ANSWER_TIMEOUT_S, PEAK_N, PEAK_WORKER, SETTLE_S,  # noqa: F401
                              Contender, Workload, gemm_peak, interleaved_rounds, machine_info,
                              markdown, median, percentile, ratios, rotation, run_interleaved,
                              summarize, time_calls, write_outputs)
