"""The CUDA kernels (csrc/cuda/lstm_cuda.cu) compile for sm_80 and sm_90 with nvcc, without a
GPU: this is how CI checks them (their numerics are tested on a GPU in test_triton_lstm.py).

Checks: nvcc succeeds; the object holds every kernel instance and ``register_bindings``; one
cubin per architecture, each with every kernel; ptxas reports no register spills; the header
compiles with a plain C++ compiler (bindings.cpp includes it without CUDA include paths).
Skipped, explicitly, when nvcc is absent. Also: ``CudaLSTM`` names what is missing here.

Emulation (no nvcc needed, only a C++20 compiler): the same .cu is compiled by the host
compiler against stand-in CUDA headers (``EMU_HEADER`` below: every CUDA thread a std::thread,
__syncthreads and grid.sync std::barriers, a cooperative launch running all blocks at once and
refusing grids larger than the emulated SM count) into a Python module exposing the real
bindings; the kernels then run on CPU tensors against the float64 reference. This checks the
kernels' indexing, work split, partial sums, step synchronisation and the bindings, not the
GPU's memory model or speed.
"""
from __future__ import annotations

import importlib.util
import os
import re
import shutil
import subprocess
import sysconfig
from pathlib import Path

import pytest
import torch

from mmengine import _ext
from mmengine.errors import BackendUnavailableError
from mmengine.models.reference import lstm_cell_ref, lstm_layer_ref, tolerance

ROOT = Path(__file__).resolve().parents[1]
SOURCE = ROOT / "csrc" / "cuda" / "lstm_cuda.cu"
ARCHS = (80, 90)
# mangled-name fragments of every kernel instance: (kernel, weight type)
KERNELS = [f"{k}I{t}E" for k in ("26lstm_seq_persistent_kernel", "16lstm_cell_kernel")
           for t in ("f", "13__nv_bfloat16", "6__half")]


def _nvcc():
    found = shutil.which("nvcc")
    if found:
        return found
    for root in (os.environ.get("CUDA_HOME"), os.environ.get("CUDA_PATH"), "/usr/local/cuda"):
        if root and (Path(root) / "bin" / "nvcc").exists():
            return str(Path(root) / "bin" / "nvcc")
    return None


def _cuobjdump(nvcc):
    """cuobjdump from PATH, beside nvcc, or the copy that triton's wheel ships; else None."""
    candidates = [shutil.which("cuobjdump"), str(Path(nvcc).resolve().parent / "cuobjdump")]
    if _ext.has("triton"):
        spec = importlib.util.find_spec("triton")
        candidates.append(str(Path(spec.origin).parent / "backends" / "nvidia" / "bin" / "cuobjdump"))
    return next((c for c in candidates if c and Path(c).is_file() and os.access(c, os.X_OK)), None)


def _includes():
    import pybind11

    return [f"-I{pybind11.get_include()}", f"-I{sysconfig.get_paths()['include']}"]


NVCC = _nvcc()
needs_nvcc = pytest.mark.skipif(NVCC is None, reason="nvcc not found (no CUDA toolkit)")


