"""The whole model in C++ (``mmengine._C.FusionGraph`` via ``runtime.native_model``) against the
torch model it was built from: random weights and BatchNorm statistics, awkward shapes (1
frame, odd frame counts, widths that are not multiples of the SIMD width, batch 1 and 3),
every modality subset and pooling, with and without the recurrence, with and without the
audio pitch head (chroma), missing modalities, NaN notes, on every ISA this CPU runs; the torch-free safetensors reader; refusals."""
from __future__ import annotations

import json
import struct

import numpy as np
import pytest
import torch

from mmengine import _ext
from mmengine.config import FrontendConfig, ModelConfig, first_design
from mmengine.errors import EngineFileError
from mmengine.export import model_spec
from mmengine.models import build_model
from mmengine.models.streams import band_edges as torch_band_edges
from mmengine.runtime import native_model as nm

_C = _ext.native_extension()
pytestmark = pytest.mark.skipif(_C is None, reason="mmengine._C not built")


def make_model(seed=0, symbolic_dim=23, n_chroma=12, **over):
    torch.manual_seed(seed)
    kw = dict(hidden_size=20, num_layers=2, mfcc_channels=20, mel_channels=16,
              symbolic_channels=12, text_dim=6, dilations=(1, 3), pitch_templates=5,
              flux_bands=3, audio_pitch_templates=3, audio_meter_templates=2)
    kw.update(over)
    cfg = ModelConfig(**kw)
    dims = dict(n_mfcc=7, n_mels=13, text_dim=11, symbolic_dim=symbolic_dim, n_classes=4,
                multilabel=False, n_chroma=n_chroma)
    m = build_model(cfg, dims)
    g = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for mod in m.modules():
            if isinstance(mod, torch.nn.BatchNorm1d):
                n = mod.num_features
                mod.running_mean.copy_(torch.randn(n, generator=g) * 0.3)
                mod.running_var.copy_(torch.rand(n, generator=g) + 0.5)
                mod.weight.copy_(torch.randn(n, generator=g) * 0.5 + 1)
                mod.bias.copy_(torch.randn(n, generator=g) * 0.2)
        for name in m.norm.sizes:
            n = m.norm.sizes[name]
            getattr(m.norm, f"{name}_mean").copy_(torch.randn(n, generator=g) * 3)
            getattr(m.norm, f"{name}_std").copy_(torch.rand(n, generator=g) * 4 + 0.5)
    return m.eval()


def inputs(m, B, T, seed=0, text_mask=None, sym_mask=None):
    rng = np.random.default_rng(seed)
    d = m.dims
    x = {"mfcc": rng.normal(-5, 20, (B, d["n_mfcc"], T)).astype(np.float32),
         "logmel": rng.normal(-40, 15, (B, d["n_mels"], T)).astype(np.float32)}
    if m.reads_chroma:  # chroma in dB, some frames silent (every bin at the floor)
        x["chroma"] = rng.normal(-30, 12, (B, 12, T)).astype(np.float32)
        x["chroma"][:, :, ::5] = -100.0
    if d["text_dim"]:
        x["text"] = (rng.random((B, d["text_dim"])) < 0.3).astype(np.float32) * 0.4
        x["text_mask"] = np.ones(B, bool) if text_mask is None else np.asarray(text_mask)
    if d["symbolic_dim"]:
        x["symbolic"] = (rng.random((B, d["symbolic_dim"], T)) < 0.25).astype(np.float32)
        x["symbolic"][:, 18:] = rng.random((B, d["symbolic_dim"] - 18, T))
        x["symbolic_mask"] = np.ones(B, bool) if sym_mask is None else np.asarray(sym_mask)
    return x


def graph_of(m, dtype="fp32"):
    sd = {k: v.detach().numpy() for k, v in m.state_dict().items()}
    return nm.build_graph(model_spec(m), sd, dtype=dtype)


def torch_logits(m, x):
    with torch.no_grad():
        return m({k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in x.items()}).numpy()


