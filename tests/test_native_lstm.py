"""Native CPU LSTM (csrc/lstm via mmengine.runtime.native_lstm) against the float64 reference.

Every kernel variant this machine can run is forced in turn (scalar / AVX2 / AVX-512 /
AVX512-BF16), in fp32 and bf16 weight storage, on awkward sizes.

Tolerance (STYLE.md rule, mmengine.models.reference.tolerance): twice PyTorch's own error in
the same dtype against float64, plus a floor (fp32 1e-4, bf16 5e-2).
  fp32: reference = float64 stack; PyTorch's error = the same stack run in float32.
  bf16: the engine stores bf16 weights, so the reference is the float64 stack on the
        bf16-rounded weights (weight rounding is the model's, not the kernel's error);
        PyTorch's error = the stack run entirely in torch.bfloat16. Where the kernel widens bf16
        weights to fp32 (every variant but avx512bf16), all arithmetic is fp32, so it must also
        meet the fp32 tolerance; avx512bf16 rounds activations to bf16 for vdpbf16ps.
"""
from __future__ import annotations

import functools

import numpy as np
import pytest
import torch

from mmengine._ext import native_extension
from mmengine.models.reference import lstm_stack_ref, tolerance
from mmengine.runtime.native_lstm import NativeLSTM, bf16_round, pack_lstm, unpack_lstm

_C = native_extension()
pytestmark = pytest.mark.skipif(_C is None, reason="mmengine._C not built (pip install -e .)")

ALL_ISAS = ["scalar", "avx2", "avx512", "avx512bf16"]

# (batch, steps, input, hidden, layers): single step; small batch (threads split units);
# batch 64 (threads split rows); 3 layers over several time chunks; a long sequence.
CASES = [
    (1, 1, 13, 17, 1),
    (3, 37, 148, 100, 2),
    (64, 5, 13, 17, 1),
    (9, 23, 13, 257, 3),
    (64, 12, 148, 128, 2),
    (1, 1000, 148, 100, 2),
]



@pytest.fixture(params=ALL_ISAS)
def isa(request):
    name = request.param
    if _C is None or name not in _C.build_info()["isas"]:
        pytest.skip(f"{name} kernels not compiled in this build")
    try:
        _C.set_isa(name)
    except ValueError:
        pytest.skip(f"this CPU cannot run {name}")
    yield name
    _C.set_isa("auto")


def _layers(d, h, n, seed):
    g = torch.Generator().manual_seed(seed)
    s = 1.0 / np.sqrt(h)
    out = []
    for k in range(n):
        dk = d if k == 0 else h
        shapes = [(4 * h, dk), (4 * h, h), (4 * h,), (4 * h,)]
        # float32 values held in float64, so fp32 storage is exact
        out.append(tuple((torch.rand(sh, generator=g, dtype=torch.float64) * 2 - 1).mul(s).float().double()
                         for sh in shapes))
    return out


def _bf16_weights(layers):
    return [tuple(torch.from_numpy(bf16_round(w.float().numpy())).double() if i < 2 else w
                  for i, w in enumerate(ly)) for ly in layers]


@functools.lru_cache(maxsize=None)
def _case(case, dtype):
    """Inputs, the float64 reference (y, h_n, c_n) and the tolerances for one case."""
    b, t, d, h, n = case
    layers = _layers(d, h, n, seed=sum(case))
    x = torch.randn(b, t, d, generator=torch.Generator().manual_seed(7), dtype=torch.float64).float()
    ref_layers = layers if dtype == "fp32" else _bf16_weights(layers)
    with torch.no_grad():
        ref = lstm_stack_ref(x.double(), ref_layers)
        ref = (ref[0], ref[1][0], ref[1][1])
        ref32 = lstm_stack_ref(x, [tuple(w.float() for w in ly) for ly in ref_layers])
        ref32 = (ref32[0], ref32[1][0], ref32[1][1])
        tol32 = max(tolerance(r, o, torch.float32) for r, o in zip(ref, ref32))
        tol = tol32
        if dtype == "bf16":
            refb = lstm_stack_ref(x.bfloat16(), [tuple(w.bfloat16() for w in ly) for ly in ref_layers])
            refb = (refb[0], refb[1][0], refb[1][1])
            tol = max(tolerance(r, o, torch.bfloat16) for r, o in zip(ref, refb))
    return layers, x.numpy(), [r.numpy() for r in ref], tol, tol32


