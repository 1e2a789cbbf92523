// CUDA LSTM kernels: fused cell and persistent sequence (see lstm_cuda.h for the contract).
//
// Work split, shared by both kernels: a block owns block_h hidden units, i.e. R = 4·block_h
// rows of W_hh (gate g, unit j -> row g·H + j), which it copies into shared memory once, and
// processes batch tiles of block_b rows. For one tile and one step it
//   1. loads h_{t-1} (block_b × H, fp32) into shared memory,
//   2. computes the R × block_b gate pre-activations: thread (r, q) = (tid % R, tid / R) owns
//      gate row r (its bias in a register); the Q = 256 / R threads of a row split the batch
//      rows (qb = q % QB: rows qb, qb + QB, …, four at a time, reading W[r][k] once per k for
//      the four) and the inputs k (qk = q / QB: one of QK contiguous ranges), QB·QK = Q, QB the
//      smallest power of two covering the rows four at a time; fp32 accumulation, the QK
//      partial sums land in shared memory,
//   3. sums the partials and applies the nonlinearities and the state update for
//      block_b × block_h cells.
// The persistent kernel loops over T steps inside one cooperative launch: block
// (hb, group) keeps its W slice in shared memory for the whole sequence, writes h_t into y
// and the cell states into c_T (only the owning thread reads them back), and all blocks meet at
// cooperative_groups' grid.sync() between steps, after which every block reads the whole
// h_t from y (through L2: __ldcg). A cooperative launch fails, rather than deadlocks, when the
// grid cannot be resident at once; lstm_sequence_plan sizes the grid from the occupancy API.
#include "lstm_cuda.h"

#include <cooperative_groups.h>
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <stdexcept>
#include <string>
#include <utility>

namespace cg = cooperative_groups;
namespace py = pybind11;