def check(m, x, threads=2, graph=None):
    ref = torch_logits(m, x)
    out = nm.GraphRunner(graph or graph_of(m), threads=threads)(x)
    assert out.shape == ref.shape
    np.testing.assert_allclose(out, ref, rtol=1e-4, atol=1e-4 * max(1.0, np.abs(ref).max()))
    return out


@pytest.fixture(params=["scalar", "avx2", "avx512"])
def isa(request):
    name = request.param
    if name not in _C.build_info()["isas"]:
        pytest.skip(f"{name} kernels not compiled in this build")
    try:
        _C.set_isa(name)
    except ValueError:
        pytest.skip(f"this CPU cannot run {name}")
    yield name
    _C.set_isa("auto")


@pytest.mark.parametrize("B,T", [(1, 1), (1, 2), (3, 7), (2, 33), (1, 301)])
def test_matches_torch_on_awkward_shapes(isa, B, T):
    m = make_model()
    check(m, inputs(m, B, T, seed=T), threads=2)


@pytest.mark.parametrize("over", [
    dict(pooling="last"), dict(pooling="mean"), dict(cell="none"),
    dict(pool_stride=3), dict(pool_stride=1, num_layers=1),
    dict(modalities=("mfcc",), flux_bands=0), dict(modalities=("mel", "symbolic")),
    dict(meter_profile=False), dict(pitch_templates=0), dict(modalities=("mfcc", "mel", "text")),
    dict(audio_pitch_templates=0), dict(n_chroma=0), dict(modalities=("mel",), flux_bands=0),
    dict(audio_meter_templates=0), dict(audio_pitch_templates=0, n_chroma=0),
    dict(audio_pitch_templates=0, audio_meter_templates=1),
])
def test_matches_torch_for_each_design_option(over):
    m = make_model(seed=1, **over)
    check(m, inputs(m, 3, 40, seed=5, text_mask=[1, 0, 1], sym_mask=[0, 1, 1]), threads=1)


def test_missing_modalities_and_nan_notes():
    m = make_model(seed=2)
    x = inputs(m, 3, 25, seed=1)
    x["symbolic"][0, 3, 4] = np.nan
    x["symbolic"][1, 20, 0] = np.inf
    x["symbolic"][2, 0, 0] = -np.inf
    check(m, x)
    g = graph_of(m)
    for drop in (("text", "text_mask"), ("symbolic", "symbolic_mask"), ("mfcc",), ("chroma",),
                 ("logmel", "chroma")):
        y = {k: v for k, v in x.items() if k not in drop}
        check(m, y, graph=g)


def test_threads_and_repeated_calls_agree():
    """Work buffers are reused: a long call, then a short one, then the long one again."""
    m = make_model(seed=3)
    g = graph_of(m)
    long, short = inputs(m, 2, 90, seed=1), inputs(m, 3, 11, seed=2)
    a = nm.GraphRunner(g, threads=1)(long)
    check(m, short, graph=g, threads=2)
    b = nm.GraphRunner(g, threads=2)(long)
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)


def test_bf16_close_to_fp32(isa):
    """bf16 graphs: bf16 LSTM and convolution weights on every ISA, and bf16 activations into
    the convolutions (vdpbf16ps) where the CPU has AVX512-BF16: logits within 0.5 % of fp32's
    scale (measured 2.6e-3 on scalar/AVX2/AVX-512, 2.0e-3 with AVX512-BF16: bound ~2x)."""
    m = make_model(seed=4)
    for B, T in [(2, 50), (1, 1), (3, 17)]:
        x = inputs(m, B, T, seed=T)
        ref = torch_logits(m, x)
        out = nm.GraphRunner(graph_of(m, "bf16"))(x)
        assert np.abs(out - ref).max() < 5e-3 * max(1.0, np.abs(ref).max())


