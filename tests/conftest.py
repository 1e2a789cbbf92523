"""Shared fixtures and the GPU switch.

GPU tests carry ``@pytest.mark.gpu``. Without a CUDA device they are skipped, unless
``MMENGINE_REQUIRE_GPU=1`` is set: then a missing GPU is a failure (use it on GPU machines so
that an accidental skip cannot pass). With the variable set, every other skip whose reason names
a GPU, CUDA, nvcc, Triton or the ``mmengine._C`` extension (a module-level
``pytest.importorskip``/``pytest.skip`` and a ``pytestmark`` skipif included) is a failure too,
except DALI and TensorRT, which cannot exist on the GPU machines (``bench/gpu/report.py``,
``ALLOWED_SKIPS``), and skips of tests meant for machines *without* a GPU ("a GPU is visible").
No device is queried at import time.
"""
from __future__ import annotations

import os
import re

import numpy as np
import pytest


def _require_gpu() -> bool:
    return os.environ.get("MMENGINE_REQUIRE_GPU") == "1"


#: skip reasons that MMENGINE_REQUIRE_GPU=1 turns into failures: a GPU, CUDA or the extension
#: is missing (``could not import 'mmengine...'`` is an importorskip of our own modules)
REQUIRED_SKIP = re.compile(r"\bGPUs?\b|\bCUDA\b|\bnvcc\b|\btriton\b|mmengine\._C\b|\b_C\b"
                           r"|not built|built without|could not import '(mmengine|triton)",
                           re.IGNORECASE)
#: skips the GPU run accepts (bench/gpu/report.py ALLOWED_SKIPS: what cannot be installed there)
ALLOWED_SKIP = re.compile(r"nvidia\.dali|\bDALI\b|tensorrt|TensorRT")
#: skips of tests for machines without a GPU (or with TensorRT): right on a GPU machine
PRESENT_SKIP = re.compile(r"\b(is|are) (visible|present|usable)\b|\bsees a GPU\b")


def required_skip_failure(reason: str):
    """The failure message for a skip ``reason`` when MMENGINE_REQUIRE_GPU=1, else None."""
    if (not _require_gpu() or not REQUIRED_SKIP.search(reason)
            or ALLOWED_SKIP.search(reason) or PRESENT_SKIP.search(reason)):
        return None
    return f"MMENGINE_REQUIRE_GPU=1 but skipped: {reason}"


def _skip_reason(longrepr) -> str:
    if isinstance(longrepr, tuple) and len(longrepr) == 3:  # (path, line, "Skipped: ...")
        longrepr = longrepr[2]
    return str(longrepr).removeprefix("Skipped: ")


@pytest.hookimpl(wrapper=True)
def pytest_make_collect_report(collector):
    """A module skipped at collection (module-level importorskip or pytest.skip)."""
    rep = yield
    if rep.skipped:
        msg = required_skip_failure(_skip_reason(rep.longrepr))
        if msg:
            rep.outcome, rep.longrepr = "failed", msg
    return rep


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
    """A test skipped by a skipif mark (``pytestmark`` included), a fixture or its body."""
    rep = yield
    if rep.skipped and not hasattr(rep, "wasxfail"):
        msg = required_skip_failure(_skip_reason(rep.longrepr))
        if msg:
            rep.outcome, rep.longrepr = "failed", msg
    return rep


def pytest_collection_modifyitems(config, items):
    # the marker itself: "gpu" in it.keywords would also match a parameter id "gpu"
    gpu_items = [it for it in items if it.get_closest_marker("gpu") is not None]
    if not gpu_items or _require_gpu():
        return
    from mmengine._ext import cuda_available

    if cuda_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU (set MMENGINE_REQUIRE_GPU=1 to fail instead)")
    for it in gpu_items:
        it.add_marker(skip)


def pytest_runtest_setup(item):
    """With MMENGINE_REQUIRE_GPU=1, a gpu test fails before its fixtures and body when no GPU
    is visible (a fixture added by a marker after collection would never run)."""
    if _require_gpu() and item.get_closest_marker("gpu") is not None:
        from mmengine._ext import cuda_available

        if not cuda_available():
            pytest.fail("MMENGINE_REQUIRE_GPU=1 but no CUDA device is visible", pytrace=False)


@pytest.fixture
def rng():
    """A seeded numpy Generator (seed 1234)."""
    return np.random.default_rng(1234)


@pytest.fixture
def torch_seed():
    import torch

    torch.manual_seed(1234)
    return 1234