def _max_diff(outs, ref):
    return max(float(np.abs(o.astype(np.float64) - r).max()) if r.size else 0.0 for o, r in zip(outs, ref))


@pytest.mark.parametrize("dtype", ["fp32", "bf16"])
@pytest.mark.parametrize("case", CASES, ids=lambda c: "b{}_t{}_d{}_h{}_l{}".format(*c))
def test_matches_reference(isa, dtype, case):
    if isa == "scalar" and case[0] * case[1] * case[3] > 200_000:
        pytest.skip("scalar variant: the smaller cases cover it (keeps the file fast)")
    layers, x, ref, tol, tol32 = _case(case, dtype)
    net = NativeLSTM(layers, dtype=dtype)
    y, h_n, c_n = net.forward(x, return_sequence=True)
    b, t, _, h, n = case
    assert y.shape == (b, t, h) and h_n.shape == c_n.shape == (n, b, h)
    err = _max_diff((y, h_n, c_n), ref)
    assert err <= tol, f"{isa}/{dtype} {case}: max |native - float64 ref| = {err:.3g} > tol {tol:.3g}"
    if dtype == "bf16" and isa != "avx512bf16":
        assert err <= tol32, (
            f"{isa}/bf16 widens weights to fp32: max diff {err:.3g} > fp32 tol {tol32:.3g}")
    y_last, h2, c2 = net.forward(x)
    np.testing.assert_array_equal(y_last, h_n[-1])
    np.testing.assert_array_equal(h2, h_n)
    np.testing.assert_array_equal(c2, c_n)


@pytest.mark.parametrize("dtype", ["fp32", "bf16"])
@pytest.mark.parametrize("case", [(3, 40, 13, 100, 2), (9, 23, 13, 257, 3)], ids=["units", "rows"])
def test_thread_count_and_batch_independent(isa, dtype, case):
    """Bitwise equal results for 1 and 2 threads, and for a batch versus each row alone."""
    layers, x, _, _, _ = _case(case, dtype)
    net = NativeLSTM(layers, dtype=dtype)
    one = net.forward(x, return_sequence=True, num_threads=1)
    two = net.forward(x, return_sequence=True, num_threads=2)
    for a, b in zip(one, two):
        np.testing.assert_array_equal(a, b)
    for i in (0, x.shape[0] - 1):
        y_i, h_i, c_i = net.forward(x[i:i + 1], return_sequence=True)
        np.testing.assert_array_equal(y_i[0], one[0][i])
        np.testing.assert_array_equal(h_i[:, 0], one[1][:, i])


def test_repeated_calls_reuse_buffers(isa):
    layers, x, ref, tol, _ = _case((9, 23, 13, 257, 3), "fp32")
    net = NativeLSTM(layers)
    net.reserve(64, 30)
    first = net.forward(x, return_sequence=True)
    net.forward(np.ones((2, 5, 13), np.float32))  # a different shape in between
    again = net.forward(x, return_sequence=True)
    for a, b in zip(first, again):
        np.testing.assert_array_equal(a, b)
    err = _max_diff(first, ref)
    assert err <= tol, f"max diff {err:.3g} > tol {tol:.3g}"


def test_activations_accuracy(isa):
    x = np.concatenate([np.linspace(-100, 100, 20001), np.linspace(-1, 1, 20001),
                        [0.0, 1e-30, -1e-8, 0.4999999, 0.5, 0.5000001, 87.0, -87.5, 1e4, -1e4]])
    x32 = x.astype(np.float32)
    xd = x32.astype(np.float64)
    sig = _C.sigmoid(x32).astype(np.float64)
    th = _C.tanh(x32).astype(np.float64)
    with np.errstate(over="ignore"):
        sig_ref = 1.0 / (1.0 + np.exp(-xd))
    th_ref = np.tanh(xd)
    keep = sig_ref > 1e-30  # below that, float32 results are denormal or zero
    sig_rel = np.max(np.abs(sig - sig_ref)[keep] / sig_ref[keep])
    nz = th_ref != 0
    th_rel = np.max(np.abs(th - th_ref)[nz] / np.abs(th_ref[nz]))
    # measured (AMD EPYC, every ISA): sigmoid 1.5e-7, tanh 2.0e-7 (AVX2; 1.6e-7 the others)
    # relative; bound about 2x
    assert sig_rel < 5e-7, f"{isa}: sigmoid max relative error {sig_rel:.3g}"
    assert th_rel < 5e-7, f"{isa}: tanh max relative error {th_rel:.3g}"
    assert th[x32 == 0].tolist() == [0.0] * int((x32 == 0).sum())


