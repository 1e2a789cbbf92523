// Per-ISA kernels of the whole-model graph: the time-major dilated convolution.
//
// Compiled once per ISA (CMake sets MMENGINE_ISA_NS and the -m flags). A tile is R frames x
// NV vectors of output channels; for every tap k and input channel i it loads NV weight
// vectors and broadcasts R input values: R * NV FMAs per NV loads + R broadcasts, with the
// accumulators in registers (AVX-512: 6 x 4 zmm; AVX2: 3 x 4 ymm).
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstring>

#include "common/simd.h"
#include "model/model.h"

namespace mmengine {
namespace model {
namespace MMENGINE_ISA_NS {

using namespace mmengine::MMENGINE_ISA_NS::simd;

namespace {

#if defined(__AVX512F__)
constexpr int kRows[5] = {0, 12, 12, 8, 6};  // frames per tile for NV = 1..4 vectors
#elif defined(__AVX2__)
constexpr int kRows[5] = {0, 8, 6, 4, 3};
#else
constexpr int kRows[5] = {0, 4, 4, 3, 3};
#endif

// epilogue: activation, residual, the fp32 output and (bf16 graphs) its bf16 copy
template <int R, int NV>
MM_INLINE void store(const ConvArgs& a, int t, int c0, VF (&acc)[R][NV]) {
  const VF zero = vset1(0.0f);
  for (int r = 0; r < R; ++r) {
    float* y = a.y + ptrdiff_t(t + r) * a.ldy + c0;
    const float* res = a.res ? a.res + ptrdiff_t(t + r) * a.ldr + c0 : nullptr;
    uint16_t* yb = a.yb ? a.yb + ptrdiff_t(t + r) * a.ldyb + c0 : nullptr;
    for (int v = 0; v < NV; ++v) {
      VF o = a.relu ? vmax(acc[r][v], zero) : acc[r][v];
      if (res) o = vadd(o, vload(res + v * W));
      vstore(y + v * W, o);
      if (yb) vstore_bf16(yb + v * W, o);
    }
  }
}

template <int R, int NV>
MM_INLINE void tile(const ConvArgs& a, int t, int c0) {
  const Conv& cv = *a.conv;
  const int half = (cv.k - 1) / 2;
  const ptrdiff_t ldw = cv.cout_pad;
  VF acc[R][NV];
  for (int v = 0; v < NV; ++v) {
    const VF bv = vload(cv.b.data() + c0 + v * W);
    for (int r = 0; r < R; ++r) acc[r][v] = bv;
  }
  for (int k = 0; k < cv.k; ++k) {
    const float* xk = a.x + ptrdiff_t(t + (k - half) * cv.dil) * a.ldx;
    const float* wk = cv.w.data() + ptrdiff_t(k) * cv.cin * ldw + c0;
    for (int i = 0; i < cv.cin; ++i) {
      VF wv[NV];
      for (int v = 0; v < NV; ++v) wv[v] = vload(wk + ptrdiff_t(i) * ldw + v * W);
      for (int r = 0; r < R; ++r) {
        const VF xb = vset1(xk[ptrdiff_t(r) * a.ldx + i]);
        for (int v = 0; v < NV; ++v) acc[r][v] = vfma(xb, wv[v], acc[r][v]);
      }
    }
  }
  store<R, NV>(a, t, c0, acc);
}

#if defined(__AVX512BF16__)
// The same tile from bf16 pairs of input channels: one vdpbf16ps does two channels' MACs
template <int R, int NV>
MM_INLINE void tile_bf16(const ConvArgs& a, int t, int c0) {
  const Conv& cv = *a.conv;
  const int half = (cv.k - 1) / 2;
  const ptrdiff_t ldw = 2 * ptrdiff_t(cv.cout_pad);  // uint16 per input-channel pair
  VF acc[R][NV];
  for (int v = 0; v < NV; ++v) {
    const VF bv = vload(cv.b.data() + c0 + v * W);
    for (int r = 0; r < R; ++r) acc[r][v] = bv;
  }
  for (int k = 0; k < cv.k; ++k) {
    const uint16_t* xk = a.xb + ptrdiff_t(t + (k - half) * cv.dil) * a.ldxb;
    const uint16_t* wk = cv.wb.data() + ptrdiff_t(k) * cv.cin_pairs * ldw + 2 * c0;
    for (int j = 0; j < cv.cin_pairs; ++j) {
      __m512i wv[NV];
      for (int v = 0; v < NV; ++v) wv[v] = _mm512_loadu_si512(wk + j * ldw + 2 * W * v);
      for (int r = 0; r < R; ++r) {
        int32_t pair;
        std::memcpy(&pair, xk + ptrdiff_t(r) * a.ldxb + 2 * j, 4);
        const __m512i x = _mm512_set1_epi32(pair);
        for (int v = 0; v < NV; ++v)
          acc[r][v].v = _mm512_dpbf16_ps(acc[r][v].v, (__m512bh)x, (__m512bh)wv[v]);
      }
    }
  }
  store<R, NV>(a, t, c0, acc);
}

template <int NV>
void columns_bf16(const ConvArgs& a, int t0, int t1, int c0) {
  constexpr int R = kRows[NV];
  int t = t0;
  for (; t + R <= t1; t += R) tile_bf16<R, NV>(a, t, c0);
  for (; t < t1; ++t) tile_bf16<1, NV>(a, t, c0);
}
#endif

template <int NV>
void columns(const ConvArgs& a, int t0, int t1, int c0) {
  constexpr int R = kRows[NV];
  int t = t0;
  for (; t + R <= t1; t += R) tile<R, NV>(a, t, c0);
  for (; t < t1; ++t) tile<1, NV>(a, t, c0);
}

}  // namespace

#if defined(__AVX512BF16__)
void conv1d_bf16(const ConvArgs& a, int t0, int t1) {
  const int n = a.conv->cout_pad;
  int c0 = 0;
  for (; c0 + 4 * W <= n; c0 += 4 * W) columns_bf16<4>(a, t0, t1, c0);
  switch ((n - c0) / W) {
    case 3: columns_bf16<3>(a, t0, t1, c0); break;
    case 2: columns_bf16<2>(a, t0, t1, c0); break;
    case 1: columns_bf16<1>(a, t0, t1, c0); break;
    default: break;
  }
}
#endif

void conv1d(const ConvArgs& a, int t0, int t1) {
  const int n = a.conv->cout_pad;
  int c0 = 0;
  for (; c0 + 4 * W <= n; c0 += 4 * W) columns<4>(a, t0, t1, c0);
  switch ((n - c0) / W) {
    case 3: columns<3>(a, t0, t1, c0); break;
    case 2: columns<2>(a, t0, t1, c0); break;
    case 1: columns<1>(a, t0, t1, c0); break;
    default: break;
  }
}

}  // namespace MMENGINE_ISA_NS
}  // namespace model
}  // namespace mmengine
