// A small float-vector layer so that each kernel is written once and compiled per ISA.
//
// The ISA follows the compiler flags of the translation unit: -mavx512f (+bw/vl/dq) gives
// 16 lanes, -mavx2 -mfma gives 8 lanes, no flags give 1 lane (plain C++, "scalar").
// Every kernel source that includes this header is compiled once per ISA by CMake with
// MMENGINE_ISA_NS naming the namespace that holds its symbols.
//
// Math (exp, sigmoid, tanh) uses the same polynomials in every ISA; accuracy is about
// 2 ulp for exp and better than 5e-7 relative for sigmoid and tanh over the float range.
#pragma once

#include <cstdint>
#include <cstring>

#if defined(__AVX512F__) || defined(__AVX2__)
#include <immintrin.h>
#endif

#define MM_INLINE inline __attribute__((always_inline))

#ifndef MMENGINE_ISA_NS
#error "simd.h is for per-ISA kernel sources: MMENGINE_ISA_NS must be set (by CMake)"
#endif

// Inside the ISA namespace: each compilation has its own symbols (no ODR clash between the
// scalar, AVX2 and AVX-512 builds of the same inline functions).
namespace mmengine {
namespace MMENGINE_ISA_NS {
namespace simd {

#if defined(__AVX512F__)

constexpr int W = 16;
struct VF { __m512 v; };
MM_INLINE VF vload(const float* p) { return {_mm512_loadu_ps(p)}; }
MM_INLINE void vstore(float* p, VF a) { _mm512_storeu_ps(p, a.v); }
MM_INLINE VF vset1(float x) { return {_mm512_set1_ps(x)}; }
MM_INLINE VF vadd(VF a, VF b) { return {_mm512_add_ps(a.v, b.v)}; }
MM_INLINE VF vsub(VF a, VF b) { return {_mm512_sub_ps(a.v, b.v)}; }
MM_INLINE VF vmul(VF a, VF b) { return {_mm512_mul_ps(a.v, b.v)}; }
MM_INLINE VF vdiv(VF a, VF b) { return {_mm512_div_ps(a.v, b.v)}; }
// 1/a for a in [1, 2^127]: 14-bit estimate + one Newton step (~1 ulp, no divider)
MM_INLINE VF vrecip(VF a) {
  __m512 r = _mm512_rcp14_ps(a.v);
  return {_mm512_fmadd_ps(r, _mm512_fnmadd_ps(a.v, r, _mm512_set1_ps(1.0f)), r)};
}
MM_INLINE VF vfma(VF a, VF b, VF c) { return {_mm512_fmadd_ps(a.v, b.v, c.v)}; }
MM_INLINE VF vmin(VF a, VF b) { return {_mm512_min_ps(a.v, b.v)}; }
MM_INLINE VF vmax(VF a, VF b) { return {_mm512_max_ps(a.v, b.v)}; }
MM_INLINE VF vround(VF a) {
  return {_mm512_roundscale_ps(a.v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC)};
}
MM_INLINE VF vabs(VF a) { return {_mm512_abs_ps(a.v)}; }
// copy the sign of s onto the non-negative magnitude m
MM_INLINE VF vcopysign(VF m, VF s) {
  const __m512i sign = _mm512_set1_epi32(int32_t(0x80000000u));
  return {_mm512_castsi512_ps(_mm512_or_si512(
      _mm512_castps_si512(m.v), _mm512_and_si512(_mm512_castps_si512(s.v), sign)))};
}
// (a < b) ? x : y
MM_INLINE VF vselect_lt(VF a, VF b, VF x, VF y) {
  return {_mm512_mask_blend_ps(_mm512_cmp_ps_mask(a.v, b.v, _CMP_LT_OQ), y.v, x.v)};
}
// 2^n for integral-valued n in [-126, 127]
MM_INLINE VF vpow2i(VF n) {
  __m512i e = _mm512_add_epi32(_mm512_cvtps_epi32(n.v), _mm512_set1_epi32(127));
  return {_mm512_castsi512_ps(_mm512_slli_epi32(e, 23))};
}
// W lanes of 32 bits, each a (k even, k odd) bf16 pair -> two float vectors
MM_INLINE void vload_bf16x2(const uint16_t* p, VF& lo, VF& hi) {
  __m512i x = _mm512_loadu_si512(p);
  lo.v = _mm512_castsi512_ps(_mm512_slli_epi32(x, 16));
  hi.v = _mm512_castsi512_ps(_mm512_and_si512(x, _mm512_set1_epi32(int32_t(0xFFFF0000u))));
}
MM_INLINE VF vload_bf16(const uint16_t* p) {
  __m512i x = _mm512_cvtepu16_epi32(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)));
  return {_mm512_castsi512_ps(_mm512_slli_epi32(x, 16))};
}
// round to nearest even and store W bf16 values
MM_INLINE void vstore_bf16(uint16_t* p, VF a) {
  __m512i b = _mm512_castps_si512(a.v);
  __m512i lsb = _mm512_and_si512(_mm512_srli_epi32(b, 16), _mm512_set1_epi32(1));
  b = _mm512_add_epi32(b, _mm512_add_epi32(lsb, _mm512_set1_epi32(0x7FFF)));
  _mm256_storeu_si256(reinterpret_cast<__m256i*>(p), _mm512_cvtepi32_epi16(_mm512_srli_epi32(b, 16)));
}

#elif defined(__AVX2__)

constexpr int W = 8;
struct VF { __m256 v; };
MM_INLINE VF vload(const float* p) { return {_mm256_loadu_ps(p)}; }
MM_INLINE void vstore(float* p, VF a) { _mm256_storeu_ps(p, a.v); }
MM_INLINE VF vset1(float x) { return {_mm256_set1_ps(x)}; }
MM_INLINE VF vadd(VF a, VF b) { return {_mm256_add_ps(a.v, b.v)}; }
MM_INLINE VF vsub(VF a, VF b) { return {_mm256_sub_ps(a.v, b.v)}; }
MM_INLINE VF vmul(VF a, VF b) { return {_mm256_mul_ps(a.v, b.v)}; }
MM_INLINE VF vdiv(VF a, VF b) { return {_mm256_div_ps(a.v, b.v)}; }
// 1/a for a in [1, 2^127]: 12-bit estimate + one Newton step (~2 ulp, no divider)
MM_INLINE VF vrecip(VF a) {
  __m256 r = _mm256_rcp_ps(a.v);
  return {_mm256_fmadd_ps(r, _mm256_fnmadd_ps(a.v, r, _mm256_set1_ps(1.0f)), r)};
}
MM_INLINE VF vfma(VF a, VF b, VF c) { return {_mm256_fmadd_ps(a.v, b.v, c.v)}; }
MM_INLINE VF vmin(VF a, VF b) { return {_mm256_min_ps(a.v, b.v)}; }
MM_INLINE VF vmax(VF a, VF b) { return {_mm256_max_ps(a.v, b.v)}; }
MM_INLINE VF vround(VF a) { return {_mm256_round_ps(a.v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC)}; }
MM_INLINE VF vabs(VF a) {
  return {_mm256_andnot_ps(_mm256_set1_ps(-0.0f), a.v)};
}
MM_INLINE VF vcopysign(VF m, VF s) {
  return {_mm256_or_ps(m.v, _mm256_and_ps(s.v, _mm256_set1_ps(-0.0f)))};
}
MM_INLINE VF vselect_lt(VF a, VF b, VF x, VF y) {
  return {_mm256_blendv_ps(y.v, x.v, _mm256_cmp_ps(a.v, b.v, _CMP_LT_OQ))};
}
MM_INLINE VF vpow2i(VF n) {
  __m256i e = _mm256_add_epi32(_mm256_cvtps_epi32(n.v), _mm256_set1_epi32(127));
  return {_mm256_castsi256_ps(_mm256_slli_epi32(e, 23))};
}
MM_INLINE void vload_bf16x2(const uint16_t* p, VF& lo, VF& hi) {
  __m256i x = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p));
  lo.v = _mm256_castsi256_ps(_mm256_slli_epi32(x, 16));
  hi.v = _mm256_castsi256_ps(_mm256_and_si256(x, _mm256_set1_epi32(int32_t(0xFFFF0000u))));
}
MM_INLINE VF vload_bf16(const uint16_t* p) {
  __m256i x = _mm256_cvtepu16_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
  return {_mm256_castsi256_ps(_mm256_slli_epi32(x, 16))};
}
MM_INLINE void vstore_bf16(uint16_t* p, VF a) {
  __m256i b = _mm256_castps_si256(a.v);
  __m256i lsb = _mm256_and_si256(_mm256_srli_epi32(b, 16), _mm256_set1_epi32(1));
  b = _mm256_srli_epi32(_mm256_add_epi32(b, _mm256_add_epi32(lsb, _mm256_set1_epi32(0x7FFF))), 16);
  __m128i packed = _mm_packus_epi32(_mm256_castsi256_si128(b), _mm256_extracti128_si256(b, 1));
  _mm_storeu_si128(reinterpret_cast<__m128i*>(p), packed);
}

