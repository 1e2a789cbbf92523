"""``Engine`` and ``classify``: inputs (path, list, (array, sr), manifest), per-item errors in
order, long audio in windows, top-k, lyrics, backend selection and its logging. One body runs
on every backend available here; results are checked against the model run by hand."""
from __future__ import annotations

import json
import logging

import numpy as np
import pytest
import soundfile as sf
import torch

from mmengine import _ext
from mmengine.config import AudioConfig, FrontendConfig, ModelConfig, TextConfig, to_dict
from mmengine.config import first_design
from mmengine.errors import (AudioNonFiniteError, BackendUnavailableError,
                             UnknownBackendError)
from mmengine.export import build_engine_from_model
from mmengine.features.text import FORMAT, TOKEN_PATTERN, TextVectorizer
from mmengine.models import build_model
from mmengine.runtime import Engine, ErrorEntry, Prediction, classify, registry, results_to_json

SR = 8000
AUDIO = AudioConfig(sample_rate=SR, clip_seconds=0.25)  # windows of 2000 samples
FRONTEND = FrontendConfig(sample_rate=SR, n_fft=256, hop_length=128, n_mels=12, n_mfcc=7)
LABELS = ["air", "jig", "reel", "waltz"]
VOCAB = ["dance", "fiddle", "jig", "reel", "sea", "slow", "song"]
BACKENDS = [b for b in ("native", "onnx", "torch") if b in registry.available_backends()]


def vectorizer() -> TextVectorizer:
    return TextVectorizer.from_json({
        "format": FORMAT, "config": to_dict(TextConfig()), "token_pattern": TOKEN_PATTERN,
        "vocabulary": VOCAB, "idf": np.linspace(1.0, 2.0, len(VOCAB)).tolist()})


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(3)
    cfg = first_design(hidden_size=24, num_layers=2, stem_stages=1, mfcc_channels=6,
                      mel_channels=6, text_dim=5, pooling="mean",
                      modalities=("mfcc", "mel", "text"))
    m = build_model(cfg, dict(n_mfcc=7, n_mels=12, text_dim=len(VOCAB), symbolic_dim=0,
                              n_classes=len(LABELS), multilabel=False))
    with torch.no_grad():  # spread-out logits so that rankings are meaningful
        m.classifier.head.weight.mul_(8.0)
        m.norm.mfcc_mean.fill_(-20.0)
        m.norm.mfcc_std.fill_(30.0)
        m.norm.mel_mean.fill_(-40.0)
        m.norm.mel_std.fill_(20.0)
    return m.eval()


@pytest.fixture(scope="module")
def engines(model, tmp_path_factory):
    d = tmp_path_factory.mktemp("engines")
    out = {}
    for backend in BACKENDS:
        out[backend] = build_engine_from_model(
            model, d / f"{backend}.mme", backend=backend, labels=LABELS, audio_cfg=AUDIO,
            frontend_cfg=FRONTEND, text=vectorizer().to_json(), text_field="lyrics")
    return out


@pytest.fixture(scope="module")
def loaded(engines):
    return {b: Engine.load(p, backend=b) for b, p in engines.items()}


@pytest.fixture(scope="module")
def audio_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("audio")
    rng = np.random.default_rng(0)
    t = np.arange(int(1.15 * SR)) / SR
    files = {
        "short": 0.5 * rng.standard_normal(int(0.1 * SR)),  # peaks > 1: scaled down  # < one window: looped
        "tone": 0.5 * np.sin(2 * np.pi * 660 * t[:int(0.25 * SR)]),  # exactly one window
        "long": 0.3 * np.sin(2 * np.pi * 220 * t * (1 + t)) + 0.05 * rng.standard_normal(len(t)),
    }
    paths = {}
    for name, y in files.items():
        paths[name] = d / f"{name}.wav"
        sf.write(paths[name], y.astype(np.float32), SR, subtype="FLOAT")
    paths["corrupt"] = d / "corrupt.wav"
    paths["corrupt"].write_bytes(b"this is not audio at all\n" * 100)
    paths["missing"] = d / "missing.flac"
    return paths


