// Front-end kernels, compiled once per ISA (CMake sets the -m flags and MMENGINE_ISA_NS).
// One call transforms W consecutive frames of one clip, one frame per SIMD lane; see
// frontend.h for the method.
#include <algorithm>
#include <cmath>
#include <cstring>

#include "common/simd.h"
#include "frontend/frontend.h"

#ifndef MMENGINE_ISA_NS
#error "MMENGINE_ISA_NS must name the ISA namespace (set by CMake)"
#endif

namespace mmengine {
namespace frontend {
namespace MMENGINE_ISA_NS {

using namespace mmengine::MMENGINE_ISA_NS::simd;

namespace {

// Lane f of the result = base[f * stride] (stride in floats; W * stride fits in int32).
#if defined(__AVX512F__)
// rows[f] = base[f * stride + 0 .. 15] (f = 0..15), transposed in registers:
// out[k] lane f = base[f * stride + k]
MM_INLINE void load_transposed(const float* base, int stride, VF* out) {
  __m512 r[16], t[16];
  for (int i = 0; i < 16; ++i) r[i] = _mm512_loadu_ps(base + size_t(i) * stride);
  for (int i = 0; i < 16; i += 2) {
    t[i] = _mm512_unpacklo_ps(r[i], r[i + 1]);
    t[i + 1] = _mm512_unpackhi_ps(r[i], r[i + 1]);
  }
  for (int i = 0; i < 16; i += 4) {  // r[i + m], 128-bit lane L = rows i..i+3 at column 4L + m
    r[i] = _mm512_castpd_ps(_mm512_unpacklo_pd(_mm512_castps_pd(t[i]), _mm512_castps_pd(t[i + 2])));
    r[i + 1] = _mm512_castpd_ps(_mm512_unpackhi_pd(_mm512_castps_pd(t[i]), _mm512_castps_pd(t[i + 2])));
    r[i + 2] = _mm512_castpd_ps(_mm512_unpacklo_pd(_mm512_castps_pd(t[i + 1]), _mm512_castps_pd(t[i + 3])));
    r[i + 3] = _mm512_castpd_ps(_mm512_unpackhi_pd(_mm512_castps_pd(t[i + 1]), _mm512_castps_pd(t[i + 3])));
  }
  for (int m = 0; m < 4; ++m) {  // 4x4 transpose of 128-bit lanes across r[m], r[4+m], r[8+m], r[12+m]
    const __m512 a = _mm512_shuffle_f32x4(r[m], r[4 + m], 0x88);
    const __m512 b = _mm512_shuffle_f32x4(r[m], r[4 + m], 0xDD);
    const __m512 c = _mm512_shuffle_f32x4(r[8 + m], r[12 + m], 0x88);
    const __m512 d = _mm512_shuffle_f32x4(r[8 + m], r[12 + m], 0xDD);
    out[m].v = _mm512_shuffle_f32x4(a, c, 0x88);
    out[8 + m].v = _mm512_shuffle_f32x4(a, c, 0xDD);
    out[4 + m].v = _mm512_shuffle_f32x4(b, d, 0x88);
    out[12 + m].v = _mm512_shuffle_f32x4(b, d, 0xDD);
  }
}
MM_INLINE VF vsqrt(VF a) { return {_mm512_sqrt_ps(a.v)}; }
// natural log of x > 0 (normal): x = m 2^e with m in [sqrt(1/2), sqrt(2))
MM_INLINE void vsplit_log(VF x, VF& m, VF& e) {
  __m512 mant = _mm512_getmant_ps(x.v, _MM_MANT_NORM_1_2, _MM_MANT_SIGN_zero);
  __m512 ex = _mm512_getexp_ps(x.v);
  const __mmask16 big = _mm512_cmp_ps_mask(mant, _mm512_set1_ps(1.41421356237f), _CMP_GT_OQ);
  m.v = _mm512_mask_mul_ps(mant, big, mant, _mm512_set1_ps(0.5f));
  e.v = _mm512_mask_add_ps(ex, big, ex, _mm512_set1_ps(1.0f));
}
#elif defined(__AVX2__)
MM_INLINE void load_transposed(const float* base, int stride, VF* out) {
  __m256 r[8], t[8];
  for (int i = 0; i < 8; ++i) r[i] = _mm256_loadu_ps(base + size_t(i) * stride);
  for (int i = 0; i < 8; i += 2) {
    t[i] = _mm256_unpacklo_ps(r[i], r[i + 1]);
    t[i + 1] = _mm256_unpackhi_ps(r[i], r[i + 1]);
  }
  for (int i = 0; i < 8; i += 4) {  // r[i + m], 128-bit lane L = rows i..i+3 at column 4L + m
    r[i] = _mm256_castpd_ps(_mm256_unpacklo_pd(_mm256_castps_pd(t[i]), _mm256_castps_pd(t[i + 2])));
    r[i + 1] = _mm256_castpd_ps(_mm256_unpackhi_pd(_mm256_castps_pd(t[i]), _mm256_castps_pd(t[i + 2])));
    r[i + 2] = _mm256_castpd_ps(_mm256_unpacklo_pd(_mm256_castps_pd(t[i + 1]), _mm256_castps_pd(t[i + 3])));
    r[i + 3] = _mm256_castpd_ps(_mm256_unpackhi_pd(_mm256_castps_pd(t[i + 1]), _mm256_castps_pd(t[i + 3])));
  }
  for (int m = 0; m < 4; ++m) {
    out[m].v = _mm256_permute2f128_ps(r[m], r[4 + m], 0x20);
    out[4 + m].v = _mm256_permute2f128_ps(r[m], r[4 + m], 0x31);
  }
}
MM_INLINE VF vsqrt(VF a) { return {_mm256_sqrt_ps(a.v)}; }
MM_INLINE void vsplit_log(VF x, VF& m, VF& e) {
  const __m256i bits = _mm256_castps_si256(x.v);
  __m256i ei = _mm256_sub_epi32(_mm256_srli_epi32(bits, 23), _mm256_set1_epi32(127));
  __m256 mant = _mm256_castsi256_ps(_mm256_or_si256(
      _mm256_and_si256(bits, _mm256_set1_epi32(0x007FFFFF)), _mm256_set1_epi32(0x3F800000)));
  __m256 ex = _mm256_cvtepi32_ps(ei);
  const __m256 big = _mm256_cmp_ps(mant, _mm256_set1_ps(1.41421356237f), _CMP_GT_OQ);
  m.v = _mm256_blendv_ps(mant, _mm256_mul_ps(mant, _mm256_set1_ps(0.5f)), big);
  e.v = _mm256_blendv_ps(ex, _mm256_add_ps(ex, _mm256_set1_ps(1.0f)), big);
}
#else
MM_INLINE void load_transposed(const float* base, int, VF* out) { out[0].v = base[0]; }
MM_INLINE VF vsqrt(VF a) { return {std::sqrt(a.v)}; }
MM_INLINE void vsplit_log(VF x, VF& m, VF& e) {
  int ex = 0;
  float mant = std::frexp(x.v, &ex) * 2.0f;  // [1, 2)
  ex -= 1;
  if (mant > 1.41421356237f) { mant *= 0.5f; ex += 1; }
  m.v = mant;
  e.v = float(ex);
}
#endif

// 10 log10(x) for normal x > 0: ln m = 2 atanh(s), s = (m - 1) / (m + 1), |s| <= 0.1716,
// series to s^11 (next term < 1e-10 relative)
MM_INLINE VF vdb(VF x) {
  VF m, e;
  vsplit_log(x, m, e);
  const VF one = vset1(1.0f);
  VF s = vdiv(vsub(m, one), vadd(m, one));
  VF s2 = vmul(s, s);
  VF q = vset1(2.0f / 11.0f);
  q = vfma(q, s2, vset1(2.0f / 9.0f));
  q = vfma(q, s2, vset1(2.0f / 7.0f));
  q = vfma(q, s2, vset1(2.0f / 5.0f));
  q = vfma(q, s2, vset1(2.0f / 3.0f));
  q = vfma(q, s2, vset1(2.0f));
  VF ln = vfma(e, vset1(0.693147180559945f), vmul(q, s));
  return vmul(ln, vset1(4.34294481903252f));  // 10 / ln 10
}

// One Stockham radix-4 pass: n-point sub-transforms at stride s, src -> dst (natural order out).
MM_INLINE void radix4_pass(int n, int s, const float* tw, const float* xr, const float* xi,
                           float* yr, float* yi) {
  const int n0 = n / 4;
  const size_t sW = size_t(s) * W, qW = size_t(n0) * sW;
  for (int p = 0; p < n0; ++p) {
    const VF w1r = vset1(tw[6 * p + 0]), w1i = vset1(tw[6 * p + 1]);
    const VF w2r = vset1(tw[6 * p + 2]), w2i = vset1(tw[6 * p + 3]);
    const VF w3r = vset1(tw[6 * p + 4]), w3i = vset1(tw[6 * p + 5]);
    const size_t in0 = size_t(p) * sW, out0 = size_t(4 * p) * sW;
    for (int q = 0; q < s; ++q) {
      const size_t ia = in0 + size_t(q) * W, o = out0 + size_t(q) * W;
      const VF ar = vload(xr + ia), ai = vload(xi + ia);
      const VF br = vload(xr + ia + qW), bi = vload(xi + ia + qW);
      const VF cr = vload(xr + ia + 2 * qW), ci = vload(xi + ia + 2 * qW);
      const VF dr = vload(xr + ia + 3 * qW), di = vload(xi + ia + 3 * qW);
      const VF apcr = vadd(ar, cr), apci = vadd(ai, ci);
      const VF amcr = vsub(ar, cr), amci = vsub(ai, ci);
      const VF bpdr = vadd(br, dr), bpdi = vadd(bi, di);
      const VF bmdr = vsub(br, dr), bmdi = vsub(bi, di);
      // k = 0: a + b + c + d
      vstore(yr + o, vadd(apcr, bpdr));
      vstore(yi + o, vadd(apci, bpdi));
      // k = 1: (a - c) - i (b - d), times w^p
      const VF t1r = vadd(amcr, bmdi), t1i = vsub(amci, bmdr);
      vstore(yr + o + sW, vsub(vmul(w1r, t1r), vmul(w1i, t1i)));
      vstore(yi + o + sW, vfma(w1r, t1i, vmul(w1i, t1r)));
      // k = 2: (a + c) - (b + d), times w^2p
      const VF t2r = vsub(apcr, bpdr), t2i = vsub(apci, bpdi);
      vstore(yr + o + 2 * sW, vsub(vmul(w2r, t2r), vmul(w2i, t2i)));
      vstore(yi + o + 2 * sW, vfma(w2r, t2i, vmul(w2i, t2r)));
      // k = 3: (a - c) + i (b - d), times w^3p
      const VF t3r = vsub(amcr, bmdi), t3i = vadd(amci, bmdr);
      vstore(yr + o + 3 * sW, vsub(vmul(w3r, t3r), vmul(w3i, t3i)));
      vstore(yi + o + 3 * sW, vfma(w3r, t3i, vmul(w3i, t3r)));
    }
  }
}

// The last pass when a factor 2 is left: n = 2, s = half / 2.
MM_INLINE void radix2_pass(int s, const float* xr, const float* xi, float* yr, float* yi) {
  const size_t sW = size_t(s) * W;
  for (int q = 0; q < s; ++q) {
    const size_t i = size_t(q) * W;
    const VF ar = vload(xr + i), ai = vload(xi + i);
    const VF br = vload(xr + i + sW), bi = vload(xi + i + sW);
    vstore(yr + i, vadd(ar, br));
    vstore(yi + i, vadd(ai, bi));
    vstore(yr + i + sW, vsub(ar, br));
    vstore(yi + i + sW, vsub(ai, bi));
  }
}

MM_INLINE float* align64(float* p) {
  return reinterpret_cast<float*>((reinterpret_cast<uintptr_t>(p) + 63) & ~uintptr_t(63));
}

}  // namespace

int lanes() { return W; }

void block(const Plan& P, const Clip& c, int64_t t0, float* scratch) {
  const int half = P.half, n_fft = P.n_fft, hop = P.hop;
  const size_t HW = size_t(half) * W;
  float* zr = align64(scratch);
  float* zi = align64(zr + HW);
  float* yr = align64(zi + HW);
  float* yi = align64(yr + HW);
  float* pw = align64(yi + HW);
  float* db = align64(pw + size_t(P.n_bins) * W);
  float* seg = align64(db + size_t(P.n_mels) * W);
  const size_t seg_len = size_t(W - 1) * hop + n_fft;
  float* stage_out = align64(seg + seg_len);

  // ---- frames: lane f holds frame t0 + f, first sample at start + f * hop
  const int64_t pad = P.center ? n_fft / 2 : 0;
  const int64_t start = t0 * hop - pad;
  const float* base;
  if (start >= 0 && start + int64_t(seg_len) <= c.n) {
    base = c.y + start;
  } else {  // an edge block: build its padded samples
    const int64_t n = c.n;
    for (size_t i = 0; i < seg_len; ++i) {
      int64_t g = start + int64_t(i);
      if (P.reflect) {
        if (g < 0) g = -g;
        if (g >= n) g = 2 * (n - 1) - g;
      }
      seg[i] = (g >= 0 && g < n) ? c.y[g] : 0.0f;
    }
    base = seg;
  }
  // W samples of each of the W frames at a time, transposed in registers; even samples are
  // the real parts of z, odd ones the imaginary parts (n_fft is a multiple of W)
  const float* win = P.window.data();
  VF cols[W];
  for (int j0 = 0; j0 < n_fft; j0 += W) {
    load_transposed(base + j0, hop, cols);
    for (int k = 0; k < W; ++k) {
      const int j = j0 + k;
      float* dst = ((j & 1) ? zi : zr) + size_t(j >> 1) * W;
      vstore(dst, vmul(cols[k], vset1(win[j])));
    }
  }

  // ---- half-size complex FFT (Stockham: ping-pong between z and y)
  float *xr = zr, *xi = zi, *outr = yr, *outi = yi;
  const float* tw = P.stage_tw.data();
  int s = 1;
  for (int n : P.stage_len) {
    radix4_pass(n, s, tw, xr, xi, outr, outi);
    tw += 6 * (n / 4);
    s *= 4;
    std::swap(xr, outr);
    std::swap(xi, outi);
  }
  if (P.final_radix2) {
    radix2_pass(half / 2, xr, xi, outr, outi);
    std::swap(xr, outr);
    std::swap(xi, outi);
  }

  // ---- split into the real transform's bins, power
  const VF halfv = vset1(0.5f);
  const bool mag = P.power == 1.0f;
  {
    const VF r0 = vload(xr), i0 = vload(xi);
    const VF x0 = vadd(r0, i0), xh = vsub(r0, i0);
    VF p0 = vmul(x0, x0), ph = vmul(xh, xh);
    if (mag) { p0 = vsqrt(p0); ph = vsqrt(ph); }
    vstore(pw, p0);
    vstore(pw + HW, ph);
  }
  for (int k = 1; k < half; ++k) {
    const size_t a = size_t(k) * W, b = size_t(half - k) * W;
    const VF zkr = vload(xr + a), zki = vload(xi + a);
    const VF zmr = vload(xr + b), zmi = vload(xi + b);
    const VF er = vmul(vadd(zkr, zmr), halfv), ei = vmul(vsub(zki, zmi), halfv);
    const VF orr = vmul(vadd(zki, zmi), halfv), oi = vmul(vsub(zmr, zkr), halfv);
    const VF cs = vset1(P.split_cos[k]), sn = vset1(P.split_sin[k]);
    // X = E + e^{-2 pi i k / N} O
    const VF xre = vadd(er, vfma(cs, orr, vmul(sn, oi)));
    const VF xim = vadd(ei, vsub(vmul(cs, oi), vmul(sn, orr)));
    VF pk = vfma(xre, xre, vmul(xim, xim));
    if (mag) pk = vsqrt(pk);
    vstore(pw + a, pk);
  }

  // ---- Mel bands, dB, DCT
  const int64_t T = c.frames;
  const bool full = t0 + W <= T;
  const int valid = int(std::min<int64_t>(W, T - t0));
  const VF amin = vset1(P.amin), dboff = vset1(P.db_offset);
  for (int m = 0; m < P.n_mels; ++m) {
    const float* w = P.mel_w.data() + P.mel_off[m];
    const float* src = pw + size_t(P.mel_lo[m]) * W;
    VF acc0 = vset1(0.0f), acc1 = vset1(0.0f);
    const int len = P.mel_len[m];
    int j = 0;
    for (; j + 1 < len; j += 2) {
      acc0 = vfma(vset1(w[j]), vload(src + size_t(j) * W), acc0);
      acc1 = vfma(vset1(w[j + 1]), vload(src + size_t(j + 1) * W), acc1);
    }
    if (j < len) acc0 = vfma(vset1(w[j]), vload(src + size_t(j) * W), acc0);
    const VF d = vsub(vdb(vmax(vadd(acc0, acc1), amin)), dboff);
    vstore(db + size_t(m) * W, d);
    if (full) vstore(c.logmel + size_t(m) * T + t0, d);
    else std::memcpy(c.logmel + size_t(m) * T + t0, db + size_t(m) * W,
                     size_t(valid) * sizeof(float));
  }
  if (!c.mfcc) return;
  const int M = P.n_mels;
  for (int k = 0; k < P.n_mfcc; ++k) {
    const float* row = P.dct.data() + size_t(k) * M;
    VF acc0 = vset1(0.0f), acc1 = vset1(0.0f);
    int m = 0;
    for (; m + 1 < M; m += 2) {
      acc0 = vfma(vset1(row[m]), vload(db + size_t(m) * W), acc0);
      acc1 = vfma(vset1(row[m + 1]), vload(db + size_t(m + 1) * W), acc1);
    }
    if (m < M) acc0 = vfma(vset1(row[m]), vload(db + size_t(m) * W), acc0);
    const VF r = vadd(acc0, acc1);
    if (full) vstore(c.mfcc + size_t(k) * T + t0, r);
    else {
      vstore(stage_out, r);
      std::memcpy(c.mfcc + size_t(k) * T + t0, stage_out, size_t(valid) * sizeof(float));
    }
  }
}

}  // namespace MMENGINE_ISA_NS
}  // namespace frontend
}  // namespace mmengine