#else

constexpr int W = 1;
struct VF { float v; };
MM_INLINE uint32_t bits_of(float x) { uint32_t u; std::memcpy(&u, &x, 4); return u; }
MM_INLINE float float_of(uint32_t u) { float x; std::memcpy(&x, &u, 4); return x; }
MM_INLINE VF vload(const float* p) { return {*p}; }
MM_INLINE void vstore(float* p, VF a) { *p = a.v; }
MM_INLINE VF vset1(float x) { return {x}; }
MM_INLINE VF vadd(VF a, VF b) { return {a.v + b.v}; }
MM_INLINE VF vsub(VF a, VF b) { return {a.v - b.v}; }
MM_INLINE VF vmul(VF a, VF b) { return {a.v * b.v}; }
MM_INLINE VF vdiv(VF a, VF b) { return {a.v / b.v}; }
MM_INLINE VF vrecip(VF a) { return {1.0f / a.v}; }
MM_INLINE VF vfma(VF a, VF b, VF c) { return {a.v * b.v + c.v}; }
MM_INLINE VF vmin(VF a, VF b) { return {a.v < b.v ? a.v : b.v}; }
MM_INLINE VF vmax(VF a, VF b) { return {a.v > b.v ? a.v : b.v}; }
MM_INLINE VF vround(VF a) { return {__builtin_nearbyintf(a.v)}; }
MM_INLINE VF vabs(VF a) { return {float_of(bits_of(a.v) & 0x7FFFFFFFu)}; }
MM_INLINE VF vcopysign(VF m, VF s) { return {float_of(bits_of(m.v) | (bits_of(s.v) & 0x80000000u))}; }
MM_INLINE VF vselect_lt(VF a, VF b, VF x, VF y) { return a.v < b.v ? x : y; }
MM_INLINE VF vpow2i(VF n) { return {float_of(uint32_t(int32_t(n.v) + 127) << 23)}; }
MM_INLINE void vload_bf16x2(const uint16_t* p, VF& lo, VF& hi) {
  lo.v = float_of(uint32_t(p[0]) << 16);
  hi.v = float_of(uint32_t(p[1]) << 16);
}
MM_INLINE VF vload_bf16(const uint16_t* p) { return {float_of(uint32_t(p[0]) << 16)}; }
MM_INLINE void vstore_bf16(uint16_t* p, VF a) {
  uint32_t b = bits_of(a.v);
  b += 0x7FFFu + ((b >> 16) & 1u);
  p[0] = uint16_t(b >> 16);
}