def expected_probs(model, y: np.ndarray, lyrics=None) -> np.ndarray:
    """(windows, C) probabilities computed by hand: windows → features → model → softmax."""
    from mmengine.data.audio import windows
    from mmengine.features.reference import compute_features

    wins = np.stack(windows(y.astype(np.float32), int(AUDIO.clip_seconds * SR)))
    feats = compute_features(wins, FRONTEND, dtype=np.float32)
    X, mask = vectorizer().transform([lyrics] * len(wins))
    batch = {"mfcc": torch.from_numpy(np.asarray(feats["mfcc"], np.float32)),
             "logmel": torch.from_numpy(np.asarray(feats["logmel"], np.float32)),
             "text": torch.from_numpy(X), "text_mask": torch.from_numpy(mask)}
    with torch.no_grad():
        return torch.softmax(model(batch).double(), dim=1).numpy()


def read(path) -> np.ndarray:
    """The waveform the engine sees (decoded, mono, at SR, peak-safe)."""
    from mmengine.data.audio import load_audio

    return load_audio(path, AUDIO)


@pytest.mark.parametrize("backend", BACKENDS)
def test_classify_path_matches_model(loaded, model, audio_dir, backend):
    eng = loaded[backend]
    assert eng.backend == backend
    for name in ("short", "tone"):
        pred = eng.classify(str(audio_dir[name]), lyrics="a slow sea song")
        assert isinstance(pred, Prediction) and pred.path == str(audio_dir[name])
        want = expected_probs(model, read(audio_dir[name]), "a slow sea song")
        assert len(pred.windows) == 1
        np.testing.assert_allclose(pred.windows[0], want[0], atol=1e-4)
        best = int(np.argmax(want[0]))
        assert pred.label == LABELS[best] and abs(pred.score - want[0, best]) < 1e-4


@pytest.mark.parametrize("backend", BACKENDS)
def test_list_with_bad_items_keeps_order(loaded, audio_dir, backend):
    eng = loaded[backend]
    items = [audio_dir["tone"], audio_dir["corrupt"], audio_dir["short"], audio_dir["missing"],
             (np.full(100, np.nan, np.float32), SR)]
    res = eng.classify(items, batch_size=2)
    assert [type(r).__name__ for r in res] == ["Prediction", "ErrorEntry", "Prediction",
                                               "ErrorEntry", "ErrorEntry"]
    assert res[1].path == str(audio_dir["corrupt"]) and res[1].error_type == "AudioCorruptError"
    assert res[3].error_type == "AudioMissingError" and "not found" in res[3].error
    assert res[4].error_type == "AudioNonFiniteError" and res[4].path == "<array 4>"
    for got, name in ((res[0], "tone"), (res[2], "short")):
        alone = eng.classify(audio_dir[name])
        np.testing.assert_allclose(got.windows, alone.windows, atol=1e-6)
    json.dumps(results_to_json(res))  # plain JSON


def test_single_bad_input_raises_typed_error(loaded):
    eng = next(iter(loaded.values()))
    with pytest.raises(AudioNonFiniteError):
        eng.classify((np.array([0.1, np.inf], np.float32), SR))


def test_array_input_equals_file_and_resamples(loaded, audio_dir):
    eng = next(iter(loaded.values()))
    y = read(audio_dir["tone"])
    from_file = eng.classify(audio_dir["tone"])
    from_array = eng.classify((y, SR))
    assert from_array.path == "<array 0>"
    np.testing.assert_allclose(from_array.windows, from_file.windows, atol=1e-6)
    for stereo in (np.stack([y, y], axis=1), np.stack([y, y])):  # (n, 2) and (2, n)
        got = eng.classify((stereo, SR))
        np.testing.assert_allclose(got.windows, from_file.windows, atol=1e-6)
    import soxr

    y16 = soxr.resample(y, SR, 2 * SR, quality="HQ").astype(np.float32)
    up = eng.classify((y16, 2 * SR))  # resampled back to the engine's rate
    assert len(up.windows) == 1
    assert np.abs(np.asarray(up.windows) - np.asarray(from_file.windows)).max() < 0.05


