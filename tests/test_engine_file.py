"""Engine file (.mme): round trip, atomic write, and every refusal (foreign, newer, truncated,
tampered, malformed) with a clear ``EngineFileError``."""
from __future__ import annotations

import json
import struct

import numpy as np
import pytest
import torch

from mmengine.config import AudioConfig, FrontendConfig, ModelConfig
from mmengine.config import first_design
from mmengine.errors import EngineFileError
from mmengine.runtime import engine_file as ef
from mmengine.runtime import Engine


def _write(tmp_path, payload=b"\x00\x01payload bytes\xff" * 10, **extra):
    header = ef.make_header("torch", "safetensors", "fp32", payload,
                            {"labels": ["a", "b"], **extra})
    return ef.write_engine_file(tmp_path / "m.mme", header, payload), header, payload


def test_round_trip_and_layout(tmp_path):
    path, header, payload = _write(tmp_path, note="ünïcode ok")
    raw = path.read_bytes()
    magic, version, n = struct.unpack("<8sIQ", raw[:20])
    assert (magic, version) == (b"MMENGINE", ef.FORMAT_VERSION)
    assert json.loads(raw[20:20 + n]) == header
    assert raw[20 + n:] == payload
    got = ef.read_engine_file(path)
    assert got.header == header and got.payload == payload
    assert ef.read_header(path) == header
    for key in ("payload_sha256", "payload_size", "backend", "dtype", "created",
                "mmengine_version", "format_version"):
        assert key in header
    assert header["payload_size"] == len(payload)
    assert [p.name for p in tmp_path.iterdir()] == ["m.mme"]  # no temporary file left


def test_atomic_overwrite_keeps_old_file_on_failure(tmp_path):
    path, header, payload = _write(tmp_path)
    bad = dict(header, payload_sha256="0" * 64)
    with pytest.raises(ValueError, match="do not describe"):
        ef.write_engine_file(path, bad, payload)
    assert ef.read_engine_file(path).payload == payload
    assert [p.name for p in tmp_path.iterdir()] == ["m.mme"]


def test_extra_keys_cannot_override_fixed_ones():
    with pytest.raises(ValueError, match="override"):
        ef.make_header("torch", "safetensors", "fp32", b"x", {"payload_sha256": "0"})


def _refused(path, match):
    with pytest.raises(EngineFileError, match=match) as info:
        ef.read_engine_file(path)
    assert str(path) in str(info.value)
    return info.value


def test_flipped_payload_byte_is_refused(tmp_path):
    path, _, _ = _write(tmp_path)
    raw = bytearray(path.read_bytes())
    raw[-5] ^= 0x01
    path.write_bytes(bytes(raw))
    _refused(path, "checksum mismatch")


@pytest.mark.parametrize("keep", ["all but 1 byte", "half the payload", "inside the header",
                                  "inside the fixed part", "magic only"])
def test_truncated_file_is_refused(tmp_path, keep):
    path, _, payload = _write(tmp_path)
    raw = path.read_bytes()
    n = {"all but 1 byte": len(raw) - 1, "half the payload": len(raw) - len(payload) // 2,
         "inside the header": 30, "inside the fixed part": 12, "magic only": 8}[keep]
    path.write_bytes(raw[:n])
    _refused(path, "truncated")


def test_trailing_bytes_are_refused(tmp_path):
    path, _, _ = _write(tmp_path)
    path.write_bytes(path.read_bytes() + b"extra")
    _refused(path, "trailing")


@pytest.mark.parametrize("content", [b"PK\x03\x04" + b"\x00" * 40, b"\x89PNG\r\n\x1a\n" * 4,
                                     b"", b"MMENGIN"[:3] + b"X" * 30])
def test_foreign_file_is_refused(tmp_path, content):
    path = tmp_path / "x.mme"
    path.write_bytes(content)
    _refused(path, "foreign")


def test_future_version_is_refused(tmp_path):
    path, _, _ = _write(tmp_path)
    raw = bytearray(path.read_bytes())
    raw[8:12] = struct.pack("<I", ef.FORMAT_VERSION + 1)
    path.write_bytes(bytes(raw))
    _refused(path, "newer than this mmengine understands")


