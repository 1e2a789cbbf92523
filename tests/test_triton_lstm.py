"""Triton LSTM kernels (triton_kernels/) against the float64 reference (models/reference.py).

Everywhere: the kernels run in Triton's interpreter on CPU tensors, at small awkward sizes, in
one subprocess started with TRITON_INTERPRET=1 (triton fixes interpreted-or-compiled when it is
first imported, and this process may already hold it compiled); and they are compiled for sm_80
and sm_90 without a GPU, in a second subprocess, whose PTX must show the grid barrier's
release/acquire pattern. On a GPU (``gpu`` marker): full sizes, compiled, Triton and CUDA.
Tolerance: ``reference.tolerance`` (twice torch's own error in the dtype, plus a floor).

Run as a script (``python tests/test_triton_lstm.py interpret|compile``) it is the worker.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import traceback
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from mmengine import _ext  # noqa: E402
from mmengine.errors import BackendUnavailableError  # noqa: E402
from mmengine.models.reference import (  # noqa: E402
    lstm_cell_ref, lstm_layer_ref, lstm_stack_ref, tolerance)

F32, BF16, F16 = torch.float32, torch.bfloat16, torch.float16
DTYPES = {"fp32": F32, "bf16": BF16, "fp16": F16}
DOT = {"use_dot": True, "block_b": 16, "block_h": 16, "block_k": 16}

# (id, kind, sizes, dtype name, kernel config) run in the interpreter
CASES = []
for _dt in DTYPES:
    CASES += [
        (f"cell-B1-H17-{_dt}", "cell", dict(B=1, H=17), _dt, {}),
        (f"cell-B3-H33-{_dt}", "cell", dict(B=3, H=33), _dt, {}),
        (f"seq-B1-T5-H17-persistent-{_dt}", "seq", dict(B=1, T=5, H=17, init=True), _dt,
         {"schedule": "persistent", "block_h": 32}),
        (f"seq-B3-T5-H33-stepwise-{_dt}", "seq", dict(B=3, T=5, H=33, init=True), _dt,
         {"schedule": "stepwise", "block_h": 16}),
        (f"seq-B3-T1-H33-3programs-{_dt}", "seq", dict(B=3, T=1, H=33, init=False), _dt,
         {"schedule": "persistent", "block_h": 16}),
    ]
CASES += [
    ("cell-B3-H33-dot-bf16", "cell", dict(B=3, H=33), "bf16", DOT),
    ("cell-B3-H17-dot-fp32", "cell", dict(B=3, H=17), "fp32", DOT),
    ("seq-B3-T5-H17-dot-persistent-bf16", "seq", dict(B=3, T=5, H=17, init=True), "bf16",
     {"use_dot": True, "block_b": 16, "block_h": 32, "schedule": "persistent"}),
    ("seq-B3-T5-H33-dot-stepwise-fp16", "seq", dict(B=3, T=5, H=33, init=False), "fp16",
     {"use_dot": True, "block_b": 16, "block_h": 16, "schedule": "stepwise"}),
    ("seq-B5-T3-H17-tiles-in-one-program-fp32", "seq", dict(B=5, T=3, H=17, init=True), "fp32",
     {"block_b": 2, "groups": 1}),
    ("seq-B3-T5-H33-auto-fp32", "seq", dict(B=3, T=5, H=33, init=False), "fp32", {}),
    ("seq-B3-T0-H17-fp32", "seq", dict(B=3, T=0, H=17, init=True), "fp32", {}),
    ("stack-B3-T5-D13-H17-L2-fp32", "stack", dict(B=3, T=5, D=13, H=17, L=2), "fp32", {}),
    ("stack-B1-T5-D13-H33-L2-bf16", "stack", dict(B=1, T=5, D=13, H=33, L=2), "bf16", {}),
    ("wrapper-B2-T4-D13-H17-L2-fp32", "wrapper", dict(B=2, T=4, D=13, H=17, L=2), "fp32", {}),
]
CASE_IDS = [c[0] for c in CASES]


def _weights(D, H, L, gen):
    layers = []
    for k in range(L):
        d = D if k == 0 else H
        scale = 1.0 / H ** 0.5
        layers.append(tuple(
            (torch.rand(shape, generator=gen, dtype=torch.float64) * 2 - 1) * scale
            for shape in ((4 * H, d), (4 * H, H), (4 * H,), (4 * H,))))
    return layers


def _layer_ref(gx, w_hh, b_hh, h0, c0):
    """lstm_layer_ref on precomputed projections: x = gx, W_ih = I, b_ih = 0 (exact in any
    dtype). Returns y, h_T, c_T concatenated flat, for one max-difference."""
    n = gx.shape[-1]
    eye = torch.eye(n, dtype=gx.dtype, device=gx.device)
    y, (h, c) = lstm_layer_ref(gx, eye, w_hh, torch.zeros_like(b_hh), b_hh, h0, c0)
    return torch.cat([y.flatten(), h.flatten(), c.flatten()])


def _judge(out, ref64, ref_dtype, dtype):
    err = (out.double() - ref64).abs().max().item() if ref64.numel() else 0.0
    torch_err = (ref_dtype.double() - ref64).abs().max().item() if ref64.numel() else 0.0
    return {"err": err, "tol": tolerance(ref64, ref_dtype, dtype), "torch_err": torch_err}


def run_case(kind, sizes, dtype, config, seed):
    """Run one case on CPU float tensors; returns err, tol, torch_err (see ``_judge``)."""
    import triton_kernels
    from triton_kernels import lstm_seq

    gen = torch.Generator().manual_seed(seed)
    rnd = lambda *shape: torch.randn(*shape, generator=gen, dtype=torch.float64)  # noqa: E731
    if kind in ("cell", "seq"):
        B, H = sizes["B"], sizes["H"]
        (_, w_hh, _, b_hh), = _weights(1, H, 1, gen)
        h0, c0 = rnd(B, H), rnd(B, H)
        if kind == "cell":
            gx = rnd(B, 4 * H)
            h, c = triton_kernels.lstm_cell.lstm_cell(gx.float(), h0.float(), c0.float(),
                                                      w_hh.to(dtype), b_hh.float(), **config)
            out = torch.cat([h.flatten(), c.flatten()])
            refs = [torch.cat([t.flatten() for t in lstm_cell_ref(
                gx.to(dt), h0.to(dt), c0.to(dt), w_hh.to(dt), b_hh.to(dt))])
                for dt in (torch.float64, dtype)]
        else:
            gx = rnd(B, sizes["T"], 4 * H)
            if not sizes["init"]:
                h0 = c0 = None
            f32 = lambda t: t.float() if t is not None else None  # noqa: E731
            y, h, c = triton_kernels.lstm_sequence(gx.float(), w_hh.to(dtype), b_hh.float(),
                                                   f32(h0), f32(c0), **config)
            out = torch.cat([y.flatten(), h.flatten(), c.flatten()])
            cast = lambda t, dt: t.to(dt) if t is not None else None  # noqa: E731
            refs = [_layer_ref(gx.to(dt), w_hh.to(dt), b_hh.to(dt), cast(h0, dt), cast(c0, dt))
                    for dt in (torch.float64, dtype)]
        return {**_judge(out, refs[0], refs[1], dtype), "interpreted": lstm_seq.INTERPRETED,
                "device": str(gx.float().device)}

    B, T, D, H, L = (sizes[k] for k in "BTDHL")
    layers = _weights(D, H, L, gen)
    x = rnd(B, T, D)
    if kind == "stack":
        y, (h, c) = triton_kernels.lstm_stack_triton(x.float(), layers, dtype, **config)
        out = torch.cat([y.flatten(), h.flatten(), c.flatten()])
        refs = []
        for dt in (torch.float64, dtype):
            ry, (rh, rc) = lstm_stack_ref(x.to(dt), [tuple(t.to(dt) for t in l) for l in layers])
            refs.append(torch.cat([ry.flatten(), rh.flatten(), rc.flatten()]))
    else:
        from mmengine.runtime.gpu_lstm import TritonLSTM

        model = TritonLSTM(layers, dtype, **config)
        y_last, (h, c) = model.forward(x.float())
        out = torch.cat([y_last.flatten(), h.flatten(), c.flatten()])
        refs = []
        for dt in (torch.float64, dtype):
            ry, (rh, rc) = lstm_stack_ref(x.to(dt), [tuple(t.to(dt) for t in l) for l in layers])
            refs.append(torch.cat([ry[:, -1].flatten(), rh.flatten(), rc.flatten()]))
    return {**_judge(out, refs[0], refs[1], dtype), "interpreted": lstm_seq.INTERPRETED,
            "device": str(x.float().device)}


def _worker_interpret() -> dict:
    results = {}
    for seed, (cid, kind, sizes, dt, config) in enumerate(CASES):
        t0 = time.perf_counter()
        try:
            results[cid] = run_case(kind, sizes, DTYPES[dt], config, seed)
        except Exception:  # reported per case, so one failure does not hide the others
            results[cid] = {"exception": traceback.format_exc()}
        results[cid]["seconds"] = time.perf_counter() - t0
    from triton_kernels import lstm_seq

    results["_persistent_deadlock_refused"] = False
    try:
        lstm_seq.lstm_sequence(torch.zeros(1, 3, 4 * 33), torch.zeros(4 * 33, 33), None,
                               schedule="persistent", block_h=16)
    except ValueError as exc:
        results["_persistent_deadlock_refused"] = "interpreter" in str(exc)
    return results


# kernel configurations compiled for the GPU: (name, kernel, weight dtype, constexprs, warps)
def _compile_jobs():
    from triton_kernels.lstm_cell import cell_config
    from triton_kernels.lstm_seq import seq_config

    jobs = []
    for B, H, dt in ((1, 128, "fp32"), (8, 512, "fp32"), (64, 512, "bf16"), (256, 256, "fp16")):
        cfg = seq_config(B, H, DTYPES[dt])
        const = dict(HAS_BIAS=True, HAS_H0=True, HAS_C0=True, GRID_SYNC=True,
                     USE_DOT=cfg["use_dot"], WIDEN_DOT=False, BLOCK_B=cfg["block_b"],
                     BLOCK_H=cfg["block_h"], H_PAD=max(16, 1 << (H - 1).bit_length()))
        jobs.append((f"seq-B{B}-H{H}-{dt}", "lstm_seq_kernel", dt, const, cfg["num_warps"]))
    for B, H, dt in ((1, 128, "fp32"), (64, 512, "bf16")):
        cfg = cell_config(B, H, DTYPES[dt])
        const = dict(HAS_BIAS=True, USE_DOT=cfg["use_dot"], WIDEN_DOT=False,
                     BLOCK_B=cfg["block_b"], BLOCK_H=cfg["block_h"], BLOCK_K=cfg["block_k"])
        jobs.append((f"cell-B{B}-H{H}-{dt}", "lstm_cell_kernel", dt, const, 4))
    return jobs


def _worker_compile() -> dict:
    import re

    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    from triton_kernels import lstm_cell, lstm_seq

    kernels = {"lstm_seq_kernel": lstm_seq.lstm_seq_kernel,
               "lstm_cell_kernel": lstm_cell.lstm_cell_kernel}
    results = {}
    for name, kname, dt, const, warps in _compile_jobs():
        fn = kernels[kname]
        sig = {}
        for arg in fn.arg_names:
            if arg in const:
                sig[arg] = "constexpr"
            elif arg == "w_ptr":
                sig[arg] = "*" + dt
            elif arg == "sync_ptr":
                sig[arg] = "*i32"
            elif arg.endswith("_ptr"):
                sig[arg] = "*fp32"
            else:
                sig[arg] = "i32"
        for cap in (80, 90):
            t0 = time.perf_counter()
            compiled = triton.compile(ASTSource(fn, sig, constexprs=const),
                                      target=GPUTarget("cuda", cap, 32),
                                      options={"num_warps": warps})
            ptx = compiled.asm["ptx"]
            results[f"{name}-sm{cap}"] = {
                "seconds": time.perf_counter() - t0,
                "cubin_bytes": len(compiled.asm.get("cubin", b"")),
                "release_add": bool(re.search(r"atom\.global\.gpu\.release\.add", ptx)),
                "acquire_read": bool(re.search(r"(ld|atom)\.global\.gpu\.acquire", ptx)),
                "bar_sync": len(re.findall(r"\bbar\.sync\b|\bbarrier\.sync\b", ptx)),
                "ld_cg": bool(re.search(r"ld\.global\.cg", ptx)),
                "mma": bool(re.search(r"\bmma\.|wgmma", ptx)),
                "use_dot": const["USE_DOT"],
            }
    return results


def _run_worker(mode: str, timeout: float = 300.0) -> dict:
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    if mode == "interpret":
        env["TRITON_INTERPRET"] = "1"
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    proc = subprocess.run([sys.executable, str(Path(__file__).resolve()), mode], env=env,
                          capture_output=True, text=True, timeout=timeout, cwd=ROOT)
    assert proc.returncode == 0, f"{mode} worker failed (rc {proc.returncode}):\n{proc.stderr[-4000:]}"
    return json.loads(proc.stdout.strip().splitlines()[-1])


needs_triton = pytest.mark.skipif(not _ext.has("triton"), reason="triton is not installed")


@pytest.fixture(scope="module")
def interpreted():
    return _run_worker("interpret")


@pytest.fixture(scope="module")
def compiled():
    return _run_worker("compile")


@needs_triton
@pytest.mark.parametrize("case_id", CASE_IDS)
def test_interpreted_kernel_matches_reference(interpreted, case_id):
    r = interpreted[case_id]
    assert "exception" not in r, r.get("exception")
    assert r["interpreted"] and r["device"] == "cpu", "the kernel did not run in the interpreter"
    assert r["err"] <= r["tol"], (f"{case_id}: max |kernel - float64 ref| = {r['err']:.3g} > "
                                  f"tolerance {r['tol']:.3g} (torch's own error {r['torch_err']:.3g})")


@needs_triton
def test_interpreter_refuses_a_persistent_grid_that_would_deadlock(interpreted):
    assert interpreted["_persistent_deadlock_refused"]


@needs_triton
def test_kernels_compile_for_sm80_and_sm90(compiled):
    names = [f"{job[0]}-sm{cap}" for job in _compile_jobs() for cap in (80, 90)]
    assert sorted(compiled) == sorted(names)
    for name, r in compiled.items():
        assert r["cubin_bytes"] > 0, name
        if name.startswith("seq"):
            # the grid barrier: CTA barrier, one release add, acquire spin, L2-only reads of h
            assert r["release_add"] and r["acquire_read"] and r["bar_sync"] >= 2, (name, r)
            assert r["ld_cg"], (name, r)
        if r["use_dot"]:
            assert r["mma"], (name, r)


def test_import_touches_neither_triton_nor_the_gpu():
    code = (
        "import sys, torch, triton_kernels, mmengine.runtime.gpu_lstm\n"
        "assert 'triton' not in sys.modules, 'triton imported'\n"
        "assert not torch.cuda.is_initialized(), 'CUDA initialised'\n"
        "sys.modules['triton'] = None\n"
        "from mmengine.errors import OptionalDependencyError\n"
        "try:\n"
        "    triton_kernels.lstm_sequence\n"
        "except OptionalDependencyError as exc:\n"
        "    assert 'pip install' in str(exc), exc\n"
        "else:\n"
        "    raise AssertionError('no OptionalDependencyError without triton')\n"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                          timeout=120, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-3000:]


@needs_triton
def test_triton_lstm_without_gpu_names_what_is_missing():
    if _ext.cuda_available():
        pytest.skip("a GPU is present: TritonLSTM is constructible here")
    from triton_kernels import lstm_seq
    from mmengine.runtime.gpu_lstm import TritonLSTM

    if lstm_seq.INTERPRETED:
        pytest.skip("TRITON_INTERPRET=1 is set for this whole session: TritonLSTM runs on CPU")
    layers = [(torch.zeros(8, 3), torch.zeros(8, 2), torch.zeros(8), torch.zeros(8))]
    with pytest.raises(BackendUnavailableError) as info:
        TritonLSTM(layers, torch.float32)
    msg = str(info.value)
    assert "no CUDA device" in msg and "TRITON_INTERPRET=1" in msg, msg


# ------------------------------------------------------------------------------- GPU, full size
GPU_T = 646


def _gpu_impls():
    from triton_kernels import lstm_seq

    from mmengine.runtime import gpu_lstm

    assert not lstm_seq.INTERPRETED, "TRITON_INTERPRET=1 is set: GPU tests need compiled kernels"
    from triton_kernels.lstm_cell import lstm_cell

    return {"triton": (lstm_seq.lstm_sequence, lstm_cell),
            "cuda": (gpu_lstm.cuda_lstm_sequence, gpu_lstm.cuda_lstm_cell)}


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [F32, BF16], ids=["fp32", "bf16"])
@pytest.mark.parametrize("B", [1, 8, 64, 256])
@pytest.mark.parametrize("H", [128, 256, 512])
@pytest.mark.parametrize("impl", ["triton", "cuda"])
def test_gpu_sequence_full_size(impl, H, B, dtype):
    seq_fn = _gpu_impls()[impl][0]
    gen = torch.Generator(device="cuda").manual_seed(H * 1000 + B)
    rnd = lambda *s: torch.randn(*s, generator=gen, device="cuda", dtype=torch.float64)  # noqa: E731
    gx, w_hh, b_hh = rnd(B, GPU_T, 4 * H), rnd(4 * H, H) / H ** 0.5, rnd(4 * H)
    h0, c0 = rnd(B, H), rnd(B, H)
    y, h, c = seq_fn(gx.float().contiguous(), w_hh.to(dtype).contiguous(), b_hh.float(),
                     h0.float(), c0.float())
    torch.cuda.synchronize()
    out = torch.cat([y.flatten(), h.flatten(), c.flatten()])
    refs = [_layer_ref(gx.to(dt), w_hh.to(dt), b_hh.to(dt), h0.to(dt), c0.to(dt))
            for dt in (torch.float64, dtype)]
    r = _judge(out, refs[0], refs[1], dtype)
    assert r["err"] <= r["tol"], (f"{impl} H={H} B={B} {dtype}: max diff {r['err']:.3g} > "
                                  f"{r['tol']:.3g} (torch {r['torch_err']:.3g})")


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [F32, BF16], ids=["fp32", "bf16"])
@pytest.mark.parametrize("B", [1, 8, 64, 256])
@pytest.mark.parametrize("H", [128, 256, 512])
@pytest.mark.parametrize("impl", ["triton", "cuda"])
def test_gpu_cell_full_size(impl, H, B, dtype):
    cell_fn = _gpu_impls()[impl][1]
    gen = torch.Generator(device="cuda").manual_seed(H * 1000 + B + 1)
    rnd = lambda *s: torch.randn(*s, generator=gen, device="cuda", dtype=torch.float64)  # noqa: E731
    gx, h0, c0 = rnd(B, 4 * H), rnd(B, H), rnd(B, H)
    w_hh, b_hh = rnd(4 * H, H) / H ** 0.5, rnd(4 * H)
    h, c = cell_fn(gx.float(), h0.float(), c0.float(), w_hh.to(dtype).contiguous(), b_hh.float())
    torch.cuda.synchronize()
    refs = [torch.cat([t.flatten() for t in lstm_cell_ref(
        gx.to(dt), h0.to(dt), c0.to(dt), w_hh.to(dt), b_hh.to(dt))]) for dt in (torch.float64, dtype)]
    r = _judge(torch.cat([h.flatten(), c.flatten()]), refs[0], refs[1], dtype)
    assert r["err"] <= r["tol"], (f"{impl} H={H} B={B} {dtype}: max diff {r['err']:.3g} > "
                                  f"{r['tol']:.3g} (torch {r['torch_err']:.3g})")


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [F32, BF16], ids=["fp32", "bf16"])
@pytest.mark.parametrize("backend", ["triton", "cuda"])
def test_gpu_wrappers_match_cudnn_workload(backend, dtype):
    from mmengine.models.reference import layers_from_torch
    from mmengine.runtime.gpu_lstm import CudaLSTM, TritonLSTM

    torch.manual_seed(7)
    lstm = torch.nn.LSTM(148, 128, num_layers=2, batch_first=True).double().cuda()
    x = torch.randn(8, GPU_T, 148, device="cuda", dtype=torch.float64)
    layers = layers_from_torch(lstm)
    model = (TritonLSTM if backend == "triton" else CudaLSTM)(layers, dtype)
    y_last, (h, c) = model.forward(x.float())
    torch.cuda.synchronize()
    refs = []
    for dt in (torch.float64, dtype):
        ry, (rh, rc) = lstm_stack_ref(x.to(dt), [tuple(t.to(dt) for t in l) for l in layers])
        refs.append(torch.cat([ry[:, -1].flatten(), rh.flatten(), rc.flatten()]))
    r = _judge(torch.cat([y_last.flatten(), h.flatten(), c.flatten()]), refs[0], refs[1], dtype)
    assert r["err"] <= r["tol"], f"{backend} {dtype}: max diff {r['err']:.3g} > {r['tol']:.3g}"


if __name__ == "__main__":
    worker = {"interpret": _worker_interpret, "compile": _worker_compile}[sys.argv[1]]
    print(json.dumps(worker()))