@pytest.mark.parametrize("backend", BACKENDS)
def test_long_audio_is_windowed_and_averaged(loaded, model, audio_dir, backend):
    eng = loaded[backend]
    y = read(audio_dir["long"])  # 9200 samples: 4 full windows + a 1200-sample tail (kept)
    a = eng.classify(audio_dir["long"], batch_size=3)
    b = eng.classify(audio_dir["long"], batch_size=64)
    assert len(a.windows) == 5
    np.testing.assert_allclose(a.windows, b.windows, atol=1e-6)
    want = expected_probs(model, y)
    np.testing.assert_allclose(a.windows, want, atol=1e-4)
    mean = want.mean(axis=0)
    assert a.label == LABELS[int(np.argmax(mean))]
    assert abs(a.score - mean.max()) < 1e-4
    first = eng.classify((y[:2000], SR))  # window 0 alone
    np.testing.assert_allclose(first.windows[0], a.windows[0], atol=1e-5)


def test_top_k_ordering(loaded, audio_dir):
    eng = next(iter(loaded.values()))
    p2 = eng.classify(audio_dir["long"], top_k=2)
    pall = eng.classify(audio_dir["long"], top_k=10)
    assert len(p2.top_k) == 2 and len(pall.top_k) == len(LABELS)
    scores = [s for _, s in pall.top_k]
    assert scores == sorted(scores, reverse=True)
    assert pall.top_k[:2] == p2.top_k and p2.top_k[0] == (p2.label, p2.score)
    assert sorted(k for k, _ in pall.top_k) == sorted(LABELS)
    assert abs(sum(scores) - 1.0) < 1e-6


def test_lyrics_per_item(loaded, model, audio_dir):
    eng = next(iter(loaded.values()))
    res = eng.classify([audio_dir["tone"], audio_dir["tone"]], lyrics=["jig reel dance", None])
    y = read(audio_dir["tone"])
    np.testing.assert_allclose(res[0].windows, expected_probs(model, y, "jig reel dance"),
                               atol=1e-4)
    np.testing.assert_allclose(res[1].windows, expected_probs(model, y, None), atol=1e-4)
    assert np.abs(np.asarray(res[0].windows) - np.asarray(res[1].windows)).max() > 1e-3
    with pytest.raises(ValueError, match="one entry per input"):
        eng.classify([audio_dir["tone"], audio_dir["short"]], lyrics=["only one"])


def test_manifest_input(loaded, model, audio_dir, tmp_path):
    eng = next(iter(loaded.values()))
    manifest = tmp_path / "m.csv"
    (tmp_path / "words.txt").write_text("fiddle reel", encoding="utf-8")
    manifest.write_text(
        "id,path,lyrics,lyrics_path\n"
        f"a,{audio_dir['tone']},slow song,\n"
        f"b,{audio_dir['missing']},,\n"
        f"c,{audio_dir['short']},,words.txt\n", encoding="utf-8")
    res = eng.classify(manifest)
    assert [r.id for r in res] == ["a", "b", "c"]
    assert isinstance(res[1], ErrorEntry) and res[1].error_type == "AudioMissingError"
    np.testing.assert_allclose(res[2].windows,
                               expected_probs(model, read(audio_dir["short"]), "fiddle reel"),
                               atol=1e-4)