@pytest.fixture(scope="module")
def build(tmp_path_factory):
    out = tmp_path_factory.mktemp("cuda")
    keep = out / "keep"
    keep.mkdir()
    obj = out / "lstm_cuda.o"
    cmd = [NVCC, "-c", "-std=c++17", "-O3", "-Xcompiler", "-fPIC", *_includes(),
           *[f"-gencode=arch=compute_{a},code=sm_{a}" for a in ARCHS],
           "-Xptxas", "-v", "--keep", "--keep-dir", str(keep), "-o", str(obj), str(SOURCE)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    return {"proc": proc, "obj": obj, "keep": keep, "cmd": " ".join(cmd)}


@needs_nvcc
def test_nvcc_compiles_for_sm80_and_sm90(build):
    proc = build["proc"]
    assert proc.returncode == 0, f"{build['cmd']}\n{proc.stderr[-6000:]}"
    assert build["obj"].is_file() and build["obj"].stat().st_size > 0


@needs_nvcc
def test_object_holds_every_kernel_and_the_bindings(build):
    data = build["obj"].read_bytes()
    missing = [k for k in KERNELS if k.encode() not in data]
    assert not missing, f"kernel instances missing from the object: {missing}"
    assert b"register_bindingsERN8pybind117module_E" in data


@needs_nvcc
def test_one_cubin_per_architecture_with_every_kernel(build):
    cuobjdump = _cuobjdump(NVCC)
    if cuobjdump is not None:
        listing = subprocess.run([cuobjdump, "--list-elf", str(build["obj"])], capture_output=True,
                                 text=True, timeout=60).stdout
        archs = sorted(int(a) for a in re.findall(r"\.sm_(\d+)\.cubin", listing))
        assert archs == sorted(ARCHS), listing
    cubins = sorted(build["keep"].glob("*.cubin"))
    assert len(cubins) == len(ARCHS), [c.name for c in cubins]
    for cubin in cubins:
        data = cubin.read_bytes()
        assert data[:4] == b"\x7fELF", cubin.name
        missing = [k for k in KERNELS if k.encode() not in data]
        assert not missing, f"{cubin.name} lacks {missing}"


@needs_nvcc
def test_ptxas_reports_no_register_spills(build):
    log = build["proc"].stdout + build["proc"].stderr
    entries = re.findall(r"Compiling entry function '(\w+)' for 'sm_(\d+)'.*?"
                         r"(\d+) bytes spill stores, (\d+) bytes spill loads", log, re.S)
    assert len(entries) == len(KERNELS) * len(ARCHS), log[-3000:]
    spilling = [(name, sm) for name, sm, st, ld in entries if int(st) or int(ld)]
    assert not spilling, spilling


@pytest.mark.skipif(shutil.which("c++") is None, reason="no C++ compiler")
def test_header_compiles_without_cuda_headers(tmp_path):
    unit = tmp_path / "uses_header.cpp"
    unit.write_text('#include "cuda/lstm_cuda.h"\n'
                    "void (*bind)(pybind11::module_&) = &mmengine::cuda::register_bindings;\n")
    proc = subprocess.run(["c++", "-std=c++17", "-fsyntax-only", f"-I{ROOT / 'csrc'}",
                           *_includes(), str(unit)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-4000:]


def test_cuda_lstm_without_gpu_names_what_is_missing():
    from mmengine.runtime.gpu_lstm import CUDA_BUILD_HINT, CudaLSTM

    native = _ext.native_extension()
    built_with_cuda = native is not None and hasattr(native, "lstm_sequence_cuda")
    if _ext.cuda_available() and built_with_cuda:
        pytest.skip("a GPU and the CUDA extension are present: CudaLSTM is constructible here")
    layers = [(torch.zeros(8, 3), torch.zeros(8, 2), torch.zeros(8), torch.zeros(8))]
    with pytest.raises(BackendUnavailableError) as info:
        CudaLSTM(layers, torch.float32)
    msg = str(info.value)
    if not _ext.cuda_available():
        assert "no CUDA device" in msg, msg
    if not built_with_cuda:
        assert CUDA_BUILD_HINT in msg and "MMENGINE_CUDA=1 pip install -e ." in msg, msg


# ------------------------------------------------------------------- emulation on CPU threads
EMU_HEADER = r"""
#pragma once
#include <barrier>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <thread>
#include <vector>
#include <math.h>

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __launch_bounds__(n)
#define __align__(n) alignas(n)

struct dim3 {
  unsigned x, y, z;
  dim3(unsigned x_ = 1, unsigned y_ = 1, unsigned z_ = 1) : x(x_), y(y_), z(z_) {}
};
typedef void* cudaStream_t;
enum cudaError_t { cudaSuccess = 0, cudaErrorCooperativeLaunchTooLarge = 720 };
enum cudaDeviceAttr {
  cudaDevAttrMultiProcessorCount, cudaDevAttrMaxSharedMemoryPerBlockOptin,
  cudaDevAttrCooperativeLaunch
};
enum cudaFuncAttribute { cudaFuncAttributeMaxDynamicSharedMemorySize };
enum cudaMemcpyKind { cudaMemcpyDeviceToDevice = 3 };

namespace emu {
struct Context {
  dim3 thread, block, bdim, gdim;
  unsigned char* smem;
  std::barrier<>* block_bar;
  std::barrier<>* grid_bar;
};
inline thread_local Context ctx;
inline int sm_count() {
  const char* v = std::getenv("MMENGINE_EMU_SMS");
  return v ? std::atoi(v) : 4;
}
// Runs blocks [first, first + count) of the grid at once, each CUDA thread a std::thread.
template <class P>
void run_blocks(void (*kernel)(P), const P& p, dim3 grid, dim3 block, std::size_t smem,
                unsigned first, unsigned count) {
  const unsigned nt = block.x * block.y * block.z;
  std::barrier<> grid_bar(count * nt);
  std::vector<std::unique_ptr<std::barrier<>>> bars;
  std::vector<std::vector<float>> mem;
  for (unsigned b = 0; b < count; ++b) {
    bars.push_back(std::make_unique<std::barrier<>>(nt));
    mem.emplace_back(smem / sizeof(float) + 4, -1.0e30f);
  }
  std::vector<std::thread> threads;
  for (unsigned b = 0; b < count; ++b) {
    const unsigned lin = first + b;
    const dim3 bid(lin % grid.x, (lin / grid.x) % grid.y, lin / (grid.x * grid.y));
    for (unsigned t = 0; t < nt; ++t) {
      threads.emplace_back([&, b, t, bid] {
        ctx = Context{dim3(t % block.x, (t / block.x) % block.y, t / (block.x * block.y)), bid,
                      block, grid, reinterpret_cast<unsigned char*>(mem[b].data()),
                      bars[b].get(), &grid_bar};
        kernel(p);
      });
    }
  }
  for (auto& th : threads) th.join();
}
}  // namespace emu

#define threadIdx (emu::ctx.thread)
#define blockIdx (emu::ctx.block)
#define blockDim (emu::ctx.bdim)
#define gridDim (emu::ctx.gdim)
inline void __syncthreads() { emu::ctx.block_bar->arrive_and_wait(); }
inline unsigned char* emulation_dynamic_smem() { return emu::ctx.smem; }
inline float __ldcg(const float* p) { return *p; }
inline int min(int a, int b) { return a < b ? a : b; }

inline const char* cudaGetErrorString(cudaError_t e) {
  return e == cudaSuccess ? "no error" : "emulated launch error";
}
inline cudaError_t cudaGetDevice(int* d) { *d = 0; return cudaSuccess; }
inline cudaError_t cudaGetLastError() { return cudaSuccess; }
inline cudaError_t cudaDeviceGetAttribute(int* v, cudaDeviceAttr a, int) {
  *v = a == cudaDevAttrMultiProcessorCount ? emu::sm_count()
       : a == cudaDevAttrMaxSharedMemoryPerBlockOptin ? 232448 : 1;
  return cudaSuccess;
}
template <class F> cudaError_t cudaFuncSetAttribute(F*, cudaFuncAttribute, int) {
  return cudaSuccess;
}
template <class F>
cudaError_t cudaOccupancyMaxActiveBlocksPerMultiprocessor(int* n, F*, int, std::size_t) {
  *n = 1;
  return cudaSuccess;
}
template <class P>
cudaError_t cudaLaunchKernel(void (*k)(P), dim3 g, dim3 b, void** args, std::size_t smem,
                             cudaStream_t) {
  for (unsigned i = 0; i < g.x * g.y * g.z; ++i)
    emu::run_blocks(k, *static_cast<P*>(args[0]), g, b, smem, i, 1);
  return cudaSuccess;
}
template <class P>
cudaError_t cudaLaunchCooperativeKernel(void (*k)(P), dim3 g, dim3 b, void** args,
                                        std::size_t smem, cudaStream_t) {
  const unsigned n = g.x * g.y * g.z;
  if (n > static_cast<unsigned>(emu::sm_count())) return cudaErrorCooperativeLaunchTooLarge;
  emu::run_blocks(k, *static_cast<P*>(args[0]), g, b, smem, 0, n);
  return cudaSuccess;
}
inline cudaError_t cudaMemcpyAsync(void* d, const void* s, std::size_t n, cudaMemcpyKind,
                                   cudaStream_t) {
  std::memcpy(d, s, n);
  return cudaSuccess;
}
inline cudaError_t cudaMemsetAsync(void* d, int v, std::size_t n, cudaStream_t) {
  std::memset(d, v, n);
  return cudaSuccess;
}

namespace cooperative_groups {
struct grid_group {
  void sync() { emu::ctx.grid_bar->arrive_and_wait(); }
};
inline grid_group this_grid() { return {}; }
}  // namespace cooperative_groups

struct __nv_bfloat16 {
  std::uint16_t bits;
  __nv_bfloat16() = default;
  __nv_bfloat16(float f) {
    std::uint32_t u;
    std::memcpy(&u, &f, 4);
    bits = static_cast<std::uint16_t>((u + 0x7fffu + ((u >> 16) & 1u)) >> 16);
  }
};
inline float __bfloat162float(__nv_bfloat16 v) {
  const std::uint32_t u = static_cast<std::uint32_t>(v.bits) << 16;
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}
struct __half {
  _Float16 v;
  __half() = default;
  __half(float f) : v(static_cast<_Float16>(f)) {}
};
inline float __half2float(__half h) { return static_cast<float>(h.v); }
"""
EMU_MODULE = ('#include "lstm_cuda.h"\n'
              "PYBIND11_MODULE(lstm_cuda_emu, m) { mmengine::cuda::register_bindings(m); }\n")


@pytest.fixture(scope="module")
def emulated(tmp_path_factory):
    cxx = shutil.which("c++") or shutil.which("g++")
    if cxx is None:
        pytest.skip("no C++ compiler")
    out = tmp_path_factory.mktemp("emu")
    stubs = out / "stubs"
    stubs.mkdir()
    (stubs / "emu_cuda.h").write_text(EMU_HEADER)
    for name in ("cuda_runtime.h", "cuda_bf16.h", "cuda_fp16.h", "cooperative_groups.h"):
        (stubs / name).write_text('#pragma once\n#include "emu_cuda.h"\n')
    (out / "module.cpp").write_text(EMU_MODULE)
    target = out / f"lstm_cuda_emu{sysconfig.get_config_var('EXT_SUFFIX')}"
    cmd = [cxx, "-std=c++20", "-O1", "-shared", "-fPIC", "-pthread", "-DMMENGINE_CUDA_EMULATION",
           f"-I{stubs}", f"-I{SOURCE.parent}", *_includes(), "-x", "c++", str(SOURCE),
           str(out / "module.cpp"), "-o", str(target)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, f"{' '.join(cmd)}\n{proc.stderr[-6000:]}"
    spec = importlib.util.spec_from_file_location("lstm_cuda_emu", target)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def _judge(out, refs, dtype):
    err = (out.double() - refs[0]).abs().max().item() if refs[0].numel() else 0.0
    return err, tolerance(refs[0], refs[1], dtype)


def _layer_ref(gx, w_hh, b_hh, h0, c0):
    eye = torch.eye(gx.shape[-1], dtype=gx.dtype)
    y, (h, c) = lstm_layer_ref(gx, eye, w_hh, torch.zeros_like(b_hh), b_hh, h0, c0)
    return torch.cat([y.flatten(), h.flatten(), c.flatten()])


@pytest.mark.parametrize("B,T,H,dt,init", [
    (1, 5, 17, "fp32", True), (3, 5, 33, "bf16", True), (40, 3, 33, "fp32", False),
    (3, 4, 33, "fp16", True), (2, 0, 17, "fp32", True)])
def test_emulated_sequence_kernel_matches_reference(emulated, B, T, H, dt, init):
    dtype = DTYPES[dt]
    gen = torch.Generator().manual_seed(B * 100 + H)
    rnd = lambda *s: torch.randn(*s, generator=gen, dtype=torch.float64)  # noqa: E731
    gx, w_hh, b_hh = rnd(B, T, 4 * H), rnd(4 * H, H) / H ** 0.5, rnd(4 * H)
    h0, c0 = (rnd(B, H), rnd(B, H)) if init else (None, None)
    args = [gx.float().contiguous(), w_hh.to(dtype).contiguous(), b_hh.float(),
            h0.float() if init else None, c0.float() if init else None]
    y, h_T, c_T = torch.full((B, T, H), float("nan")), torch.empty(B, H), torch.empty(B, H)
    ptr = lambda t: t.data_ptr() if t is not None else 0  # noqa: E731
    emulated.lstm_sequence_cuda(*map(ptr, args), ptr(y), ptr(h_T), ptr(c_T), B, T, H,
                                str(dtype), 0)
    out = torch.cat([y.flatten(), h_T.flatten(), c_T.flatten()])
    cast = lambda t, d: t.to(d) if t is not None else None  # noqa: E731
    refs = [_layer_ref(gx.to(d), w_hh.to(d), b_hh.to(d), cast(h0, d), cast(c0, d))
            for d in (torch.float64, dtype)]
    err, tol = _judge(out, refs, dtype)
    assert err <= tol, f"B={B} T={T} H={H} {dt}: max diff {err:.3g} > {tol:.3g}"


@pytest.mark.parametrize("B,H,dt", [(1, 17, "fp32"), (3, 33, "bf16"), (20, 33, "fp16")])
def test_emulated_cell_kernel_matches_reference(emulated, B, H, dt):
    dtype = DTYPES[dt]
    gen = torch.Generator().manual_seed(B * 100 + H + 1)
    rnd = lambda *s: torch.randn(*s, generator=gen, dtype=torch.float64)  # noqa: E731
    gx, h, c = rnd(B, 4 * H), rnd(B, H), rnd(B, H)
    w_hh, b_hh = rnd(4 * H, H) / H ** 0.5, rnd(4 * H)
    ins = [gx.float(), h.float(), c.float(), w_hh.to(dtype).contiguous(), b_hh.float()]
    h_out, c_out = torch.empty(B, H), torch.empty(B, H)
    emulated.lstm_cell_cuda(*(t.data_ptr() for t in ins), h_out.data_ptr(), c_out.data_ptr(),
                            B, H, dt.replace("fp", "float").replace("bf16", "bfloat16"), 0)
    refs = [torch.cat([t.flatten() for t in lstm_cell_ref(
        gx.to(d), h.to(d), c.to(d), w_hh.to(d), b_hh.to(d))]) for d in (torch.float64, dtype)]
    err, tol = _judge(torch.cat([h_out.flatten(), c_out.flatten()]), refs, dtype)
    assert err <= tol, f"B={B} H={H} {dt}: max diff {err:.3g} > {tol:.3g}"


def test_emulated_plan_splits_hidden_units_and_batch_within_the_resident_blocks(emulated):
    plan = emulated.lstm_sequence_cuda_plan(40, 33, "float32")
    assert plan["n_hblocks"] * plan["n_groups"] <= plan["max_resident"] == 4, plan
    assert plan["n_groups"] >= 2 and plan["n_hblocks"] >= 2, plan
    with pytest.raises(ValueError, match="weight dtype"):
        emulated.lstm_sequence_cuda_plan(1, 17, "int8")
