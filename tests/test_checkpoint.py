"""Checkpoint round trip (identical outputs) and refusal of malformed files."""
from __future__ import annotations

import dataclasses
import json
import struct

import numpy as np
import pytest
import torch

from mmengine.checkpoint import (META_NAME, WEIGHTS_NAME, load_checkpoint, save_checkpoint)
from mmengine.config import AudioConfig, FrontendConfig, ModelConfig, TextConfig, TrainConfig
from mmengine.config import first_design
from mmengine.errors import CheckpointError
from mmengine.features.text import TextVectorizer
from mmengine.models import build_model

CFG = first_design(hidden_size=10, num_layers=2, stem_stages=1, mfcc_channels=4, mel_channels=6,
                  symbolic_channels=3, text_dim=4, cnn_channels=(4, 8), cnn_stride=(1, 2))
DIMS = dict(n_mfcc=5, n_mels=8, text_dim=6, symbolic_dim=2, n_classes=3, multilabel=False)
NAMES = ["reel", "jig", "hornpipe"]


def batch(seed=0, B=4, T=19):
    g = torch.Generator().manual_seed(seed)
    return {"mfcc": torch.randn(B, 5, T, generator=g), "logmel": torch.randn(B, 8, T, generator=g),
            "text": torch.rand(B, 6, generator=g), "text_mask": torch.tensor([1, 0, 1, 1]).bool(),
            "symbolic": torch.randn(B, 2, T, generator=g),
            "symbolic_mask": torch.ones(B, dtype=torch.bool)}


def trained_like(cfg, dims=DIMS):
    """A model with non-default weights and normalisation statistics."""
    torch.manual_seed(3)
    model = build_model(cfg, dims)
    rng = np.random.default_rng(0)
    stats = {}
    for name, n in model.norm.sizes.items():
        stats[f"{name}_mean"] = rng.normal(size=n).astype(np.float32)
        stats[f"{name}_std"] = rng.uniform(0.5, 2, n).astype(np.float32)
    model.set_normalization(stats)
    model.train()
    for _ in range(2):  # move BatchNorm running statistics away from their init
        model(batch(seed=7))
    return model.eval()


def _save(tmp_path, model):
    vec = TextVectorizer(TextConfig(max_features=50)).fit(["a reel tune", "a jig tune here"])
    save_checkpoint(tmp_path, model, label_names=NAMES, train_config=TrainConfig(),
                    audio_config=AudioConfig(), frontend_config=FrontendConfig(),
                    text_vectorizer=vec, metrics={"val": {"macro_f1": 0.5}})
    return vec


@pytest.mark.parametrize("cfg", [CFG, dataclasses.replace(CFG, cell="gru", pooling="last"),
                                 dataclasses.replace(CFG, modalities=("mel", "text")),
                                 dataclasses.replace(CFG, arch="cnn")],
                         ids=["lstm", "gru-last", "mel+text", "cnn"])
def test_round_trip_identical_outputs(tmp_path, cfg):
    model = trained_like(cfg)
    vec = _save(tmp_path, model)
    loaded, meta = load_checkpoint(tmp_path)
    assert not loaded.training
    b = batch()
    assert torch.equal(loaded(b), model(b))
    for k, v in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[k], v), k
    assert meta["label_names"] == NAMES
    assert meta["modalities"] == list(model.modalities)
    assert TextVectorizer.from_json(meta["text_vectorizer"]).vocabulary == vec.vocabulary
    assert meta["frontend_config"]["n_mels"] == FrontendConfig().n_mels
    assert meta["versions"]["torch"] == torch.__version__
    for key, values in meta["normalization"].items():
        np.testing.assert_array_equal(np.float32(values), model.norm.stats()[key])
    # the other entry points: the .json or the .safetensors path
    for p in (tmp_path / META_NAME, tmp_path / WEIGHTS_NAME):
        assert torch.equal(load_checkpoint(p)[0](b), model(b))


def test_tensor_file_is_safetensors_not_pickle(tmp_path):
    _save(tmp_path, trained_like(CFG))
    raw = (tmp_path / WEIGHTS_NAME).read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8:8 + n])
    assert "classifier.rnn.weight_ih_l0" in header
    assert not raw.startswith(b"\x80") and b"PK\x03\x04" not in raw[:4]


def _corrupt_json(tmp_path, edit):
    p = tmp_path / META_NAME
    meta = json.loads(p.read_text())
    edit(meta)
    p.write_text(json.dumps(meta))


@pytest.mark.parametrize("damage,match", [
    (lambda d: (d / META_NAME).write_text("{not json"), "not valid JSON"),
    (lambda d: _corrupt_json(d, lambda m: m.update(format="something/9")), "not an mmengine"),
    (lambda d: _corrupt_json(d, lambda m: m.pop("dims")), "missing field"),
    (lambda d: (d / WEIGHTS_NAME).write_bytes((d / WEIGHTS_NAME).read_bytes()[:-10]), "SHA-256"),
    (lambda d: (d / WEIGHTS_NAME).unlink(), "weights not found"),
    (lambda d: (d / META_NAME).unlink(), "metadata not found"),
    (lambda d: _corrupt_json(d, lambda m: m["model_config"].update(hidden_size=11)),
     "do not match the architecture"),
    (lambda d: _corrupt_json(d, lambda m: m["model_config"].update(cell="lstmx")),
     "fails its schema.*cell"),
    # hostile values: refused by the schema or by the tensor shapes, before any model is built
    (lambda d: _corrupt_json(d, lambda m: m["model_config"].update(hidden_size=10**9)),
     "fails its schema.*hidden_size"),
    (lambda d: _corrupt_json(d, lambda m: m["model_config"].update(hidden_size=4096,
                                                                    num_layers=16)),
     "do not match the architecture"),
    (lambda d: _corrupt_json(d, lambda m: m.update(weights_file="../../etc/passwd")),
     "fails its schema.*weights_file"),
    (lambda d: _corrupt_json(d, lambda m: m.update(extra=json.loads("[" * 40 + "]" * 40))),
     "max_json_depth"),
    (lambda d: (d / META_NAME).write_text("[" * 100_000 + "]" * 100_000), "max_json_depth"),
])
def test_malformed_checkpoints_are_refused(tmp_path, damage, match):
    _save(tmp_path, trained_like(CFG))
    damage(tmp_path)
    with pytest.raises(CheckpointError, match=match):
        load_checkpoint(tmp_path)


def test_garbage_tensor_file_with_matching_checksum(tmp_path):
    _save(tmp_path, trained_like(CFG))
    (tmp_path / WEIGHTS_NAME).write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{bad header!!!!}")
    from mmengine.checkpoint import file_sha256

    _corrupt_json(tmp_path, lambda m: m.update(weights_sha256=file_sha256(
        tmp_path / WEIGHTS_NAME)))
    with pytest.raises(CheckpointError, match="not a readable safetensors"):
        load_checkpoint(tmp_path)


def test_label_count_must_match(tmp_path):
    with pytest.raises(CheckpointError, match="label names"):
        save_checkpoint(tmp_path, trained_like(CFG), label_names=["a", "b"])