@pytest.mark.skipif(_ext.cuda_available(), reason="a GPU is visible")
def test_gpu_backends_fail_clearly(engines):
    path = next(iter(engines.values()))
    for name in ("triton", "cuda"):
        with pytest.raises(BackendUnavailableError, match="CUDA GPU") as info:
            Engine.load(path, backend=name)
        assert f"backend {name!r} is unavailable" in str(info.value)
        assert "Available here: " + ", ".join(BACKENDS) in str(info.value)
    with pytest.raises(UnknownBackendError, match="valid backends: tensorrt, cuda, triton"):
        Engine.load(path, backend="tpu")


@pytest.mark.skipif(_ext.cuda_available(), reason="a GPU is visible")
def test_gpu_built_file_runs_on_cpu_with_warning(model, tmp_path, caplog):
    path = build_engine_from_model(model, tmp_path / "t.mme", backend="triton", labels=LABELS,
                                   audio_cfg=AUDIO, frontend_cfg=FRONTEND,
                                   text=vectorizer().to_json(), text_field="lyrics")
    with caplog.at_level(logging.INFO, logger="mmengine.runtime"):
        eng = Engine.load(path)
    assert eng.backend == ("native" if "native" in BACKENDS else "torch")
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("built for 'triton'" in w and "CUDA GPU" in w for w in warnings), warnings


def test_auto_logs_its_choice(engines, caplog):
    path = engines[BACKENDS[0]]  # native when built, else onnx: each runs on its own backend
    with caplog.at_level(logging.INFO, logger="mmengine.runtime"):
        eng = Engine.load(path)
    assert eng.backend == BACKENDS[0]
    assert any(f"engine backend: {BACKENDS[0]} (auto" in r.getMessage()
               for r in caplog.records if r.levelno == logging.INFO)


@pytest.mark.skipif("native" not in BACKENDS, reason="mmengine._C is not built")
def test_native_file_falls_back_to_torch_with_warning(engines, loaded, audio_dir, monkeypatch,
                                                      caplog):
    """Without the C++ extension, auto runs a native file on torch from the same weights and
    says so at WARNING (simulated by making the native probe report a missing extension)."""
    monkeypatch.setitem(registry._PROBES, "native",
                        lambda: ("the C++ extension mmengine._C is not built", None))
    with caplog.at_level(logging.INFO, logger="mmengine.runtime"):
        eng = Engine.load(engines["native"])
    assert eng.backend == "torch"
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("'native'" in w and "'torch'" in w and "mmengine._C is not built" in w
               for w in warnings), warnings
    got = eng.classify(audio_dir["long"])
    ref = loaded["native"].classify(audio_dir["long"])
    np.testing.assert_allclose(got.windows, ref.windows, atol=1e-5)


def test_backends_agree(loaded, audio_dir):
    preds = {b: e.classify(audio_dir["long"]) for b, e in loaded.items()}
    ref = np.asarray(preds["torch"].windows)
    for b, p in preds.items():
        assert np.abs(np.asarray(p.windows) - ref).max() < 1e-4, b
        assert p.label == preds["torch"].label


def test_module_level_classify(engines, audio_dir):
    path = engines[BACKENDS[-1]]
    res = classify(path, [audio_dir["tone"]], backend="torch", top_k=1)
    assert len(res) == 1 and len(res[0].top_k) == 1


_TRITON_WORKER = """
import json, os, sys
import numpy as np
from mmengine.export import example_inputs
from mmengine.runtime import engine_file, torch_backend
ef = engine_file.read_engine_file(sys.argv[1])
x = example_inputs(ef.header["io"]["inputs"], 3, 20, np.random.default_rng(0))
ref = torch_backend.load(ef, backend="torch", device="cpu")(x)
got = torch_backend.load(ef, backend="triton")(x)
print(json.dumps({"err": float(np.abs(got - ref).max()), "shape": list(got.shape)}))
"""