def test_bf16_kernel_matches_fp32_kernel_on_bf16_weights():
    """The AVX512-BF16 convolution (bf16 activations) against the AVX-512 fp32 kernel on the
    same bf16 weights: only the activations' rounding differs."""
    if "avx512bf16" not in _C.build_info()["isas"]:
        pytest.skip("AVX512-BF16 kernels not compiled in this build")
    try:
        _C.set_isa("avx512bf16")
    except ValueError:
        pytest.skip("this CPU has no AVX512-BF16")
    try:
        m = make_model(seed=5, modalities=("mel",), cell="none", pooling="mean")
        x = inputs(m, 2, 64)
        g = graph_of(m, "bf16")
        a = nm.GraphRunner(g)(x)
        _C.set_isa("avx512")
        b = nm.GraphRunner(g)(x)
    finally:
        _C.set_isa("auto")
    assert not np.array_equal(a, b)  # the bf16 kernel ran (activations rounded)
    # measured max |a - b| 3.2e-3 = 1.5e-4 of max |b|; bound 2x
    np.testing.assert_allclose(a, b, rtol=0, atol=3e-4 * np.abs(b).max())


def test_bf16_recheck_reruns_exactly_the_close_rows_in_fp32():
    """A bf16 runner with its fp32 twin: rows whose bf16 decision margin is below the recheck
    margin take the fp32 graph's logits (bit for bit), the other rows keep bf16's; margin 0
    reruns nothing; an infinite margin makes the runner the fp32 graph."""
    m = make_model(seed=6)
    x = inputs(m, 9, 40, seed=3)
    fp32 = nm.GraphRunner(graph_of(m), threads=2)(x)
    raw = nm.GraphRunner(graph_of(m, "bf16"), threads=2)(x)
    assert not np.array_equal(raw, fp32)
    margins = nm.decision_margin(raw)
    cut = float(np.median(margins))
    r = nm.GraphRunner(graph_of(m, "bf16"), threads=2, recheck=graph_of(m), recheck_margin=cut)
    out = r(x)
    close = margins < cut
    assert 0 < close.sum() < len(close) and r.rechecked == close.sum() and r.calls == 9
    np.testing.assert_array_equal(out[close], fp32[close])
    np.testing.assert_array_equal(out[~close], raw[~close])
    none = nm.GraphRunner(graph_of(m, "bf16"), threads=2, recheck=graph_of(m), recheck_margin=0)
    np.testing.assert_array_equal(none(x), raw)
    assert none.rechecked == 0
    every = nm.GraphRunner(graph_of(m, "bf16"), threads=2, recheck=graph_of(m),
                           recheck_margin=np.inf)
    np.testing.assert_array_equal(every(x), fp32)


def test_decision_margins():
    p = np.array([[0.5, 0.3, 0.2], [0.34, 0.33, 0.33]])
    np.testing.assert_allclose(nm.probability_margin(p), [0.2, 0.01])
    np.testing.assert_allclose(nm.decision_margin(np.log(p)), [0.2, 0.01])
    q = np.array([[0.9, 0.45], [0.2, 0.99]])
    np.testing.assert_allclose(nm.probability_margin(q, multilabel=True), [0.1, 0.6])
    z = np.log(q / (1 - q))
    np.testing.assert_allclose(nm.decision_margin(z, multilabel=True), [0.1, 0.6])
    assert np.isinf(nm.probability_margin(np.ones((2, 1)))).all()


def test_bf16_engine_decides_like_fp32_on_close_calls(tmp_path):
    """Engine files: a bf16 native engine stores float32 master weights and carries the fp32
    twin; with every row close (an infinite margin) its probabilities equal the fp32
    engine's."""
    from mmengine.export import build_engine_from_model
    from mmengine.runtime.engine import Engine
    from mmengine.runtime.engine_file import read_engine_file

    m = make_model(seed=7, modalities=("mfcc", "mel"))
    kw = dict(backend="native", labels=["a", "b", "c", "d"],
              frontend_cfg=FrontendConfig(n_mfcc=7, n_mels=13))
    e32 = Engine.load(build_engine_from_model(m, tmp_path / "f.mme", **kw), backend="native")
    path16 = build_engine_from_model(m, tmp_path / "h.mme", dtype="bf16", **kw)
    e16 = Engine.load(path16, backend="native")
    tensors, _ = nm.read_safetensors(read_engine_file(path16).payload, str(path16))
    w = tensors["classifier.head.weight"]
    np.testing.assert_array_equal(w, m.classifier.head.weight.detach().numpy())  # not rounded
    assert e16.runner.recheck is not None and e32.runner.recheck is None
    x = inputs(m, 5, 33, seed=1)
    e16.runner.recheck_margin = np.inf
    np.testing.assert_array_equal(e16.predict_features(x), e32.predict_features(x))


