"""Shared fixtures and the GPU switch.

GPU tests carry ``@pytest.mark.gpu``. Without a CUDA device they are skipped, unless
``MMENGINE_REQUIRE_GPU=1`` is set: then a missing GPU is a failure (use it on GPU machines so
that an accidental skip cannot pass). No device is queried at import time.
"""
from __future__ import annotations

import os

import numpy as np
import pytest


def _require_gpu() -> bool:
    return os.environ.get("MMENGINE_REQUIRE_GPU") == "1"


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