@pytest.mark.skipif(not _ext.has("triton"), reason="triton is not installed")
def test_triton_backend_wiring_in_interpreter(engines):
    """The triton backend's runner (torch front end + Triton LSTM kernels + head), in Triton's
    interpreter on the CPU (a subprocess: triton fixes the mode when first imported)."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    env = dict(os.environ, TRITON_INTERPRET="1",
               PYTHONPATH=os.pathsep.join([str(root), os.environ.get("PYTHONPATH", "")]))
    proc = subprocess.run([sys.executable, "-c", _TRITON_WORKER, str(engines[BACKENDS[-1]])],
                          env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["shape"] == [3, len(LABELS)]
    assert out["err"] < 1e-4, out


def test_symbolic_modality(tmp_path, audio_dir):
    """A model with a symbolic modality: without MIDI the modality is marked missing (mask
    False), exactly as the model sees an absent modality; with MIDI, window 0 gets the first
    frames of ``symbolic_features``."""
    pretty_midi = pytest.importorskip("pretty_midi")
    from mmengine.data.audio import windows
    from mmengine.features.reference import compute_features
    from mmengine.features.symbolic import SYMBOLIC_DIM, symbolic_features

    torch.manual_seed(5)
    cfg = first_design(hidden_size=8, num_layers=1, stem_stages=1, mfcc_channels=4,
                      symbolic_channels=3, pooling="last", modalities=("mfcc", "symbolic"))
    model = build_model(cfg, dict(n_mfcc=7, n_mels=12, text_dim=0, symbolic_dim=SYMBOLIC_DIM,
                                  n_classes=len(LABELS), multilabel=False)).eval()
    path = build_engine_from_model(model, tmp_path / "s.mme", backend="torch", labels=LABELS,
                                   audio_cfg=AUDIO, frontend_cfg=FRONTEND,
                                   symbolic={"dim": SYMBOLIC_DIM})
    eng = Engine.load(path, backend="torch")
    assert [s["name"] for s in eng.header["io"]["inputs"]] == ["mfcc", "symbolic",
                                                                "symbolic_mask"]
    pm = pretty_midi.PrettyMIDI()
    inst = pretty_midi.Instrument(program=0)
    inst.notes += [pretty_midi.Note(90, 60 + k, 0.1 * k, 0.1 * k + 0.15) for k in range(10)]
    pm.instruments.append(inst)
    midi = tmp_path / "n.mid"
    pm.write(str(midi))

    y = read(audio_dir["long"])
    feats = compute_features(np.stack(windows(y, 2000)), FRONTEND, dtype=np.float32)
    n, T = feats["mfcc"].shape[0], feats["mfcc"].shape[-1]

    def probs(sym, mask):
        batch = {"mfcc": torch.from_numpy(feats["mfcc"]), "symbolic": torch.from_numpy(sym),
                 "symbolic_mask": torch.from_numpy(mask)}
        with torch.no_grad():
            return torch.softmax(model(batch).double(), dim=1).numpy()

    without = eng.classify(audio_dir["long"])
    np.testing.assert_allclose(without.windows, probs(np.full((n, SYMBOLIC_DIM, T), 3.0,
                                                              np.float32),
                                                      np.zeros(n, bool)), atol=1e-5)
    with_midi = eng.classify(audio_dir["long"], midi=midi)
    sym0 = symbolic_features(midi, T, sr=SR, hop=FRONTEND.hop_length)
    want0 = probs(np.repeat(sym0[None], n, axis=0), np.ones(n, bool))[0]
    np.testing.assert_allclose(with_midi.windows[0], want0, atol=1e-5)
    assert np.abs(np.asarray(with_midi.windows) - np.asarray(without.windows)).max() > 1e-4


@pytest.mark.parametrize("backend", [b for b in BACKENDS if b != "onnx"])
def test_bf16_engine_close_to_fp32(model, loaded, audio_dir, tmp_path, backend):
    """--dtype bf16 (recurrent stack and head in bfloat16, fp32 accumulation): probabilities
    within the bf16 floor of the fp32 engine."""
    path = build_engine_from_model(model, tmp_path / "b.mme", backend=backend, dtype="bf16",
                                   labels=LABELS, audio_cfg=AUDIO, frontend_cfg=FRONTEND,
                                   text=vectorizer().to_json(), text_field="lyrics")
    eng = Engine.load(path, backend=backend)
    assert eng.header["dtype"] == "bf16"
    if getattr(eng.runner, "recheck", None) is not None:
        eng.runner.recheck_margin = 0.0  # bf16 itself here (the fp32 recheck: test_native_model)
    got = np.asarray(eng.classify(audio_dir["long"], lyrics="jig").windows)
    ref = np.asarray(loaded["torch"].classify(audio_dir["long"], lyrics="jig").windows)
    err = np.abs(got - ref).max()
    # measured 1.9e-4 and 5.7e-4 (the two backends, AVX512-BF16 CPU); bound ~2.5x the larger
    assert 0 < err < 1.5e-3, f"bf16 vs fp32 max |diff| {err:.3g}"


def test_frontend_option_native_matches_reference(engines, audio_dir):
    """The engine's feature front end is selectable; the native C++ one (the default where it
    is built) gives the reference front end's probabilities."""
    from mmengine.features.native_frontend import available

    if not available():
        pytest.skip("mmengine._C built without the native front end")
    files = [str(audio_dir[k]) for k in ("short", "tone", "long")]
    nat = Engine.load(engines["native"], backend="native", frontend="native")
    ref = Engine.load(engines["native"], backend="native", frontend="reference")
    auto = Engine.load(engines["native"], backend="native")
    assert nat.frontend.name == auto.frontend.name == "native" and ref.frontend.name == "reference"
    assert "frontend='native'" in repr(nat)
    a, b = nat.classify(files), ref.classify(files)
    for x, y in zip(a, b):
        assert x.label == y.label
        np.testing.assert_allclose(np.asarray(x.windows), np.asarray(y.windows), atol=1e-4)
    with pytest.raises(UnknownBackendError, match="front end"):
        Engine.load(engines["native"], backend="native", frontend="librosa")