@pytest.mark.parametrize("over", [
    {}, dict(cell="none", pooling="mean"), dict(modalities=("mel", "text")),
    dict(meter_profile=False, pitch_templates=0, flux_bands=0), dict(num_layers=3),
    dict(n_chroma=0), dict(modalities=("mfcc", "symbolic"))])
def test_state_shapes_match_the_torch_model(over):
    m = make_model(**over)
    want = {k: tuple(v.shape) for k, v in m.state_dict().items()}
    assert nm.state_shapes(model_spec(m)) == want


def test_band_edges_match_the_model():
    for n, b in [(13, 3), (128, 8), (40, 40)]:
        assert nm.band_edges(n, b) == torch_band_edges(n, b)


def test_unsupported_designs_have_reasons():
    assert nm.unsupported_reason(model_spec(make_model())) is None
    legacy = build_model(first_design(), dict(n_mfcc=7, n_mels=13, text_dim=11, symbolic_dim=0,
                                              n_classes=3, multilabel=False))
    assert "strided" in nm.unsupported_reason(model_spec(legacy))
    assert "gru" in nm.unsupported_reason(model_spec(make_model(cell="gru")))
    assert "early" in nm.unsupported_reason(model_spec(make_model(text_fusion="early")))


def test_build_refuses_weights_that_do_not_fit():
    m = make_model()
    spec = model_spec(m)
    sd = {k: v.detach().numpy() for k, v in m.state_dict().items()}
    with pytest.raises(EngineFileError, match="lack"):
        nm.build_graph(spec, {k: v for k, v in sd.items() if k != "pitch.templates"})
    bad = dict(sd)
    bad["stems.mel.inp.0.weight"] = np.zeros((16, 99, 3), np.float32)
    with pytest.raises(EngineFileError, match="shape"):
        nm.build_graph(spec, bad)
    with pytest.raises(EngineFileError, match="does not use"):
        nm.build_graph(spec, dict(sd, **{"extra.weight": np.zeros(3, np.float32)}))


def test_safetensors_reader_matches_the_library():
    from safetensors.torch import save

    t = {"a": torch.randn(3, 4), "b": torch.randn(5).to(torch.bfloat16),
         "c": torch.arange(6, dtype=torch.int64).reshape(2, 3), "d": torch.zeros(0, 2),
         "e": torch.tensor(7)}
    blob = save(t, metadata={"format": "x"})
    got, meta = nm.read_safetensors(blob)
    assert meta == {"format": "x"}
    for k, v in t.items():
        np.testing.assert_array_equal(got[k], v.float().numpy() if k == "b" else v.numpy())
        assert got[k].shape == tuple(v.shape)


@pytest.mark.parametrize("mutate", ["short", "huge_header", "not_json", "overrun", "dtype",
                                    "shape"])
def test_safetensors_reader_refuses_bad_blobs(mutate):
    from safetensors.torch import save

    blob = bytearray(save({"w": torch.ones(4, 4)}))
    n = struct.unpack("<Q", blob[:8])[0]
    head = json.loads(blob[8:8 + n])
    if mutate == "short":
        blob = blob[:5]
    elif mutate == "huge_header":
        blob[:8] = struct.pack("<Q", 1 << 60)
    elif mutate == "not_json":
        blob[8:8 + n] = b"{" * n
    else:
        if mutate == "overrun":
            head["w"]["data_offsets"] = [0, 1 << 40]
        elif mutate == "dtype":
            head["w"]["dtype"] = "X9"
        else:
            head["w"]["shape"] = [4, 5]
        h = json.dumps(head).encode()
        blob = bytearray(struct.pack("<Q", len(h)) + h + bytes(blob[8 + n:]))
    with pytest.raises(EngineFileError):
        nm.read_safetensors(bytes(blob))