def test_malformed_headers_are_refused(tmp_path):
    payload = b"p"
    cases = {
        "not valid UTF-8 JSON": b"{not json",
        "not an object": b"[1, 2]",
        "lacks required key": json.dumps({"format": ef.FORMAT}).encode(),
    }
    for match, blob in cases.items():
        path = tmp_path / "h.mme"
        path.write_bytes(struct.pack("<8sIQ", b"MMENGINE", 1, len(blob)) + blob + payload)
        _refused(path, match)
    header = ef.make_header("torch", "safetensors", "fp32", payload, {})
    header["format_version"] = 7
    blob = json.dumps(header).encode()
    path.write_bytes(struct.pack("<8sIQ", b"MMENGINE", 1, len(blob)) + blob + payload)
    _refused(path, "fixed part says 1")


def test_missing_file(tmp_path):
    _refused(tmp_path / "nope.mme", "not found")


# ------------------------------------------------------------------ with a real engine
@pytest.fixture(scope="module")
def native_or_torch_engine(tmp_path_factory):
    from mmengine.export import build_engine_from_model
    from mmengine.models import build_model

    torch.manual_seed(0)
    cfg = first_design(hidden_size=16, num_layers=1, stem_stages=1, mfcc_channels=4,
                      mel_channels=4, modalities=("mfcc", "mel"))
    model = build_model(cfg, dict(n_mfcc=6, n_mels=8, text_dim=0, symbolic_dim=0,
                                  n_classes=3, multilabel=False))
    path = tmp_path_factory.mktemp("eng") / "m.mme"
    return build_engine_from_model(
        model, path, backend="torch", labels=["x", "y", "z"],
        audio_cfg=AudioConfig(sample_rate=8000, clip_seconds=0.25),
        frontend_cfg=FrontendConfig(sample_rate=8000, n_fft=256, hop_length=128, n_mels=8,
                                    n_mfcc=6))


def test_engine_load_refuses_tampered_real_file(tmp_path, native_or_torch_engine):
    raw = bytearray(native_or_torch_engine.read_bytes())
    raw[-100] ^= 0x40
    bad = tmp_path / "tampered.mme"
    bad.write_bytes(bytes(raw))
    with pytest.raises(EngineFileError, match="checksum"):
        Engine.load(bad, backend="torch")
    Engine.load(native_or_torch_engine, backend="torch")  # the original still loads


def test_payload_is_parsed_only_as_safetensors(tmp_path, native_or_torch_engine):
    """A payload rewritten with a matching checksum but not safetensors is refused at parse
    time (it is data, never code)."""
    header = ef.read_header(native_or_torch_engine)
    payload = b"\x80\x04\x95" + b"\x00" * 64  # starts like a pickle stream
    fixed = {k: v for k, v in header.items() if k not in (
        "format", "format_version", "backend", "payload_format", "payload_size",
        "payload_sha256", "dtype", "created", "mmengine_version")}
    forged = ef.make_header("torch", "safetensors", "fp32", payload, fixed)
    path = ef.write_engine_file(tmp_path / "forged.mme", forged, payload)
    with pytest.raises(EngineFileError, match="not valid safetensors"):
        Engine.load(path, backend="torch")


def test_engine_header_describes_model(native_or_torch_engine):
    h = ef.read_header(native_or_torch_engine)
    assert h["backend"] == "torch" and h["payload_format"] == "safetensors"
    assert h["labels"] == ["x", "y", "z"]
    assert h["model"]["arch"] == "fusion" and h["model"]["cell"] == "lstm"
    assert [s["name"] for s in h["io"]["inputs"]] == ["mfcc", "logmel"]
    assert h["io"]["inputs"][0]["shape"] == ["batch", 6, "frames"]
    assert h["audio"]["clip_seconds"] == 0.25 and h["frontend"]["n_mels"] == 8
    assert np.isclose(h["frontend"]["sample_rate"], 8000)