namespace mmengine::cuda {
namespace detail {

constexpr int kThreads = 256;
constexpr int kMaxBlockH = kThreads / 4;  // R = 4·block_h rows ≤ threads: one row per thread
constexpr int kAccRows = 4;               // batch rows a thread accumulates per pass over k

__device__ __forceinline__ float to_float(float v) { return v; }
__device__ __forceinline__ float to_float(__nv_bfloat16 v) { return __bfloat162float(v); }
__device__ __forceinline__ float to_float(__half v) { return __half2float(v); }

__device__ __forceinline__ float sigmoid(float x) { return 1.0f / (1.0f + expf(-x)); }

// Sizes of one block's work and its shared-memory layout.
struct Tile {
  int B, H, block_h, block_b, ldw;  // ldw: W row stride in shared memory (elements)
  int hb;                           // hidden block index
};

// Sources and destinations of one step (row strides in elements; last dims contiguous).
struct StepIO {
  const float* gx;       // (B, ≥4H) of this step
  std::int64_t gx_stride;
  const float* h_src;    // (B, H) previous hidden state, null = zeros
  std::int64_t h_stride;
  const float* c_src;    // (B, H) previous cell state (row stride H), null = zeros
  float* c_dst;          // (B, H) row stride H
  float* h_dst;          // (B, H) new hidden state
  std::int64_t h_dst_stride;
  float* h_last;         // (B, H) row stride H, or null
};

template <typename WT>
__device__ void load_w_slice(WT* ws, const WT* w_hh, const Tile& tl) {
  const int R = 4 * tl.block_h;
  for (int idx = threadIdx.x; idx < R * tl.H; idx += blockDim.x) {
    const int r = idx / tl.H;
    const int k = idx - r * tl.H;
    const int g = r / tl.block_h;
    const int j = tl.hb * tl.block_h + (r - g * tl.block_h);
    ws[r * tl.ldw + k] = j < tl.H ? w_hh[static_cast<std::int64_t>(g * tl.H + j) * tl.H + k]
                                  : WT(0.0f);
  }
}

__device__ float gate_bias(const float* b_hh, const Tile& tl) {
  const int R = 4 * tl.block_h;
  const int r = threadIdx.x % R;
  const int g = r / tl.block_h;
  const int j = tl.hb * tl.block_h + (r - g * tl.block_h);
  return (b_hh != nullptr && j < tl.H) ? b_hh[g * tl.H + j] : 0.0f;
}

// Step 2's thread split for R rows and BB batch rows: QB batch groups × QK input ranges.
__host__ __device__ inline void split_threads(int R, int BB, int* QB, int* QK) {
  const int Q = kThreads / R;
  const int need = (BB + kAccRows - 1) / kAccRows;
  int qb = 1;
  while (qb < need && qb < Q) qb *= 2;
  *QB = qb;
  *QK = Q / qb;
}

// One step for batch rows [b0, b0 + block_b): steps 1-3 of the header comment.
template <typename WT>
__device__ void step_tile(const WT* ws, float* hs, float* gs, float bias, int b0, const Tile& tl,
                          const StepIO& io) {
  const int H = tl.H, BB = tl.block_b, BH = tl.block_h, R = 4 * BH;
  for (int idx = threadIdx.x; idx < BB * H; idx += blockDim.x) {
    const int b = idx / H;
    const int bg = b0 + b;
    float v = 0.0f;
    if (io.h_src != nullptr && bg < tl.B) v = __ldcg(io.h_src + bg * io.h_stride + (idx - b * H));
    hs[idx] = v;
  }
  __syncthreads();

  const int r = threadIdx.x % R;
  const int q = threadIdx.x / R;
  int QB, QK;
  split_threads(R, BB, &QB, &QK);
  const int qb = q % QB;
  const int qk = q / QB;
  const int k_chunk = (H + QK - 1) / QK;
  const int k0 = min(H, qk * k_chunk);
  const int k1 = min(H, k0 + k_chunk);
  const int g = r / BH;
  const int j = tl.hb * BH + (r - g * BH);
  const WT* wrow = ws + r * tl.ldw;
  for (int base = qb; base < BB; base += kAccRows * QB) {
    const float* hrow[kAccRows];
    float acc[kAccRows];
#pragma unroll
    for (int u = 0; u < kAccRows; ++u) {
      hrow[u] = hs + min(base + u * QB, BB - 1) * H;
      acc[u] = 0.0f;
    }
    for (int k = k0; k < k1; ++k) {
      const float w = to_float(wrow[k]);
#pragma unroll
      for (int u = 0; u < kAccRows; ++u) acc[u] = fmaf(w, hrow[u][k], acc[u]);
    }
#pragma unroll
    for (int u = 0; u < kAccRows; ++u) {
      const int b = base + u * QB;
      if (b < BB) {
        float v = acc[u];
        if (qk == 0) {
          const int bg = b0 + b;
          v += bias + ((bg < tl.B && j < H) ? io.gx[bg * io.gx_stride + g * H + j] : 0.0f);
        }
        gs[(qk * BB + b) * R + r] = v;
      }
    }
  }
  __syncthreads();

  for (int idx = threadIdx.x; idx < BB * BH; idx += blockDim.x) {
    const int b = idx / BH;
    const int jj = idx - b * BH;
    const int bg = b0 + b;
    const int jg = tl.hb * BH + jj;
    if (bg >= tl.B || jg >= H) continue;
    float pre[4] = {0.0f, 0.0f, 0.0f, 0.0f};  // i, f, g, o
    for (int s = 0; s < QK; ++s) {
      const float* part = gs + (s * BB + b) * R + jj;
#pragma unroll
      for (int gate = 0; gate < 4; ++gate) pre[gate] += part[gate * BH];
    }
    const std::int64_t o = static_cast<std::int64_t>(bg) * H + jg;
    const float c_prev = io.c_src != nullptr ? io.c_src[o] : 0.0f;
    const float c = sigmoid(pre[1]) * c_prev + sigmoid(pre[0]) * tanhf(pre[2]);
    const float h = sigmoid(pre[3]) * tanhf(c);
    io.c_dst[o] = c;
    io.h_dst[bg * io.h_dst_stride + jg] = h;
    if (io.h_last != nullptr) io.h_last[o] = h;
  }
  __syncthreads();  // hs and gs are reused by the next tile
}

template <typename WT>
struct SeqKernelParams {
  const float* gx;
  const WT* w_hh;
  const float* b_hh;
  const float* h0;
  const float* c0;
  float* y;
  float* h_T;
  float* c_T;
  int B, T, H, block_h, block_b, ldw, n_hblocks, n_groups;
};

// The block's dynamic shared memory. MMENGINE_CUDA_EMULATION is defined only by
// tests/test_cuda_compile.py, which compiles this file with a host compiler and stand-in CUDA
// headers to run the kernels on CPU threads (an extern __shared__ array has no host meaning).
__device__ __forceinline__ unsigned char* dynamic_smem() {
#ifdef MMENGINE_CUDA_EMULATION
  return emulation_dynamic_smem();
#else
  extern __shared__ __align__(16) unsigned char smem[];
  return smem;
#endif
}

// Shared memory of a block: its W slice (4·block_h rows of ldw elements, rounded up to 16
// bytes), then h (block_b × H) and the partial gates (QK × block_b × 4·block_h), fp32.
__host__ __device__ inline std::size_t w_smem_bytes(int block_h, int ldw, int elem_bytes) {
  const std::size_t bytes = static_cast<std::size_t>(4 * block_h) * ldw * elem_bytes;
  return (bytes + 15) / 16 * 16;
}

template <typename WT>
__global__ void __launch_bounds__(kThreads) lstm_seq_persistent_kernel(SeqKernelParams<WT> p) {
  unsigned char* smem = dynamic_smem();
  const Tile tl{p.B, p.H, p.block_h, p.block_b, p.ldw, static_cast<int>(blockIdx.x) % p.n_hblocks};
  const int group = static_cast<int>(blockIdx.x) / p.n_hblocks;
  WT* ws = reinterpret_cast<WT*>(smem);
  float* hs = reinterpret_cast<float*>(smem + w_smem_bytes(p.block_h, p.ldw, sizeof(WT)));
  float* gs = hs + p.block_b * p.H;
  load_w_slice(ws, p.w_hh, tl);
  const float bias = gate_bias(p.b_hh, tl);
  __syncthreads();

  cg::grid_group grid = cg::this_grid();
  const int n_tiles = (p.B + p.block_b - 1) / p.block_b;
  const std::int64_t y_stride = static_cast<std::int64_t>(p.T) * p.H;
  for (int t = 0; t < p.T; ++t) {
    StepIO io;
    io.gx = p.gx + static_cast<std::int64_t>(t) * 4 * p.H;
    io.gx_stride = static_cast<std::int64_t>(p.T) * 4 * p.H;
    io.h_src = t == 0 ? p.h0 : p.y + static_cast<std::int64_t>(t - 1) * p.H;
    io.h_stride = t == 0 ? p.H : y_stride;
    io.c_src = t == 0 ? p.c0 : p.c_T;
    io.c_dst = p.c_T;
    io.h_dst = p.y + static_cast<std::int64_t>(t) * p.H;
    io.h_dst_stride = y_stride;
    io.h_last = t == p.T - 1 ? p.h_T : nullptr;
    for (int tile = group; tile < n_tiles; tile += p.n_groups) {
      step_tile(ws, hs, gs, bias, tile * p.block_b, tl, io);
    }
    if (t + 1 < p.T) grid.sync();
  }
}

template <typename WT>
struct CellKernelParams {
  const float* gx;
  const float* h;
  const float* c;
  const WT* w_hh;
  const float* b_hh;
  float* h_out;
  float* c_out;
  int B, H, block_h, block_b, ldw;
};

template <typename WT>
__global__ void __launch_bounds__(kThreads) lstm_cell_kernel(CellKernelParams<WT> p) {
  unsigned char* smem = dynamic_smem();
  const Tile tl{p.B, p.H, p.block_h, p.block_b, p.ldw, static_cast<int>(blockIdx.x)};
  WT* ws = reinterpret_cast<WT*>(smem);
  float* hs = reinterpret_cast<float*>(smem + w_smem_bytes(p.block_h, p.ldw, sizeof(WT)));
  float* gs = hs + p.block_b * p.H;
  load_w_slice(ws, p.w_hh, tl);
  const float bias = gate_bias(p.b_hh, tl);
  __syncthreads();
  const StepIO io{p.gx, 4 * static_cast<std::int64_t>(p.H), p.h, p.H, p.c, p.c_out,
                  p.h_out, p.H, nullptr};
  step_tile(ws, hs, gs, bias, static_cast<int>(blockIdx.y) * p.block_b, tl, io);
}

// ---------------------------------------------------------------------------------------------
// host side

void check(cudaError_t err, const char* what) {
  if (err != cudaSuccess) {
    throw std::runtime_error(std::string(what) + ": " + cudaGetErrorString(err));
  }
}

// W row stride in shared memory: an odd number of 32-bit words, so the rows that the threads of
// a warp read at the same k fall in different banks.
int w_ldw(int H, WeightType wt) {
  if (wt == WeightType::kFloat32) return H | 1;
  return 2 * (((H + 1) / 2) | 1);
}

std::size_t elem_size(WeightType wt) { return wt == WeightType::kFloat32 ? 4 : 2; }

std::size_t smem_bytes(int block_h, int block_b, int H, WeightType wt) {
  int QB = 0, QK = 0;
  split_threads(4 * block_h, block_b, &QB, &QK);
  return w_smem_bytes(block_h, w_ldw(H, wt), static_cast<int>(elem_size(wt))) +
         sizeof(float) * static_cast<std::size_t>(block_b) * (H + QK * 4 * block_h);
}

int device_attr(cudaDeviceAttr attr) {
  int dev = 0, value = 0;
  check(cudaGetDevice(&dev), "cudaGetDevice");
  check(cudaDeviceGetAttribute(&value, attr, dev), "cudaDeviceGetAttribute");
  return value;
}

int smem_limit() { return device_attr(cudaDevAttrMaxSharedMemoryPerBlockOptin); }

template <typename WT>
void launch_cell(const LstmCellArgs& a, WeightType wt, cudaStream_t stream) {
  const std::size_t limit = static_cast<std::size_t>(smem_limit());
  const int block_b = std::max(1, std::min(a.B, 16));
  int block_h = 16;
  while (block_h > 1 && smem_bytes(block_h, block_b, a.H, wt) > limit) block_h /= 2;
  const std::size_t smem = smem_bytes(block_h, block_b, a.H, wt);
  if (smem > limit) {
    throw std::runtime_error("lstm_cell_cuda: H = " + std::to_string(a.H) +
                             " needs more shared memory than the device has");
  }
  auto* kernel = &lstm_cell_kernel<WT>;
  check(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                             static_cast<int>(smem)), "cudaFuncSetAttribute");
  CellKernelParams<WT> p{a.gx, a.h, a.c, static_cast<const WT*>(a.w_hh), a.b_hh, a.h_out,
                         a.c_out, a.B, a.H, block_h, block_b, w_ldw(a.H, wt)};
  void* args[] = {&p};
  const dim3 grid((a.H + block_h - 1) / block_h, (a.B + block_b - 1) / block_b);
  check(cudaLaunchKernel(kernel, grid, dim3(kThreads), args, smem, stream),
        "lstm_cell_kernel launch");
}

// Among block_h = 1, 2, 4, … whose shared memory fits: the most blocks at work
// (n_hblocks × n_groups, at most what can be resident), ties to the larger block_h (fewer
// blocks read each h_t).
template <typename WT>
LstmSeqPlan plan_sequence(int B, int H, WeightType wt) {
  if (device_attr(cudaDevAttrCooperativeLaunch) == 0) {
    throw std::runtime_error("this device does not support cooperative launches");
  }
  auto* kernel = &lstm_seq_persistent_kernel<WT>;
  const int n_sm = device_attr(cudaDevAttrMultiProcessorCount);
  const int limit = smem_limit();
  const int block_b = std::max(1, std::min({B, 32, 12288 / H}));
  const int n_tiles = (B + block_b - 1) / block_b;
  LstmSeqPlan best{0, block_b, 0, 0, 0, 0};
  long best_active = 0;
  for (int block_h = 1; block_h <= kMaxBlockH; block_h *= 2) {
    const std::size_t smem = smem_bytes(block_h, block_b, H, wt);
    if (smem > static_cast<std::size_t>(limit)) break;
    check(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                               static_cast<int>(smem)), "cudaFuncSetAttribute");
    int per_sm = 0;
    check(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, kernel, kThreads, smem),
          "cudaOccupancyMaxActiveBlocksPerMultiprocessor");
    const int resident = per_sm * n_sm;
    const int n_h = (H + block_h - 1) / block_h;
    if (n_h > resident) continue;
    const int groups = std::min(n_tiles, resident / n_h);
    const long active = static_cast<long>(n_h) * groups;
    if (active >= best_active) {
      best_active = active;
      best = LstmSeqPlan{block_h, block_b, n_h, groups, static_cast<int>(smem), resident};
    }
    if (n_h == 1) break;
  }
  if (best.block_h == 0) {
    throw std::runtime_error("lstm_sequence_cuda: H = " + std::to_string(H) +
                             " does not fit: a block's W_hh slice exceeds shared memory or the "
                             "grid exceeds the resident blocks");
  }
  check(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                             best.smem_bytes), "cudaFuncSetAttribute");
  return best;
}