#endif

// e^x, x clamped to [-87.3, 88.0] (results stay normal). Range reduction x = n ln2 + r with a
// two-part ln2, then a degree-5 polynomial on |r| <= ln2/2 (Cephes expf coefficients).
MM_INLINE VF vexp(VF x) {
  x = vmin(vmax(x, vset1(-87.3f)), vset1(88.0f));
  VF n = vround(vmul(x, vset1(1.44269504088896341f)));
  VF r = vfma(n, vset1(-0.693359375f), x);
  r = vfma(n, vset1(2.12194440e-4f), r);
  VF p = vset1(1.9875691500e-4f);
  p = vfma(p, r, vset1(1.3981999507e-3f));
  p = vfma(p, r, vset1(8.3334519073e-3f));
  p = vfma(p, r, vset1(4.1665795894e-2f));
  p = vfma(p, r, vset1(1.6666665459e-1f));
  p = vfma(p, r, vset1(5.0000001201e-1f));
  VF r2 = vmul(r, r);
  VF e = vadd(vfma(p, r2, r), vset1(1.0f));
  return vmul(e, vpow2i(n));
}

// 1 / (1 + e^-x); the denominator lies in [1, 2^126]
MM_INLINE VF vsigmoid(VF x) {
  return vrecip(vadd(vset1(1.0f), vexp(vsub(vset1(0.0f), x))));
}

// tanh: odd Taylor series (to x^17) for |x| < 0.5, else 1 - 2 / (e^{2|x|} + 1); sign restored.
MM_INLINE VF vtanh(VF x) {
  VF a = vabs(x);
  VF z = vmul(a, a);
  VF q = vset1(6404582.0f / 10854718875.0f);
  q = vfma(q, z, vset1(-929569.0f / 638512875.0f));
  q = vfma(q, z, vset1(21844.0f / 6081075.0f));
  q = vfma(q, z, vset1(-1382.0f / 155925.0f));
  q = vfma(q, z, vset1(62.0f / 2835.0f));
  q = vfma(q, z, vset1(-17.0f / 315.0f));
  q = vfma(q, z, vset1(2.0f / 15.0f));
  q = vfma(q, z, vset1(-1.0f / 3.0f));
  VF small = vfma(vmul(q, z), a, a);
  VF e = vexp(vmin(vadd(a, a), vset1(88.0f)));
  VF large = vsub(vset1(1.0f), vmul(vset1(2.0f), vrecip(vadd(e, vset1(1.0f)))));
  return vcopysign(vselect_lt(a, vset1(0.5f), small, large), x);
}

}  // namespace simd
}  // namespace MMENGINE_ISA_NS
}  // namespace mmengine