def test_dali_features_reach_a_torch_runner_as_tensors(engines, audio_dir):
    """DALI's output goes to backends that take torch tensors without a numpy round trip
    (on the CPU here: zero-copy DLPack views); same probabilities as the reference path."""
    pytest.importorskip("nvidia.dali")
    files = [str(audio_dir[k]) for k in ("short", "tone", "long")]
    dali = Engine.load(engines["torch"], backend="torch", frontend="dali")
    ref = Engine.load(engines["torch"], backend="torch", frontend="reference")
    assert dali._tensor_features and not ref._tensor_features
    for x, y in zip(dali.classify(files), ref.classify(files)):
        assert x.label == y.label
        np.testing.assert_allclose(np.asarray(x.windows), np.asarray(y.windows), atol=2e-3)
    with pytest.raises(ValueError, match="frontend_device"):
        Engine.load(engines["torch"], backend="torch", frontend="native", frontend_device="gpu")


@pytest.mark.gpu
def test_dali_gpu_features_feed_the_gpu_classifier(engines, audio_dir):
    """GPU: DALI GPU features → DLPack → the torch classifier on cuda; same results as the
    CPU reference path."""
    pytest.importorskip("nvidia.dali")
    files = [str(audio_dir[k]) for k in ("short", "tone", "long")]
    gpu = Engine.load(engines["torch"], backend="torch", device="cuda", frontend="dali",
                      frontend_device="gpu")
    ref = Engine.load(engines["torch"], backend="torch", frontend="reference")
    assert gpu._tensor_features
    for x, y in zip(gpu.classify(files), ref.classify(files)):
        assert x.label == y.label
        np.testing.assert_allclose(np.asarray(x.windows), np.asarray(y.windows), atol=2e-3)
