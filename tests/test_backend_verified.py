"""``auto`` picks only backends verified on the hardware they run on (``registry.VERIFIED``).

CPU (CI): the table covers every backend and holds dates and evidence; on a pretend machine
(every probe passing, torch "seeing" a GPU or not) ``auto`` returns exactly the first backend of
the preference order that can run the file and is verified on the hardware class it would run
on, for every subset of the table, every payload and both machine kinds, and fails with the
reasons when there is none; with the table as shipped, ``auto`` on a GPU uses torch; a named
backend still loads unverified; the fallback warning names the reason.

GPU (``gpu`` marker; ``bench/gpu/run.sh`` runs it): the engine on ``torch`` (cuDNN), ``cuda``
and ``triton`` gives the CPU torch engine's logits, fp32 and bf16, for each pooling: the test a
GPU run must pass (with the kernels' own tests) before ``VERIFIED`` may list those backends on
"gpu".
"""
from __future__ import annotations

import contextlib
import logging

import numpy as np
import pytest
import torch

from mmengine import _ext
from mmengine.config import AudioConfig, FrontendConfig, ModelConfig
from mmengine.errors import BackendUnavailableError
from mmengine.export import build_engine_from_model, example_inputs
from mmengine.models import build_model
from mmengine.runtime import Engine, registry

PAYLOADS = {"safetensors": "torch", "onnx": "onnx", "tensorrt-plan": "tensorrt"}  # -> built for
FRONTEND = FrontendConfig(sample_rate=8000, n_fft=256, hop_length=128, n_mels=12, n_mfcc=7)
AUDIO = AudioConfig(sample_rate=8000, clip_seconds=0.5)
LABELS = ["air", "jig", "reel", "waltz"]


def header(fmt: str, built_for: str) -> dict:
    return {"backend": built_for, "payload_format": fmt, "model": {"cell": "lstm"}}


@pytest.fixture
def machine(monkeypatch):
    """``machine(gpu, onnx_gpu=False)``: pretend every backend's probe passes and torch sees a
    GPU (or not); ``onnx_gpu``: ONNX Runtime would use its CUDA provider."""
    def pretend(gpu: bool, onnx_gpu: bool = False):
        monkeypatch.setattr(_ext, "cuda_available", lambda: gpu)
        monkeypatch.setattr(registry, "_onnx_uses_gpu", lambda: gpu and onnx_gpu)
        for name in registry.BACKENDS:
            monkeypatch.setitem(registry._PROBES, name, lambda: None)
    return pretend


def test_table_covers_every_backend_with_evidence():
    assert set(registry.VERIFIED) == set(registry.BACKENDS)
    for name, where in registry.VERIFIED.items():
        assert set(where) <= set(registry.HARDWARE_CLASSES), name
        if registry.BACKENDS[name].gpu:
            assert "cpu" not in where, f"{name} runs on a GPU only"
        for hw, v in where.items():
            assert len(v.date) == 10 and v.date[4] == "-" and v.evidence, (name, hw)


@pytest.mark.parametrize("gpu,onnx_gpu", [(False, False), (True, False), (True, True)],
                         ids=["cpu-machine", "gpu-machine", "gpu-machine-onnx-cuda"])
def test_auto_never_picks_an_unverified_backend(machine, monkeypatch, gpu, onnx_gpu):
    """Every subset of (backend, hardware class) pairs as the table: auto's choice is the
    first able and verified backend of the order, or a BackendUnavailableError."""
    machine(gpu, onnx_gpu)
    table = {}
    monkeypatch.setattr(registry, "VERIFIED", table)
    pairs = [(b, hw) for b in registry.BACKENDS for hw in registry.HARDWARE_CLASSES]
    order = registry.preference_order()
    picked = set()
    for mask in range(1 << len(pairs)):
        table.clear()
        table.update({b: {} for b in registry.BACKENDS})
        for k, (b, hw) in enumerate(pairs):
            if mask >> k & 1:
                table[b][hw] = registry.Verification("2026-01-01", "test")
        for fmt, built_for in PAYLOADS.items():
            expected = next((n for n in order if fmt in registry.BACKENDS[n].payload_formats
                             and registry.hardware_class(n) in table[n]), None)
            if expected is None:
                with pytest.raises(BackendUnavailableError, match="no backend here can run"):
                    registry.select_backend(header(fmt, built_for))
                continue
            got = registry.select_backend(header(fmt, built_for))
            assert got == expected, (mask, fmt)
            assert registry.hardware_class(got) in table[got]
            picked.add(got)
    assert picked == set(order), picked  # each backend of the order chosen by some table


def test_auto_on_a_gpu_uses_torch_with_the_shipped_table(machine, caplog):
    machine(gpu=True)
    for built_for in ("cuda", "triton", "torch", "native"):
        with caplog.at_level(logging.INFO, logger="mmengine.runtime"):
            caplog.clear()
            assert registry.select_backend(header("safetensors", built_for)) == "torch"
        infos = [r.getMessage() for r in caplog.records if r.levelno == logging.INFO]
        assert any("passed over cuda, triton" in m for m in infos), infos
        warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
        if built_for in ("cuda", "triton"):
            assert any(f"built for {built_for!r}" in w and "not verified on gpu" in w
                       for w in warnings), warnings
        else:
            assert not [w for w in warnings if "not verified" in w], warnings
    assert registry.hardware_class("torch") == "gpu"
    assert registry.unverified_reason("torch") is None
    for name in ("cuda", "triton", "tensorrt"):
        assert "backend=" + repr(name) in registry.unverified_reason(name)


