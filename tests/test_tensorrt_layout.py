"""TensorRT backend: what can be checked without TensorRT (profile settings from the config,
precision flags, the ONNX it consumes, the plan engine-file layout, clear refusals here), and
the real build + run as a GPU test."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from mmengine import _ext
from mmengine.config import AudioConfig, FrontendConfig, ModelConfig
from mmengine.config import first_design
from mmengine.errors import BackendUnavailableError
from mmengine.export import build_engine_from_model, engine_metadata, export_onnx, input_spec
from mmengine.models import build_model
from mmengine.runtime import Engine, engine_file
from mmengine.runtime.tensorrt_backend import (
    TensorRTSettings, precision_plan, profile_shapes, resolved_ranges, window_frames)

FRONTEND = FrontendConfig(sample_rate=8000, n_fft=256, hop_length=128, n_mels=12, n_mfcc=7)
AUDIO = AudioConfig(sample_rate=8000, clip_seconds=0.5)
TRT10_FLAGS = ["FP16", "BF16", "INT8", "TF32", "REFIT", "STRICT_TYPES"]
TRT11_FLAGS = ["REFIT", "DEBUG", "WEIGHT_STREAMING"]


def tiny_model(modalities=("mfcc", "mel", "symbolic"), pooling="last"):
    torch.manual_seed(0)
    cfg = first_design(hidden_size=16, num_layers=2, stem_stages=2, mfcc_channels=4,
                      mel_channels=4, symbolic_channels=3, pooling=pooling,
                      modalities=tuple(modalities))
    return build_model(cfg, dict(n_mfcc=7, n_mels=12, text_dim=0, symbolic_dim=5,
                                 n_classes=3, multilabel=False)).eval()


def test_window_frames_from_config():
    # 0.5 s at 8 kHz = 4000 samples, hop 128, centred: 1 + 4000 // 128 = 32 frames
    assert window_frames(AUDIO, FRONTEND) == 32
    assert window_frames(AudioConfig(), FrontendConfig()) == 1 + int(30 * 22050) // 512


def test_profile_shapes_from_config():
    spec = input_spec(tiny_model(), FRONTEND)
    frames = window_frames(AUDIO, FRONTEND)
    shapes = profile_shapes(spec, TensorRTSettings(opt_batch=8, max_batch=32), frames)
    assert shapes == {
        "mfcc": ((1, 7, 1), (8, 7, 32), (32, 7, 32)),
        "logmel": ((1, 12, 1), (8, 12, 32), (32, 12, 32)),
        "symbolic": ((1, 5, 1), (8, 5, 32), (32, 5, 32)),
        "symbolic_mask": ((1,), (8,), (32,)),
    }
    wide = profile_shapes(spec, TensorRTSettings(min_frames=4, opt_frames=40, max_frames=100),
                          frames)
    assert wide["mfcc"] == ((1, 7, 4), (16, 7, 40), (64, 7, 100))


@pytest.mark.parametrize("bad", [dict(min_batch=0), dict(opt_batch=100, max_batch=64),
                                 dict(min_frames=40), dict(opt_frames=10, max_frames=5)])
def test_profile_ranges_are_checked(bad):
    with pytest.raises(ValueError, match="min <= opt <= max"):
        resolved_ranges(TensorRTSettings(**bad), 32)


def test_unknown_build_option_is_refused():
    with pytest.raises(ValueError, match="unknown TensorRT option"):
        TensorRTSettings.from_options({"max_batch": 8, "max_bach": 9})
    assert TensorRTSettings.from_options({"max_batch": 8}).max_batch == 8


def test_precision_flags():
    assert precision_plan("fp32", TRT10_FLAGS) == {"strongly_typed": False, "set": [],
                                                   "clear": ["TF32"]}
    assert precision_plan("fp16", TRT10_FLAGS)["set"] == ["FP16"]
    assert precision_plan("bf16", TRT10_FLAGS)["set"] == ["BF16"]
    assert precision_plan("fp32", TRT11_FLAGS)["strongly_typed"] is True
    with pytest.raises(BackendUnavailableError, match="BuilderFlag.BF16"):
        precision_plan("bf16", TRT11_FLAGS)
    with pytest.raises(ValueError, match="precision"):
        precision_plan("int8", TRT10_FLAGS)


def test_onnx_consumed_by_tensorrt_is_valid():
    onnx = pytest.importorskip("onnx")
    model = tiny_model()
    spec = input_spec(model, FRONTEND)
    proto = onnx.load_model_from_string(export_onnx(model, spec))
    onnx.checker.check_model(proto, full_check=True)
    names = [i.name for i in proto.graph.input]
    shapes = profile_shapes(spec, TensorRTSettings(), window_frames(AUDIO, FRONTEND))
    assert names == list(shapes)  # every graph input gets a profile, none extra
    for i in proto.graph.input:
        dims = [d.dim_param or d.dim_value for d in i.type.tensor_type.shape.dim]
        lo, opt, hi = shapes[i.name]
        for d, a, b, c in zip(dims, lo, opt, hi):
            assert (a == b == c == d) if isinstance(d, int) else a <= b <= c


def _fake_plan_file(tmp_path):
    """An engine file laid out as ``build`` writes it, with fake plan bytes."""
    model = tiny_model()
    extra = engine_metadata(model, labels=["a", "b", "c"], audio_cfg=AUDIO,
                            frontend_cfg=FRONTEND, symbolic={"dim": 5})
    settings = TensorRTSettings(max_batch=16)
    shapes = profile_shapes(extra["io"]["inputs"], settings, window_frames(AUDIO, FRONTEND))
    extra["backend_options"] = {
        "tensorrt_version": "10.0.0", "precision": "fp16", "strongly_typed": False,
        "settings": {"max_batch": 16}, "profile": {k: [list(s) for s in v]
                                                   for k, v in shapes.items()},
        "device": "fake", "compute_capability": "9.0"}
    plan = bytes(range(256)) * 8
    header = engine_file.make_header("tensorrt", "tensorrt-plan", "fp16", plan, extra)
    return engine_file.write_engine_file(tmp_path / "plan.mme", header, plan), plan


def test_plan_file_layout(tmp_path):
    path, plan = _fake_plan_file(tmp_path)
    got = engine_file.read_engine_file(path)
    assert got.payload == plan
    h = got.header
    assert (h["backend"], h["payload_format"], h["dtype"]) == ("tensorrt", "tensorrt-plan",
                                                                "fp16")
    assert h["backend_options"]["profile"]["mfcc"] == [[1, 7, 1], [16, 7, 32], [16, 7, 32]]
    assert [s["name"] for s in h["io"]["inputs"]] == ["mfcc", "logmel", "symbolic",
                                                       "symbolic_mask"]


@pytest.mark.skipif(_ext.has("tensorrt") and _ext.cuda_available(),
                    reason="TensorRT is usable here")
def test_plan_file_refused_clearly_without_tensorrt(tmp_path):
    path, _ = _fake_plan_file(tmp_path)
    for backend in ("auto", "tensorrt"):
        with pytest.raises(BackendUnavailableError, match="tensorrt") as info:
            Engine.load(path, backend=backend)
        assert "pip install" in str(info.value) or "GPU" in str(info.value)
    with pytest.raises(BackendUnavailableError, match="runs on tensorrt only"):
        Engine.load(path, backend="onnx")


@pytest.mark.skipif(_ext.has("tensorrt") and _ext.cuda_available(),
                    reason="TensorRT is usable here")
def test_tensorrt_build_refused_clearly_without_tensorrt(tmp_path):
    with pytest.raises(BackendUnavailableError, match="tensorrt"):
        build_engine_from_model(tiny_model(), tmp_path / "m.mme", backend="tensorrt",
                                labels=["a", "b", "c"], audio_cfg=AUDIO, frontend_cfg=FRONTEND,
                                symbolic={"dim": 5})
    assert not (tmp_path / "m.mme").exists()


@pytest.mark.gpu
@pytest.mark.parametrize("dtype,floor", [("fp32", 1e-4), ("fp16", 5e-2)])
def test_tensorrt_plan_matches_torch(tmp_path, dtype, floor):
    pytest.importorskip("tensorrt")
    from mmengine.export import example_inputs

    model = tiny_model(pooling="mean")
    path = build_engine_from_model(model, tmp_path / "m.mme", backend="tensorrt", dtype=dtype,
                                   labels=["a", "b", "c"], audio_cfg=AUDIO,
                                   frontend_cfg=FRONTEND, symbolic={"dim": 5},
                                   options={"opt_batch": 4, "max_batch": 8})
    eng = Engine.load(path, backend="tensorrt")
    for B, T in [(1, 1), (3, 7), (11, 32)]:  # 11 > max_batch: split in two calls
        x = example_inputs(eng.header["io"]["inputs"], B, T, np.random.default_rng(B))
        with torch.no_grad():
            ref = model({k: torch.from_numpy(v) for k, v in x.items()}).numpy()
        err = np.abs(eng.runner(x) - ref).max()
        assert err <= floor, f"B={B} T={T}: TensorRT {dtype} vs torch max |diff| {err:.3g}"