@pytest.mark.parametrize("backend", ["torch", "onnx", "native"])
def test_build_from_checkpoint(tmp_path, backend):
    """``mmengine build RUN -o X.mme --backend B``: a saved checkpoint becomes an engine whose
    header carries its labels and settings and whose runner computes the model's logits."""
    from mmengine.checkpoint import save_checkpoint
    from mmengine.export import build_engine, example_inputs
    from mmengine.models import build_model
    from mmengine.runtime import registry

    if backend not in registry.available_backends():
        pytest.skip(f"{backend} is not available here")
    torch.manual_seed(1)
    cfg = first_design(hidden_size=12, num_layers=2, stem_stages=1, mfcc_channels=4,
                      mel_channels=4, modalities=("mfcc", "mel"))
    model = build_model(cfg, dict(n_mfcc=6, n_mels=8, text_dim=0, symbolic_dim=0,
                                  n_classes=3, multilabel=False)).eval()
    audio = AudioConfig(sample_rate=8000, clip_seconds=0.25)
    front = FrontendConfig(sample_rate=8000, n_fft=256, hop_length=128, n_mels=8, n_mfcc=6)
    save_checkpoint(tmp_path / "run", model, label_names=["p", "q", "r"], audio_config=audio,
                    frontend_config=front)
    out = build_engine(tmp_path / "run", tmp_path / "m.mme", backend=backend)
    eng = Engine.load(out, backend=backend)
    h = eng.header
    assert h["labels"] == ["p", "q", "r"] and h["backend"] == backend
    assert h["audio"]["clip_seconds"] == 0.25 and h["frontend"]["hop_length"] == 128
    assert h["source"]["checkpoint"].endswith("run")
    x = example_inputs(h["io"]["inputs"], 2, 16, np.random.default_rng(0))
    with torch.no_grad():
        ref = model({k: torch.from_numpy(v) for k, v in x.items()}).numpy()
    assert np.abs(eng.runner(x) - ref).max() < 1e-4


def test_native_file_with_stale_packing_is_repacked(tmp_path, caplog):
    """A native file whose packed LSTM no longer fits the kernels (an older packing format) is
    re-packed from the stored weights, with a WARNING, and gives the same logits."""
    import logging

    from safetensors.torch import load, save

    from mmengine.export import build_engine_from_model, example_inputs
    from mmengine.models import build_model
    from mmengine.runtime import registry

    if "native" not in registry.available_backends():
        pytest.skip("mmengine._C is not built")
    torch.manual_seed(2)
    cfg = first_design(hidden_size=20, num_layers=2, stem_stages=0, mfcc_channels=4,
                      mel_channels=4, modalities=("mfcc", "mel"), pooling="mean")
    model = build_model(cfg, dict(n_mfcc=6, n_mels=8, text_dim=0, symbolic_dim=0,
                                  n_classes=3, multilabel=False)).eval()
    front = FrontendConfig(sample_rate=8000, n_fft=256, hop_length=128, n_mels=8, n_mfcc=6)
    good = build_engine_from_model(model, tmp_path / "n.mme", backend="native", labels=list("abc"),
                                   audio_cfg=AudioConfig(sample_rate=8000), frontend_cfg=front)
    f = ef.read_engine_file(good)
    tensors = load(f.payload)
    tensors["native.meta"] = tensors["native.meta"].clone()
    tensors["native.meta"][0] = 99  # a packing format this build does not know
    payload = save(tensors)
    fixed = {k: v for k, v in f.header.items() if k not in ef.REQUIRED_KEYS + (
        "created", "mmengine_version")}
    stale = ef.write_engine_file(tmp_path / "stale.mme", ef.make_header(
        "native", "safetensors", "fp32", payload, fixed), payload)
    with caplog.at_level(logging.WARNING, logger="mmengine.runtime"):
        eng = Engine.load(stale, backend="native")
    assert any("re-packing" in r.getMessage() for r in caplog.records)
    x = example_inputs(f.header["io"]["inputs"], 2, 9, np.random.default_rng(1))
    with torch.no_grad():
        ref = model({k: torch.from_numpy(v) for k, v in x.items()}).numpy()
    assert np.abs(eng.runner(x) - ref).max() < 1e-4
