"""ONNX export of the classifier (front end + LSTM + pooling + head): a valid model with dynamic
batch and frames, one ONNX LSTM op per layer, and ONNX Runtime output equal to torch eager
within the STYLE.md tolerance rule, on awkward shapes."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from mmengine.config import AudioConfig, FrontendConfig, ModelConfig
from mmengine.config import first_design
from mmengine.models import build_model
from mmengine.features.symbolic import SYMBOLIC_DIM
from mmengine.models.reference import tolerance

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

from mmengine.export import (  # noqa: E402
    build_engine_from_model, example_inputs, export_onnx, input_spec)
from mmengine.features.text import TextVectorizer  # noqa: E402
from mmengine.runtime import Engine  # noqa: E402
from mmengine.runtime.onnx_backend import check_self_contained  # noqa: E402
from mmengine.errors import EngineFileError  # noqa: E402

FRONTEND = FrontendConfig(sample_rate=8000, n_fft=256, hop_length=128, n_mels=12, n_mfcc=7)
AUDIO = AudioConfig(sample_rate=8000, clip_seconds=0.5)


def tfidf(vocabulary):
    """A TF-IDF vectoriser from its JSON form (no scikit-learn needed)."""
    from mmengine.config import TextConfig, to_dict
    from mmengine.features.text import FORMAT, TOKEN_PATTERN

    idf = np.linspace(1.0, 2.0, len(vocabulary)).tolist()
    return TextVectorizer.from_json({"format": FORMAT, "config": to_dict(TextConfig()),
                                     "token_pattern": TOKEN_PATTERN,
                                     "vocabulary": list(vocabulary), "idf": idf})


def tiny_model(pooling: str, modalities, layers: int = 2, stages=2, seed: int = 0,
               text_dim: int = 9):
    """``stages``: strided stem stages (the first design), "dilated" (the default design:
    dilated stems, spectral flux, late text, pitch-class head, meter profile), or
    "dilated+audio" (also the chroma and the audio pitch and meter heads)."""
    torch.manual_seed(seed)
    n_chroma = 0
    if stages == "dilated+audio":
        stages, n_chroma = "dilated", 12
    if stages == "dilated":
        cfg = ModelConfig(hidden_size=19, num_layers=layers, dilations=(1, 2, 4), flux_bands=3,
                          pitch_templates=3, mfcc_channels=5, mel_channels=6,
                          symbolic_channels=3, text_dim=4, pooling=pooling,
                          modalities=tuple(modalities), audio_pitch_templates=3,
                          audio_meter_templates=2)
        # all modalities: today's 66 symbolic rows (meter profile late); otherwise the 15 rows
        # of an engine built before rows 15-65 existed
        sym = SYMBOLIC_DIM if len(modalities) == 4 else 15
    else:
        cfg = first_design(hidden_size=19, num_layers=layers, stem_stages=stages,
                          mfcc_channels=5, mel_channels=6, symbolic_channels=3, text_dim=4,
                          pooling=pooling, modalities=tuple(modalities), text_fusion="early",
                          pitch_templates=0, flux_bands=0)
        sym = 4
    model = build_model(cfg, dict(n_mfcc=7, n_mels=12, text_dim=text_dim, symbolic_dim=sym,
                                  n_classes=5, multilabel=False, n_chroma=n_chroma))
    # non-trivial normalisation statistics and BatchNorm running stats
    g = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for name, buf in model.named_buffers():
            if buf.is_floating_point():
                buf.copy_(torch.rand(buf.shape, generator=g) + 0.5)
    return model.eval()


CASES = {
    "all-modalities-last": ("last", ("mfcc", "mel", "text", "symbolic"), 2, 2),
    "audio-mean-1layer": ("mean", ("mfcc", "mel"), 1, 0),
    "text-only-last": ("last", ("text",), 2, 1),
    "dilated-all-meanmax": ("meanmax", ("mfcc", "mel", "text", "symbolic"), 2, "dilated"),
    "dilated-mel-symbolic-mean": ("mean", ("mel", "symbolic"), 1, "dilated"),
    "dilated-audio-heads": ("meanmax", ("mfcc", "mel", "text", "symbolic"), 2, "dilated+audio"),
}


@pytest.fixture(scope="module", params=list(CASES))
def exported(request):
    pooling, mods, layers, stages = CASES[request.param]
    model = tiny_model(pooling, mods, layers, stages)
    spec = input_spec(model, FRONTEND)
    data = export_onnx(model, spec)
    return model, spec, data, ort.InferenceSession(data, providers=["CPUExecutionProvider"])


def test_model_is_valid_with_dynamic_dims(exported):
    model, spec, data, _ = exported
    proto = onnx.load_model_from_string(data)
    onnx.checker.check_model(proto, full_check=True)
    inputs = {i.name: [d.dim_param or d.dim_value for d in i.type.tensor_type.shape.dim]
              for i in proto.graph.input}
    assert list(inputs) == [s["name"] for s in spec]
    for s in spec:
        assert inputs[s["name"]] == s["shape"], s["name"]
        assert inputs[s["name"]][0] == "batch"
    out = proto.graph.output[0]
    assert out.name == "logits"
    assert [d.dim_param or d.dim_value for d in out.type.tensor_type.shape.dim] == ["batch", 5]
    ops = [n.op_type for n in proto.graph.node]
    assert ops.count("LSTM") == model.cfg.num_layers


@pytest.mark.parametrize("B", [1, 3])
@pytest.mark.parametrize("T", [1, 7, 50])
def test_onnxruntime_matches_torch(exported, B, T):
    model, spec, _, sess = exported
    x = example_inputs(spec, B, T, np.random.default_rng(B * 100 + T))
    got = torch.from_numpy(sess.run(None, x)[0])
    with torch.no_grad():
        out32 = model({k: torch.from_numpy(v) for k, v in x.items()})
    ref64 = _reference64(model, x)
    tol = tolerance(ref64, out32, torch.float32)
    err = (got.double() - ref64).abs().max().item()
    assert got.shape == (B, 5)
    assert err <= tol, f"ORT vs float64 reference: max |diff| {err:.3g} > tol {tol:.3g}"


def _reference64(model, x) -> torch.Tensor:
    """float64 reference: the model's float32 front end, then a float64 copy of the recurrent
    stack + pooling + head (the part whose rounding dominates)."""
    import copy

    clf64 = copy.deepcopy(model.classifier).double().eval()
    with torch.no_grad():
        seq, late = model.encode({k: torch.from_numpy(v) for k, v in x.items()})
        return clf64(seq.double(), None if late is None else late.double())


def test_engine_onnx_backend_matches_torch(tmp_path):
    vec = tfidf(["air", "fiddle", "jig", "polka", "reel", "slow", "waltz"])
    model = tiny_model("last", ("mfcc", "mel", "text"), 2, 1, text_dim=vec.n_features)
    path = build_engine_from_model(model, tmp_path / "m.mme", backend="onnx",
                                   labels=list("abcde"), audio_cfg=AUDIO, frontend_cfg=FRONTEND,
                                   text=vec.to_json(), text_field="lyrics")
    eng = Engine.load(path, backend="onnx")
    assert eng.backend == "onnx"
    assert eng.header["backend_options"]["opset"] == 17
    x = example_inputs(eng.header["io"]["inputs"], 4, 33, np.random.default_rng(5))
    with torch.no_grad():
        ref = model({k: torch.from_numpy(v) for k, v in x.items()}).numpy()
    got = eng.runner(x)
    assert np.abs(got - ref).max() < 1e-4, np.abs(got - ref).max()


def test_onnx_build_refuses_bf16(tmp_path):
    model = tiny_model("last", ("mfcc", "mel"), 1, 0)
    with pytest.raises(ValueError, match="fp32"):
        build_engine_from_model(model, tmp_path / "m.mme", backend="onnx", dtype="bf16",
                                labels=list("abcde"), audio_cfg=AUDIO, frontend_cfg=FRONTEND)
    assert not (tmp_path / "m.mme").exists()


def test_external_data_payload_is_refused():
    from onnx import TensorProto, helper

    t = TensorProto(name="w", data_type=TensorProto.FLOAT, dims=[2])
    t.data_location = TensorProto.EXTERNAL
    t.external_data.add(key="location", value="/etc/passwd")
    node = helper.make_node("Add", ["x", "w"], ["y"])
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", 1, [2])],
                              [helper.make_tensor_value_info("y", 1, [2])], initializer=[t])
    data = helper.make_model(graph).SerializeToString()
    with pytest.raises(EngineFileError, match="external data"):
        check_self_contained(data, "x.mme")
    with pytest.raises(EngineFileError, match="not an ONNX model"):
        check_self_contained(b"\xff\x00garbage" * 3, "x.mme")