template <typename WT>
void launch_seq(const LstmSeqArgs& a, WeightType wt, cudaStream_t stream) {
  const LstmSeqPlan plan = plan_sequence<WT>(a.B, a.H, wt);
  SeqKernelParams<WT> p{a.gx, static_cast<const WT*>(a.w_hh), a.b_hh, a.h0, a.c0, a.y, a.h_T,
                        a.c_T, a.B, a.T, a.H, plan.block_h, plan.block_b, w_ldw(a.H, wt),
                        plan.n_hblocks, plan.n_groups};
  void* args[] = {&p};
  check(cudaLaunchCooperativeKernel(&lstm_seq_persistent_kernel<WT>,
                                    dim3(plan.n_hblocks * plan.n_groups), dim3(kThreads), args,
                                    plan.smem_bytes, stream),
        "lstm_seq_persistent_kernel cooperative launch");
}

}  // namespace detail

using namespace detail;

WeightType parse_weight_type(const std::string& name) {
  const std::string n = name.rfind("torch.", 0) == 0 ? name.substr(6) : name;
  if (n == "float32" || n == "float") return WeightType::kFloat32;
  if (n == "bfloat16") return WeightType::kBFloat16;
  if (n == "float16" || n == "half") return WeightType::kFloat16;
  throw std::invalid_argument("weight dtype must be float32, bfloat16 or float16, got " + name);
}

