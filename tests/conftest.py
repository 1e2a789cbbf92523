"""Shared fixtures and the GPU switch.

GPU tests carry ``@pytest.mark.gpu``. Without a CUDA device they are skipped, unless
``MMENGINE_REQUIRE_GPU=1`` is set: then a missing GPU is a failure (use it on GPU machines so
that an accidental skip cannot pass). No device is queried at import time.
"""
from __future__ import annotations

import os

import numpy as np
import pytest


def pytest_collection_modifyitems(config, items):
    # the marker itself: "gpu" in it.keywords would also match a parameter id "gpu"
    gpu_items = [it for it in items if it.get_closest_marker("gpu") is not None]
    if not gpu_items:
        return
    from mmengine._ext import cuda_available

    if cuda_available():
        return
    if os.environ.get("MMENGINE_REQUIRE_GPU") == "1":
        for it in gpu_items:
            it.add_marker(pytest.mark.usefixtures("_fail_no_gpu"))
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU (set MMENGINE_REQUIRE_GPU=1 to fail instead)")
    for it in gpu_items:
        it.add_marker(skip)


@pytest.fixture
def _fail_no_gpu():
    pytest.fail("MMENGINE_REQUIRE_GPU=1 but no CUDA device is visible")


@pytest.fixture
def rng():
    """A seeded numpy Generator (seed 1234)."""
    return np.random.default_rng(1234)


@pytest.fixture
def torch_seed():
    import torch

    torch.manual_seed(1234)
    return 1234