@pytest.mark.parametrize("dtype", ["fp32", "bf16"])
def test_pack_unpack_round_trip(dtype):
    layers = _layers(13, 17, 2, seed=3)
    packed = pack_lstm(layers, dtype)
    nb, k = 2, 14 if dtype == "bf16" else 13
    if dtype == "fp32":
        assert packed["l0.w_ih"].shape == (nb, k, 64) and packed["l0.w_ih"].dtype == np.float32
        assert packed["l1.w_ih"].shape == packed["l1.w_hh"].shape == (nb, 32, 64)
    else:
        assert packed["l0.w_ih"].shape == (nb, k // 2, 64, 2) and packed["l0.w_ih"].dtype == np.uint16
        assert packed["l1.w_hh"].shape == (nb, 16, 64, 2)
    assert packed["l0.bias"].shape == (nb, 64)
    back = unpack_lstm(packed)
    conv = (lambda a: a.float().numpy()) if dtype == "fp32" else (lambda a: bf16_round(a.float().numpy()))
    for (w_ih, w_hh, b_ih, b_hh), (u_ih, u_hh, u_b) in zip(layers, back):
        np.testing.assert_array_equal(u_ih, conv(w_ih))
        np.testing.assert_array_equal(u_hh, conv(w_hh))
        np.testing.assert_array_equal(u_b, (b_ih + b_hh).float().numpy())
    again = pack_lstm([(a, b, c, np.zeros_like(c)) for a, b, c in back], dtype)
    for name in packed:
        np.testing.assert_array_equal(again[name], packed[name])


@pytest.mark.parametrize("dtype", ["fp32", "bf16"])
def test_from_packed_through_safetensors(dtype):
    from safetensors.numpy import load, save

    layers, x, _, _, _ = _case((3, 37, 148, 100, 2), dtype)
    direct = NativeLSTM(layers, dtype=dtype)
    loaded = NativeLSTM.from_packed(load(save(pack_lstm(layers, dtype))))
    assert (loaded.num_layers, loaded.input_size, loaded.hidden_size, loaded.dtype) == (2, 148, 100, dtype)
    for a, b in zip(direct.forward(x), loaded.forward(x)):
        np.testing.assert_array_equal(a, b)


def test_empty_sequence_gives_zero_states():
    net = NativeLSTM(_layers(13, 17, 2, seed=1))
    y, h_n, c_n = net.forward(np.zeros((2, 0, 13), np.float32), return_sequence=True)
    assert y.shape == (2, 0, 17)
    assert not h_n.any() and not c_n.any()


def test_bad_inputs_are_refused():
    layers = _layers(13, 17, 1, seed=2)
    net = NativeLSTM(layers)
    with pytest.raises(ValueError, match="x must be"):
        net.forward(np.zeros((1, 4, 12), np.float32))
    with pytest.raises(ValueError, match="dtype"):
        pack_lstm(layers, "fp16")
    packed = pack_lstm(layers)
    with pytest.raises(ValueError, match="format"):
        NativeLSTM.from_packed({**packed, "meta": packed["meta"] * 0 + 9})
    with pytest.raises(ValueError, match="wrong size"):
        NativeLSTM.from_packed({**packed, "l0.w_hh": packed["l0.w_hh"][:, :-1]})
    with pytest.raises(ValueError, match="expected w_ih"):
        pack_lstm([(layers[0][0][:, :5], *layers[0][1:])] + [layers[0]])