void lstm_cell(const LstmCellArgs& args, WeightType wt, std::uintptr_t stream) {
  if (args.B <= 0 || args.H <= 0) return;
  auto s = reinterpret_cast<cudaStream_t>(stream);
  switch (wt) {
    case WeightType::kFloat32: launch_cell<float>(args, wt, s); break;
    case WeightType::kBFloat16: launch_cell<__nv_bfloat16>(args, wt, s); break;
    default: launch_cell<__half>(args, wt, s); break;
  }
}

LstmSeqPlan lstm_sequence_plan(int B, int H, WeightType wt) {
  if (B <= 0 || H <= 0) throw std::invalid_argument("lstm_sequence_plan: B and H must be > 0");
  switch (wt) {
    case WeightType::kFloat32: return plan_sequence<float>(B, H, wt);
    case WeightType::kBFloat16: return plan_sequence<__nv_bfloat16>(B, H, wt);
    default: return plan_sequence<__half>(B, H, wt);
  }
}

void lstm_sequence(const LstmSeqArgs& args, WeightType wt, std::uintptr_t stream) {
  if (args.B <= 0 || args.H <= 0) return;
  auto s = reinterpret_cast<cudaStream_t>(stream);
  const std::size_t state_bytes = sizeof(float) * static_cast<std::size_t>(args.B) * args.H;
  if (args.T <= 0) {
    for (auto [dst, src] : {std::pair{args.h_T, args.h0}, std::pair{args.c_T, args.c0}}) {
      if (src != nullptr) {
        check(cudaMemcpyAsync(dst, src, state_bytes, cudaMemcpyDeviceToDevice, s), "copy state");
      } else {
        check(cudaMemsetAsync(dst, 0, state_bytes, s), "zero state");
      }
    }
    return;
  }
  switch (wt) {
    case WeightType::kFloat32: launch_seq<float>(args, wt, s); break;
    case WeightType::kBFloat16: launch_seq<__nv_bfloat16>(args, wt, s); break;
    default: launch_seq<__half>(args, wt, s); break;
  }
}

