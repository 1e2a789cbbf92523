"""No torch at inference: ``mmengine classify`` with the native and onnx backends in a process
where ``import torch`` fails (as in a core install without the ``[train]`` extra) gives the
torch backend's probabilities, for a model of the default design (dilated stems, flux, late
text, LSTM, mean+max pooling) on FLAC files decoded and featurised for real."""
from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import torch

from mmengine.config import AudioConfig, FrontendConfig, ModelConfig, TextConfig, to_dict
from mmengine.export import build_engine_from_model
from mmengine.features.text import FORMAT, TOKEN_PATTERN, TextVectorizer
from mmengine.models import build_model
from mmengine.runtime import Engine, registry

from audio_fixtures import write_noise, write_tone

SR = 8000
AUDIO = AudioConfig(sample_rate=SR, clip_seconds=0.5)
FRONTEND = FrontendConfig(sample_rate=SR, n_fft=256, hop_length=64, n_mels=16, n_mfcc=8)
LABELS = ["air", "jig", "reel"]
VOCAB = ["dance", "fiddle", "jig", "reel", "sea"]

#: run the CLI with torch (and every torch.* module) unimportable, then prove it stayed out
BLOCKED_CLI = """
import sys, importlib.abc
class NoTorch(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name == "torch" or name.startswith("torch."):
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
sys.meta_path.insert(0, NoTorch())
from mmengine.cli import main
code = main(sys.argv[1:])
assert not any(m == "torch" or m.startswith("torch.") for m in sys.modules), "torch imported"
sys.exit(code)
"""


@pytest.fixture(scope="module")
def engines(tmp_path_factory):
    torch.manual_seed(0)
    cfg = ModelConfig(hidden_size=16, mfcc_channels=8, mel_channels=16, text_dim=4,
                      dilations=(1, 2, 4), flux_bands=4, modalities=("mfcc", "mel", "text"))
    m = build_model(cfg, dict(n_mfcc=8, n_mels=16, text_dim=len(VOCAB), symbolic_dim=0,
                              n_classes=len(LABELS), multilabel=False))
    with torch.no_grad():
        m.classifier.head.weight.mul_(6.0)
        m.norm.mel_mean.fill_(-40.0)
        m.norm.mel_std.fill_(20.0)
        m.norm.mfcc_std.fill_(30.0)
    m.eval()
    vec = TextVectorizer.from_json({
        "format": FORMAT, "config": to_dict(TextConfig()), "token_pattern": TOKEN_PATTERN,
        "vocabulary": VOCAB, "idf": np.linspace(1.0, 2.0, len(VOCAB)).tolist()})
    d = tmp_path_factory.mktemp("engines")
    out = {}
    for backend in ("native", "onnx", "torch"):
        if backend in registry.available_backends():
            out[backend] = build_engine_from_model(
                m, d / f"{backend}.mme", backend=backend, labels=LABELS, audio_cfg=AUDIO,
                frontend_cfg=FRONTEND, text=vec.to_json(), text_field="lyrics")
    return out


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    d = tmp_path_factory.mktemp("clips")
    files = [write_tone(d / "a4.flac", freq=440.0, sr=SR, seconds=1.3),
             write_noise(d / "noise.flac", sr=SR, seconds=0.7),
             write_tone(d / "low.flac", freq=98.0, sr=SR, seconds=0.4)]
    lyrics = d / "lyrics.txt"
    lyrics.write_text("a reel for the fiddle, a jig by the sea")
    return [str(f) for f in files], str(lyrics)


@pytest.mark.parametrize("backend", ["native", "onnx"])
def test_classify_without_torch_matches_torch(engines, clips, backend):
    if backend not in engines:
        pytest.skip(f"{backend} backend not available here")
    files, lyrics = clips
    proc = subprocess.run(
        [sys.executable, "-c", BLOCKED_CLI, "classify", str(engines[backend]), *files,
         "--lyrics", lyrics, "--backend", backend, "--top-k", str(len(LABELS)), "--json"],
        capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    got = json.loads(proc.stdout)
    ref = Engine.load(engines["torch"], backend="torch").classify(
        files, lyrics=[open(lyrics).read()] * len(files), top_k=len(LABELS))
    assert len(got) == len(ref) == len(files)
    for g, r in zip(got, ref):
        assert g["label"] == r.label
        np.testing.assert_allclose(np.asarray(g["windows"]), np.asarray(r.windows), atol=1e-4)


def test_training_without_torch_says_what_to_install(tmp_path):
    proc = subprocess.run([sys.executable, "-c", BLOCKED_CLI, "train", "--data", "folk", "--out",
                           str(tmp_path / "run")], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1
    assert "mmengine-music[train]" in proc.stderr
