"""Configuration dataclasses of the inference side: engines, building them, whole libraries,
benchmarks (``EngineConfig``, ``BuildConfig``, ``BatchConfig``, ``BenchConfig``).

Part of the one source of defaults (``mmengine.config`` re-exports every class here, so
``from mmengine.config import EngineConfig`` is the way to reach them); stdlib only.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Tuple


@dataclass(frozen=True)
class EngineConfig:
    """Settings of inference: ``Engine.load`` / ``Engine.classify``, ``mmengine classify``,
    ``mmengine.classify`` (every default there comes from here).

    Attributes:
        backend: "auto" (the fastest verified backend that can run the file, logged) or a
            backend name (``runtime.registry.BACKENDS``).
        frontend: feature front end: "auto" (the native C++ one when built), "native",
            "reference", "torch" or "dali".
        top_k: labels kept per input (``Prediction.top_k``).
        batch_size: windows per backend call; also how many windows of one input wait in
            memory (later ones go to a temporary file, ``runtime.window_store``).
        workers: decoding threads; 0: one per core, at most ``max_auto_workers``.
        max_auto_workers: the cap of ``workers=0``.
        bf16_recheck_margin: a native bf16 engine reruns in fp32 every input whose decision
            margin (top-two softmax probabilities; ``runtime.native_model.decision_margin``)
            is below this, so that it decides like the fp32 engine. Chosen on the validation
            splits of the default model (seed 0): the largest change of that margin between
            bf16 and fp32 was 0.013 (folk) and 0.0027 (vocal), so 0.05 is ~4x the larger
            (``python bench/bf16_flips.py RUN DATA``; figures in bench/RESULTS.md).
    """

    backend: str = "auto"
    frontend: str = "auto"
    top_k: int = 3
    batch_size: int = 32
    workers: int = 0
    max_auto_workers: int = 4
    bf16_recheck_margin: float = 0.05


@dataclass(frozen=True)
class BuildConfig:
    """Defaults of ``mmengine build`` / ``mmengine.build_engine``: the payload's backend and
    the compute precision."""

    backend: str = "native"
    dtype: str = "fp32"


@dataclass(frozen=True)
class BatchConfig:
    """Settings of ``mmengine batch`` (``mmengine.batch.batch_classify``).

    Attributes:
        batch_size: inputs per batch: what one engine copy (a Ray actor, or the process)
            classifies in one call and what one shard file of results commits; a killed run
            loses at most the batches in flight.
        top_k: labels kept per input (``top_k`` column).
        window_batch: windows per backend call inside the engine (``Engine.classify``'s
            ``batch_size``).
        ray_threads: threads per Ray actor when neither ``--workers`` nor ``--threads`` is
            given (1: one single-threaded actor per CPU of the cluster, which scales best).
    """

    batch_size: int = 32
    top_k: int = EngineConfig.top_k
    window_batch: int = EngineConfig.batch_size
    ray_threads: int = 1


@dataclass(frozen=True)
class BenchConfig:
    """Defaults of ``mmengine bench`` / ``mmengine.benchmark`` (``bench.benchmark_engine``).

    Attributes:
        batches: batch sizes timed (sequences per ``Engine.predict_features`` call).
        rounds: interleaved timed rounds (a count), after two warm-up calls per backend and
            batch.
        target_s: seconds after which one timing request stops making calls (it makes at
            least one).
        max_reps: the most calls one timing request makes (a count); it keeps the best.
    """

    batches: Tuple[int, ...] = (1, 8, 64)
    rounds: int = 10
    target_s: float = 0.25
    max_reps: int = 5