namespace {

template <typename T>
T* ptr(std::uintptr_t p) {
  return reinterpret_cast<T*>(p);
}

}  // namespace

void register_bindings(py::module_& m) {
  m.def(
      "lstm_cell_cuda",
      [](std::uintptr_t gx, std::uintptr_t h, std::uintptr_t c, std::uintptr_t w_hh,
         std::uintptr_t b_hh, std::uintptr_t h_out, std::uintptr_t c_out, int B, int H,
         const std::string& dtype, std::uintptr_t stream) {
        const WeightType wt = parse_weight_type(dtype);
        const LstmCellArgs a{ptr<const float>(gx), ptr<const float>(h), ptr<const float>(c),
                             ptr<const void>(w_hh), ptr<const float>(b_hh), ptr<float>(h_out),
                             ptr<float>(c_out), B, H};
        py::gil_scoped_release release;
        lstm_cell(a, wt, stream);
      },
      py::arg("gx_ptr"), py::arg("h_ptr"), py::arg("c_ptr"), py::arg("w_hh_ptr"),
      py::arg("b_hh_ptr"), py::arg("h_out_ptr"), py::arg("c_out_ptr"), py::arg("B"),
      py::arg("H"), py::arg("dtype"), py::arg("stream"),
      "One fused LSTM step on the GPU (asynchronous on `stream`). Device pointers as ints: gx "
      "(B, 4H), h, c (B, H) float32; w_hh (4H, H) in `dtype`; b_hh (4H,) float32 or 0; "
      "outputs h_out, c_out (B, H) float32. All contiguous.");
  m.def(
      "lstm_sequence_cuda",
      [](std::uintptr_t gx, std::uintptr_t w_hh, std::uintptr_t b_hh, std::uintptr_t h0,
         std::uintptr_t c0, std::uintptr_t y, std::uintptr_t h_T, std::uintptr_t c_T, int B,
         int T, int H, const std::string& dtype, std::uintptr_t stream) {
        const WeightType wt = parse_weight_type(dtype);
        const LstmSeqArgs a{ptr<const float>(gx), ptr<const void>(w_hh), ptr<const float>(b_hh),
                            ptr<const float>(h0), ptr<const float>(c0), ptr<float>(y),
                            ptr<float>(h_T), ptr<float>(c_T), B, T, H};
        py::gil_scoped_release release;
        lstm_sequence(a, wt, stream);
      },
      py::arg("gx_ptr"), py::arg("w_hh_ptr"), py::arg("b_hh_ptr"), py::arg("h0_ptr"),
      py::arg("c0_ptr"), py::arg("y_ptr"), py::arg("h_T_ptr"), py::arg("c_T_ptr"), py::arg("B"),
      py::arg("T"), py::arg("H"), py::arg("dtype"), py::arg("stream"),
      "One LSTM layer over T steps in one cooperative launch (asynchronous on `stream`). Device "
      "pointers as ints: gx (B, T, 4H) float32; w_hh (4H, H) in `dtype`; b_hh (4H,), h0, c0 "
      "(B, H) float32 or 0; outputs y (B, T, H), h_T, c_T (B, H) float32. All contiguous.");
  m.def(
      "lstm_sequence_cuda_plan",
      [](int B, int H, const std::string& dtype) {
        const LstmSeqPlan p = lstm_sequence_plan(B, H, parse_weight_type(dtype));
        py::dict d;
        d["block_h"] = p.block_h;
        d["block_b"] = p.block_b;
        d["n_hblocks"] = p.n_hblocks;
        d["n_groups"] = p.n_groups;
        d["smem_bytes"] = p.smem_bytes;
        d["max_resident"] = p.max_resident;
        return d;
      },
      py::arg("B"), py::arg("H"), py::arg("dtype"),
      "The work split lstm_sequence_cuda uses on the current device, as a dict.");
}

}  // namespace mmengine::cuda
