// LSTM stack kernels, compiled once per ISA (CMake sets the -m flags and MMENGINE_ISA_NS).
//
// Per time chunk of Tc steps and per layer:
//   1. input projection G = X Wihᵀ + (b_ih + b_hh) for the chunk: one register-blocked GEMM
//      over all (batch, step) rows, written in the packed gate-column order;
//   2. Tc recurrent steps: for each unit block, a small GEMM (GEMV at batch 1) over Whh
//      starting from G, then the cell (i, f, g, o activations and the c, h update) on the
//      64 gate columns while they are in L1.
// Threads own either a range of batch rows (no per-step sync) or, at small batch, a range of
// unit blocks (each thread keeps its part of Whh in its own L2; one spin barrier per step).
// Accumulation order over k is the same in every tile shape and thread split, so results do
// not depend on the thread count or the batch composition.
#include <algorithm>
#include <cstring>

#include "common/simd.h"
#include "lstm/lstm.h"

#ifdef _OPENMP
#include <omp.h>
#endif

#ifndef MMENGINE_ISA_NS
#error "MMENGINE_ISA_NS must name the ISA namespace (set by CMake)"
#endif

namespace mmengine {
namespace lstm {
namespace MMENGINE_ISA_NS {

using namespace mmengine::MMENGINE_ISA_NS::simd;

namespace {

// kPairBlocks: at batch 1, two unit blocks per tile (8 independent accumulator chains)
#if defined(__AVX512F__)
constexpr bool kPairBlocks = true;
constexpr int kMR = 6;  // rows per tile: 6 x 4 zmm accumulators
constexpr int nv_for(int mr) { return (void)mr, 4; }
#elif defined(__AVX2__)
constexpr bool kPairBlocks = false;
constexpr int kMR = 6;  // 6 rows x 16 columns (12 ymm), or 1 row x 64 columns
constexpr int nv_for(int mr) { return mr == 1 ? 8 : 2; }
#else
constexpr bool kPairBlocks = false;
constexpr int kMR = 4;
constexpr int nv_for(int mr) { return (void)mr, 8; }
#endif

enum Kind { kF32 = 0, kBF16 = 1, kDP = 2 };

// C[m, q*64 + c] = init[m*ldi + q*64 + c] + sum_k A[m][k] * W[q*bstride + k*64 + c]
// for m < MR rows, q < NB unit blocks; W packed fp32 (K, 64) per block.
template <int MR, int NB, int NV>
MM_INLINE void tile_f32(int K, const float* const* arow, const float* Wp, ptrdiff_t bstride,
                        const float* init, ptrdiff_t ldi, float* C, ptrdiff_t ldc) {
  const float* a[MR];
  for (int m = 0; m < MR; ++m) a[m] = arow[m];
  for (int c0 = 0; c0 < kBlockCols; c0 += NV * W) {
    VF acc[MR][NB][NV];
#pragma GCC unroll 8
    for (int m = 0; m < MR; ++m)
#pragma GCC unroll 2
      for (int q = 0; q < NB; ++q)
#pragma GCC unroll 8
        for (int v = 0; v < NV; ++v) acc[m][q][v] = vload(init + m * ldi + q * 64 + c0 + v * W);
    const float* w = Wp + c0;
    for (int k = 0; k < K; ++k, w += kBlockCols) {
      VF b[NB][NV];
#pragma GCC unroll 2
      for (int q = 0; q < NB; ++q)
#pragma GCC unroll 8
        for (int v = 0; v < NV; ++v) b[q][v] = vload(w + q * bstride + v * W);
#pragma GCC unroll 8
      for (int m = 0; m < MR; ++m) {
        const VF x = vset1(a[m][k]);
#pragma GCC unroll 2
        for (int q = 0; q < NB; ++q)
#pragma GCC unroll 8
          for (int v = 0; v < NV; ++v) acc[m][q][v] = vfma(x, b[q][v], acc[m][q][v]);
      }
    }
#pragma GCC unroll 8
    for (int m = 0; m < MR; ++m)
#pragma GCC unroll 2
      for (int q = 0; q < NB; ++q)
#pragma GCC unroll 8
        for (int v = 0; v < NV; ++v) vstore(C + m * ldc + q * 64 + c0 + v * W, acc[m][q][v]);
  }
}

// As tile_f32 with bf16 weights packed (ceil(K/2), 64, 2), widened to fp32 on load; the
// k order is kept, so the result equals the fp32 kernel run on the bf16-rounded weights.
template <int MR, int NB, int NV>
MM_INLINE void tile_bf16(int K, const float* const* arow, const uint16_t* Wp, ptrdiff_t bstride,
                         const float* init, ptrdiff_t ldi, float* C, ptrdiff_t ldc) {
  const float* a[MR];
  for (int m = 0; m < MR; ++m) a[m] = arow[m];
  for (int c0 = 0; c0 < kBlockCols; c0 += NV * W) {
    VF acc[MR][NB][NV];
#pragma GCC unroll 8
    for (int m = 0; m < MR; ++m)
#pragma GCC unroll 2
      for (int q = 0; q < NB; ++q)
#pragma GCC unroll 8
        for (int v = 0; v < NV; ++v) acc[m][q][v] = vload(init + m * ldi + q * 64 + c0 + v * W);
    const uint16_t* w = Wp + 2 * c0;
    int k = 0;
    for (; k + 1 < K; k += 2, w += 2 * kBlockCols) {
#pragma GCC unroll 2
      for (int q = 0; q < NB; ++q)
#pragma GCC unroll 8
        for (int v = 0; v < NV; ++v) {
          VF lo, hi;
          vload_bf16x2(w + q * bstride + 2 * v * W, lo, hi);
#pragma GCC unroll 8
          for (int m = 0; m < MR; ++m) {
            acc[m][q][v] = vfma(vset1(a[m][k]), lo, acc[m][q][v]);
            acc[m][q][v] = vfma(vset1(a[m][k + 1]), hi, acc[m][q][v]);
          }
        }
    }
    if (k < K) {
#pragma GCC unroll 2
      for (int q = 0; q < NB; ++q)
#pragma GCC unroll 8
        for (int v = 0; v < NV; ++v) {
          VF lo, hi;
          vload_bf16x2(w + q * bstride + 2 * v * W, lo, hi);
#pragma GCC unroll 8
          for (int m = 0; m < MR; ++m) acc[m][q][v] = vfma(vset1(a[m][k]), lo, acc[m][q][v]);
        }
    }
#pragma GCC unroll 8
    for (int m = 0; m < MR; ++m)
#pragma GCC unroll 2
      for (int q = 0; q < NB; ++q)
#pragma GCC unroll 8
        for (int v = 0; v < NV; ++v) vstore(C + m * ldc + q * 64 + c0 + v * W, acc[m][q][v]);
  }
}

#if defined(__AVX512BF16__)
// bf16 x bf16 pairs with fp32 accumulation (vdpbf16ps). A rows are bf16 with K2 pairs.
template <int MR, int NB>
MM_INLINE void tile_dp(int K2, const uint16_t* const* arow, const uint16_t* Wp, ptrdiff_t bstride,
                       const float* init, ptrdiff_t ldi, float* C, ptrdiff_t ldc) {
  const uint16_t* a[MR];
  for (int m = 0; m < MR; ++m) a[m] = arow[m];
  __m512 acc[MR][NB][4];
#pragma GCC unroll 8
  for (int m = 0; m < MR; ++m)
#pragma GCC unroll 2
    for (int q = 0; q < NB; ++q)
#pragma GCC unroll 4
      for (int v = 0; v < 4; ++v) acc[m][q][v] = _mm512_loadu_ps(init + m * ldi + q * 64 + v * 16);
  const uint16_t* w = Wp;
  for (int kp = 0; kp < K2; ++kp, w += 2 * kBlockCols) {
    __m512i b[NB][4];
#pragma GCC unroll 2
    for (int q = 0; q < NB; ++q)
#pragma GCC unroll 4
      for (int v = 0; v < 4; ++v) b[q][v] = _mm512_loadu_si512(w + q * bstride + 32 * v);
#pragma GCC unroll 8
    for (int m = 0; m < MR; ++m) {
      int32_t pair;
      std::memcpy(&pair, a[m] + 2 * kp, 4);
      const __m512i x = _mm512_set1_epi32(pair);
#pragma GCC unroll 2
      for (int q = 0; q < NB; ++q)
#pragma GCC unroll 4
        for (int v = 0; v < 4; ++v)
          acc[m][q][v] = _mm512_dpbf16_ps(acc[m][q][v], (__m512bh)x, (__m512bh)b[q][v]);
    }
  }
#pragma GCC unroll 8
  for (int m = 0; m < MR; ++m)
#pragma GCC unroll 2
    for (int q = 0; q < NB; ++q)
#pragma GCC unroll 4
      for (int v = 0; v < 4; ++v) _mm512_storeu_ps(C + m * ldc + q * 64 + v * 16, acc[m][q][v]);
}
#endif

// One GEMM operand set: the weights of one matrix (w_ih or w_hh of a layer).
struct Gemm {
  Kind kind;
  int K;              // logical K; for kDP the number of bf16 pairs
  const float* wf;    // fp32 packed weights (kF32)
  const uint16_t* wb; // bf16 packed weights (kBF16, kDP)
  ptrdiff_t bstride;  // elements between unit blocks
};

template <int MR, int NB>
MM_INLINE void tile(const Gemm& g, const void* const* arow, int blk, const float* init,
                    ptrdiff_t ldi, float* C, ptrdiff_t ldc) {
  constexpr int NV = nv_for(MR);
  switch (g.kind) {
    case kF32:
      tile_f32<MR, NB, NV>(g.K, reinterpret_cast<const float* const*>(arow), g.wf + blk * g.bstride,
                           g.bstride, init, ldi, C, ldc);
      break;
    case kBF16:
      tile_bf16<MR, NB, NV>(g.K, reinterpret_cast<const float* const*>(arow),
                            g.wb + blk * g.bstride, g.bstride, init, ldi, C, ldc);
      break;
    case kDP:
#if defined(__AVX512BF16__)
      tile_dp<MR, NB>(g.K, reinterpret_cast<const uint16_t* const*>(arow), g.wb + blk * g.bstride,
                      g.bstride, init, ldi, C, ldc);
#endif
      break;
  }
}

// A tile of mr (1..kMR) rows and one unit block. Kept out of line: inlined into the large
// forward() its accumulators got spilled to the stack.
__attribute__((noinline)) void tile_rows(int mr, const Gemm& g, const void* const* arow, int blk, const float* init,
                      ptrdiff_t ldi, float* C, ptrdiff_t ldc) {
  switch (mr) {
    case 1: tile<1, 1>(g, arow, blk, init, ldi, C, ldc); break;
    case 2: tile<2, 1>(g, arow, blk, init, ldi, C, ldc); break;
    case 3: tile<3, 1>(g, arow, blk, init, ldi, C, ldc); break;
    case 4: tile<4, 1>(g, arow, blk, init, ldi, C, ldc); break;
#if !(defined(__AVX512F__) || defined(__AVX2__))
    default: break;
#else
    case 5: tile<5, 1>(g, arow, blk, init, ldi, C, ldc); break;
    case 6: tile<6, 1>(g, arow, blk, init, ldi, C, ldc); break;
    default: break;
#endif
  }
}

// One row and two unit blocks (batch 1: 8 independent accumulator chains).
MM_INLINE void tile_pair(const Gemm& g, const void* const* arow, int blk,
                                         const float* init, float* C) {
  tile<1, 2>(g, arow, blk, init, 0, C, 2 * kBlockCols);
}

// The cell on one block of 16 units: gates (64: i, f, g, o pre-activations) -> c, h.
MM_INLINE void cell_block(const float* gates, float* c, float* h, uint16_t* hb) {
  for (int u = 0; u < kUnitBlock; u += W) {
    const VF i = vsigmoid(vload(gates + u));
    const VF f = vsigmoid(vload(gates + 16 + u));
    const VF gg = vtanh(vload(gates + 32 + u));
    const VF o = vsigmoid(vload(gates + 48 + u));
    const VF cn = vfma(f, vload(c + u), vmul(i, gg));
    const VF hn = vmul(o, vtanh(cn));
    vstore(c + u, cn);
    vstore(h + u, hn);
    if (hb) vstore_bf16(hb + u, hn);
  }
}

inline void split(int n, int parts, int idx, int& begin, int& end) {
  const int base = n / parts, rem = n % parts;
  begin = idx * base + std::min(idx, rem);
  end = begin + base + (idx < rem ? 1 : 0);
}

inline void to_bf16(const float* x, uint16_t* y, int n, int n_pad) {
  int i = 0;
  for (; i + W <= n; i += W) vstore_bf16(y + i, vload(x + i));
  for (; i < n; ++i) {
    uint32_t b;
    std::memcpy(&b, x + i, 4);
    b += 0x7FFFu + ((b >> 16) & 1u);
    y[i] = uint16_t(b >> 16);
  }
  for (; i < n_pad; ++i) y[i] = 0;
}

}  // namespace

void forward(Model& m, const ForwardArgs& args, bool dp) {
  Workspace& ws = m.ws;
  const int B = args.batch, T = args.steps, L = m.num_layers, D = m.input_size;
  const int H = m.hidden, Hp = m.hidden_pad, NBK = m.blocks, G4 = 4 * Hp;
  const int Tc = ws.chunk, slots = Tc + 1, Dp = (D + 1) & ~1;
  const Kind kind = m.wtype == WeightType::F32 ? kF32 : (dp ? kDP : kBF16);
  const bool by_rows = ws.by_rows;
  SpinBarrier barrier(1);

#pragma omp parallel num_threads(ws.threads)
  {
#ifdef _OPENMP
    const int tid = omp_get_thread_num(), nt = omp_get_num_threads();
#else
    const int tid = 0, nt = 1;
#endif
#pragma omp single
    barrier.reset(nt);
    const bool sync = !by_rows && nt > 1;
    int r0 = 0, r1 = B, j0 = 0, j1 = NBK;
    if (by_rows) split(B, nt, tid, r0, r1);
    else split(NBK, nt, tid, j0, j1);
    const int u0 = j0 * kUnitBlock, un = (j1 - j0) * kUnitBlock;

    // zero states of the owned (rows, units): c, and h0 in slot 0
    for (int l = 0; l < L; ++l)
      for (int b = r0; b < r1; ++b) {
        std::memset(ws.c[l].data() + size_t(b) * Hp + u0, 0, un * sizeof(float));
        std::memset(ws.out[l].data() + size_t(b) * slots * Hp + u0, 0, un * sizeof(float));
        if (kind == kDP)
          std::memset(ws.outb[l].data() + size_t(b) * slots * Hp + u0, 0, un * sizeof(uint16_t));
      }
    if (sync) barrier.wait();

    const void* arow[kMR];
    alignas(64) float scratch[kMR * 2 * kBlockCols];
    uint16_t* xb = kind == kDP ? ws.xb[tid].data() : nullptr;

    // Layers run as a wavefront over time chunks: in super-step c, layer l works on chunk
    // c - l (its input, chunk c - l of layer l - 1, was finished in super-step c - 1). Each
    // super-step: every active layer's input projection (one GEMM per chunk), a barrier, then
    // step i of every active layer and ONE barrier per step for all of them (a layer-by-layer
    // order needs one per step and layer).
    const int n_chunks = (T + Tc - 1) / Tc;
    for (int c = 0; c < n_chunks + L - 1; ++c) {
      const int l_lo = std::max(0, c - n_chunks + 1), l_hi = std::min(L - 1, c);
      int steps = 0;
      for (int l = l_lo; l <= l_hi; ++l) {
        const int t0 = (c - l) * Tc, tc = std::min(Tc, T - t0);
        steps = std::max(steps, tc);
        const int nq = (r1 - r0) * tc;  // GEMM rows (b, t) owned by this thread
        const Layer& ly = m.layers[l];
        // ---- input projection of the chunk: G_l[(b*tc + t), owned blocks]
        Gemm gi{kind, ly.k_in, ly.w_ih_f32.data(), ly.w_ih_bf16.data(), 0};
        if (kind == kF32) gi.bstride = ptrdiff_t(ly.k_in) * kBlockCols;
        else gi.bstride = ptrdiff_t(ly.k_in / 2) * 2 * kBlockCols;
        if (kind == kDP) gi.K = ly.k_in / 2;
        if (l == 0) gi.K = kind == kDP ? Dp / 2 : D;
        if (kind == kDP && l == 0)
          for (int b = r0; b < r1; ++b)
            for (int t = 0; t < tc; ++t)
              to_bf16(args.x + (size_t(b) * T + t0 + t) * D, xb + (size_t(b - r0) * tc + t) * Dp, D, Dp);
        auto row_ptr = [&](int q) -> const void* {
          const int b = r0 + q / tc, t = q % tc;
          if (l == 0) {
            if (kind == kDP) return xb + size_t(q) * Dp;
            return args.x + (size_t(b) * T + t0 + t) * D;
          }
          const size_t off = (size_t(b) * slots + 1 + t) * Hp;
          if (kind == kDP) return ws.outb[l - 1].data() + off;
          return ws.out[l - 1].data() + off;
        };
        // this thread's G rows start at r0 * Tc (fixed across chunks: a shorter last chunk
        // must not move them onto rows another thread is still reading); (b - r0) * tc + t within
        float* g_base = ws.g.data() + (size_t(l) * B + r0) * Tc * G4;
        for (int j = j0; j < j1; ++j)
          for (int q0 = 0; q0 < nq; q0 += kMR) {
            const int mr = std::min(kMR, nq - q0);
            for (int i = 0; i < mr; ++i) arow[i] = row_ptr(q0 + i);
            tile_rows(mr, gi, arow, j, ly.bias.data() + j * kBlockCols, 0,
                      g_base + size_t(q0) * G4 + j * kBlockCols, G4);
          }
      }
      // layer l - 1 overwrites the outputs layer l has just projected only after this
      if (sync && l_hi > l_lo) barrier.wait();

      // ---- the recurrence: step t of every active layer's chunk, one barrier per step
      for (int t = 0; t < steps; ++t) {
        for (int l = l_lo; l <= l_hi; ++l) {
          const int t0 = (c - l) * Tc, tc = std::min(Tc, T - t0);
          if (t >= tc) continue;
          const Layer& ly = m.layers[l];
          Gemm gh{kind, Hp, ly.w_hh_f32.data(), ly.w_hh_bf16.data(), 0};
          if (kind == kF32) gh.bstride = ptrdiff_t(Hp) * kBlockCols;
          else gh.bstride = ptrdiff_t(Hp / 2) * 2 * kBlockCols;
          if (kind == kDP) gh.K = Hp / 2;
          float* out = ws.out[l].data();
          uint16_t* outb = kind == kDP ? ws.outb[l].data() : nullptr;
          float* cst = ws.c[l].data();
          const int prev = t > 0 ? t : (t0 == 0 ? 0 : Tc);
          const float* g_t = ws.g.data() + ((size_t(l) * B + r0) * Tc + t) * G4;
          for (int j = j0; j < j1;) {
            const int nbk = (kPairBlocks && r1 - r0 == 1 && j + 1 < j1) ? 2 : 1;
            for (int b0 = r0; b0 < r1; b0 += kMR) {
              const int mr = std::min(kMR, r1 - b0);
              for (int i = 0; i < mr; ++i) {
                const size_t off = (size_t(b0 + i) * slots + prev) * Hp;
                arow[i] = kind == kDP ? static_cast<const void*>(outb + off) : out + off;
              }
              const float* init = g_t + size_t(b0 - r0) * tc * G4 + j * kBlockCols;
              if (nbk == 2)
                tile_pair(gh, arow, j, init, scratch);
              else
                tile_rows(mr, gh, arow, j, init, ptrdiff_t(tc) * G4, scratch, kBlockCols);
              for (int i = 0; i < mr; ++i)
                for (int q = 0; q < nbk; ++q) {
                  const int b = b0 + i, u = (j + q) * kUnitBlock;
                  const size_t off = (size_t(b) * slots + t + 1) * Hp + u;
                  cell_block(scratch + (i * nbk + q) * kBlockCols, cst + size_t(b) * Hp + u,
                             out + off, outb ? outb + off : nullptr);
                }
            }
            j += nbk;
          }
        }
        if (sync) barrier.wait();
      }
      if (args.y_seq && l_hi == L - 1) {
        const int t0 = (c - (L - 1)) * Tc, tc = std::min(Tc, T - t0);
        const float* out = ws.out[L - 1].data();
        const int ue = std::min(H, u0 + un);
        for (int b = r0; b < r1; ++b)
          for (int t = 0; t < tc; ++t)
            if (ue > u0)
              std::memcpy(args.y_seq + (size_t(b) * T + t0 + t) * H + u0,
                          out + (size_t(b) * slots + 1 + t) * Hp + u0, (ue - u0) * sizeof(float));
      }
    }
    // final states of the owned (rows, units)
    const int last = T > 0 ? (T - 1) % Tc + 1 : 0;
    const int ue = std::min(H, u0 + un);
    for (int l = 0; l < L && ue > u0; ++l)
      for (int b = r0; b < r1; ++b) {
        std::memcpy(args.h_n + (size_t(l) * B + b) * H + u0,
                    ws.out[l].data() + (size_t(b) * slots + last) * Hp + u0, (ue - u0) * sizeof(float));
        std::memcpy(args.c_n + (size_t(l) * B + b) * H + u0, ws.c[l].data() + size_t(b) * Hp + u0,
                    (ue - u0) * sizeof(float));
      }
  }
}

namespace {
template <typename F>
void apply(const float* x, float* y, size_t n, F f) {
  size_t i = 0;
  for (; i + W <= n; i += W) vstore(y + i, f(vload(x + i)));
  if (i < n) {
    float buf[W] = {};
    std::memcpy(buf, x + i, (n - i) * sizeof(float));
    vstore(buf, f(vload(buf)));
    std::memcpy(y + i, buf, (n - i) * sizeof(float));
  }
}
}  // namespace

void sigmoid(const float* x, float* y, size_t n) { apply(x, y, n, [](VF v) { return vsigmoid(v); }); }
void tanh(const float* x, float* y, size_t n) { apply(x, y, n, [](VF v) { return vtanh(v); }); }

}  // namespace MMENGINE_ISA_NS
}  // namespace lstm
}  // namespace mmengine