def test_auto_on_a_cpu_keeps_the_cpu_order(machine):
    machine(gpu=False)
    assert registry.select_backend(header("safetensors", "cuda")) == "native"
    assert registry.select_backend(header("onnx", "onnx")) == "onnx"
    assert {registry.hardware_class(n) for n in ("native", "onnx", "torch")} == {"cpu"}


def test_named_unverified_backends_still_load(machine):
    machine(gpu=True, onnx_gpu=True)
    for name in ("cuda", "triton"):
        assert registry.select_backend(header("safetensors", name), name) == name
    assert registry.select_backend(header("tensorrt-plan", "tensorrt"), "tensorrt") == "tensorrt"
    assert registry.select_backend(header("onnx", "onnx"), "onnx") == "onnx"
    with pytest.raises(BackendUnavailableError, match=r"onnx: not verified on gpu.*"
                                                      r"backend='onnx'"):
        registry.select_backend(header("onnx", "onnx"))


def test_available_backends_keep_the_machines_order(machine):
    machine(gpu=False)
    assert registry.available_backends()[:3] == ["native", "onnx", "torch"]
    machine(gpu=True)
    assert registry.available_backends() == list(registry.PREFERENCE_GPU)


@pytest.mark.skipif(_ext.cuda_available(), reason="a GPU is visible")
def test_torch_frontend_on_gpu_without_one_is_a_clear_error(tmp_path):
    path = build_engine_from_model(tiny_model("last"), tmp_path / "m.mme", backend="torch",
                                   labels=LABELS, audio_cfg=AUDIO, frontend_cfg=FRONTEND)
    eng = Engine.load(path, backend="torch", frontend="torch", frontend_device="cpu")
    assert eng.frontend.name == "torch" and str(eng.frontend.device) == "cpu"
    with pytest.raises(BackendUnavailableError, match="frontend_device='gpu' needs a CUDA GPU"):
        Engine.load(path, backend="torch", frontend="torch", frontend_device="gpu")
    with pytest.raises(ValueError, match="'cpu' or 'gpu'"):
        Engine.load(path, backend="torch", frontend="torch", frontend_device="cuda")


# ---------------------------------------------------------------------- GPU
def tiny_model(pooling: str):
    """The default design on two audio streams, hidden 128 (the kernels' size), the head
    scaled so that the logits tell a wrong recurrence."""
    torch.manual_seed(5)
    model = build_model(ModelConfig(modalities=("mfcc", "mel"), pooling=pooling),
                        dict(n_mfcc=7, n_mels=12, text_dim=0, symbolic_dim=0,
                             n_classes=len(LABELS), multilabel=False))
    with torch.no_grad():
        model.classifier.head.weight.mul_(60.0)
    return model.eval()


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", ["fp32", "bf16"])
@pytest.mark.parametrize("pooling", ["last", "mean", "meanmax"])
@pytest.mark.parametrize("backend", ["torch", "cuda", "triton"])
def test_gpu_engine_matches_the_cpu_engine(backend, pooling, dtype, tmp_path):
    """Logits (|.| up to ~5) of the GPU engine vs the CPU torch fp32 engine from the same
    weights, batch 5, 37 frames, cuDNN without TF32 (torch's default lets it use TF32;
    matmuls do not by default). Tolerance: fp32 1e-3; bf16 twice the CPU bf16 engine's own
    error plus 1e-2 (scaling the second layer's recurrent weights by 0.9 moves these logits by
    0.06-0.09)."""
    with cudnn_without_tf32():
        check_gpu_engine(backend, pooling, dtype, tmp_path)


@contextlib.contextmanager
def cudnn_without_tf32():
    before = torch.backends.cudnn.allow_tf32
    torch.backends.cudnn.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cudnn.allow_tf32 = before


def check_gpu_engine(backend: str, pooling: str, dtype: str, tmp_path) -> None:
    model = tiny_model(pooling)
    paths = {dt: build_engine_from_model(model, tmp_path / f"{dt}.mme", backend="torch",
                                         dtype=dt, labels=LABELS, audio_cfg=AUDIO,
                                         frontend_cfg=FRONTEND) for dt in {"fp32", dtype}}
    gpu = Engine.load(paths[dtype], backend=backend, **({"device": "cuda"}
                                                         if backend == "torch" else {}))
    assert gpu.backend == backend
    x = example_inputs(gpu.header["io"]["inputs"], 5, 37, np.random.default_rng(11))
    ref = Engine.load(paths["fp32"], backend="torch", device="cpu").runner(x)
    got = gpu.runner(x)
    tol = 1e-3
    if dtype == "bf16":
        own = Engine.load(paths[dtype], backend="torch", device="cpu").runner(x)
        tol = 2 * float(np.abs(own - ref).max()) + 1e-2
    err = float(np.abs(got - ref).max())
    assert err <= tol, f"{backend} {pooling} {dtype}: max |logit diff| {err:.3g} > {tol:.3g}"
