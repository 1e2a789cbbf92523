// ISA-independent part of the native front end: plan (twiddles, sparse filter bank), thread
// scratch, and the parallel loop over (clip, block) work items.
#include "frontend/frontend.h"

#include <algorithm>
#include <cmath>
#include <stdexcept>
#include <string>

#ifdef _OPENMP
#include <omp.h>
#endif

namespace mmengine {
namespace frontend {

namespace {

void check(bool ok, const std::string& what) {
  if (!ok) throw std::invalid_argument("native front end: " + what);
}

int lanes_of(Isa isa) {
  switch (isa) {
#if defined(MMENGINE_X86_VARIANTS)
    case Isa::Avx512Bf16:
    case Isa::Avx512: return avx512::lanes();
    case Isa::Avx2: return avx2::lanes();
#endif
    default: return scalar::lanes();
  }
}

using BlockFn = void (*)(const Plan&, const Clip&, int64_t, float*);

BlockFn block_of(Isa isa) {
  switch (isa) {
#if defined(MMENGINE_X86_VARIANTS)
    case Isa::Avx512Bf16:
    case Isa::Avx512: return &avx512::block;
    case Isa::Avx2: return &avx2::block;
#endif
    default: return &scalar::block;
  }
}

}  // namespace

void init_plan(Plan& p, int n_fft, int hop, bool center, bool reflect, float power,
               const float* window, const float* melfb, int n_mels, const float* dct,
               int n_mfcc, float amin, float db_ref) {
  check(n_fft >= 16 && (n_fft & (n_fft - 1)) == 0, "n_fft must be a power of two >= 16, got " +
        std::to_string(n_fft));
  check(hop >= 1, "hop must be >= 1");
  check(power == 1.0f || power == 2.0f, "power must be 1 or 2");
  check(n_mels >= 1, "need at least one Mel band");
  check(n_mfcc >= 0 && n_mfcc <= n_mels, "n_mfcc must be in [0, n_mels]");
  check(amin > 0.0f && db_ref > 0.0f, "amin and db_ref must be > 0");
  p.n_fft = n_fft;
  p.half = n_fft / 2;
  p.n_bins = p.half + 1;
  p.hop = hop;
  p.center = center;
  p.reflect = reflect;
  p.power = power;
  p.amin = amin;
  p.db_offset = float(10.0 * std::log10(double(db_ref)));
  p.n_mels = n_mels;
  p.n_mfcc = n_mfcc;
  p.window.assign(window, window + n_fft);

  // Stockham radix-4 stages of the half-size complex FFT, then radix 2 if a factor 2 is left
  constexpr double kTwoPi = 6.283185307179586476925286766559;
  p.stage_len.clear();
  p.stage_tw.clear();
  int n = p.half;
  while (n >= 4) {
    p.stage_len.push_back(n);
    for (int q = 0; q < n / 4; ++q) {
      for (int k = 1; k <= 3; ++k) {
        const double a = -kTwoPi * double(k) * double(q) / double(n);
        p.stage_tw.push_back(float(std::cos(a)));
        p.stage_tw.push_back(float(std::sin(a)));
      }
    }
    n /= 4;
  }
  p.final_radix2 = (n == 2);
  p.split_cos.resize(p.half + 1);
  p.split_sin.resize(p.half + 1);
  for (int k = 0; k <= p.half; ++k) {
    const double a = kTwoPi * double(k) / double(n_fft);
    p.split_cos[k] = float(std::cos(a));
    p.split_sin[k] = float(std::sin(a));
  }

  // the filter bank as one contiguous run of bins per band (zeros inside a run are kept)
  p.mel_lo.assign(n_mels, 0);
  p.mel_len.assign(n_mels, 0);
  p.mel_off.assign(n_mels, 0);
  p.mel_w.clear();
  for (int m = 0; m < n_mels; ++m) {
    const float* row = melfb + size_t(m) * p.n_bins;
    int lo = 0, hi = p.n_bins;
    while (lo < hi && row[lo] == 0.0f) ++lo;
    while (hi > lo && row[hi - 1] == 0.0f) --hi;
    p.mel_lo[m] = lo;
    p.mel_len[m] = hi - lo;
    p.mel_off[m] = int(p.mel_w.size());
    p.mel_w.insert(p.mel_w.end(), row + lo, row + hi);
  }
  p.dct.assign(dct, dct + size_t(n_mfcc) * n_mels);
  p.scratch.clear();
}

int64_t n_frames(const Plan& p, int64_t n) {
  if (p.center) return 1 + n / p.hop;
  return n < p.n_fft ? 0 : 1 + (n - p.n_fft) / p.hop;
}

size_t scratch_floats(const Plan& p, int lanes) {
  const size_t W = size_t(lanes);
  const size_t fft = 4 * size_t(p.half) * W;               // two complex ping-pong buffers
  const size_t pw = size_t(p.n_bins) * W;                  // power spectrum
  const size_t db = size_t(p.n_mels) * W;                  // log-Mel of the block
  const size_t seg = (W - 1) * size_t(p.hop) + p.n_fft;    // padded samples of an edge block
  const size_t out = W;                                   // MFCC row of a partial block
  return fft + pw + db + seg + out + 16 * 6;               // + alignment slack
}

void compute(Plan& p, const std::vector<Clip>& clips, int threads, Isa isa) {
  const int W = lanes_of(isa);
  const BlockFn block = block_of(isa);
#ifndef _OPENMP
  threads = 1;
#endif
  threads = std::max(1, threads);
  // work items: (clip, first frame) for every block of W frames
  std::vector<std::pair<int, int64_t>> items;
  for (size_t i = 0; i < clips.size(); ++i)
    for (int64_t t = 0; t < clips[i].frames; t += W) items.emplace_back(int(i), t);
  if (items.empty()) return;
  threads = int(std::min<size_t>(size_t(threads), items.size()));
  std::lock_guard<std::mutex> lock(p.mutex);
  const size_t need = scratch_floats(p, W);
  if (p.scratch.size() < size_t(threads)) p.scratch.resize(threads);
  for (int t = 0; t < threads; ++t) p.scratch[t].reserve(need);
  const int64_t n_items = int64_t(items.size());
#ifdef _OPENMP
#pragma omp parallel for num_threads(threads) schedule(dynamic, 2)
#endif
  for (int64_t i = 0; i < n_items; ++i) {
#ifdef _OPENMP
    float* s = p.scratch[omp_get_thread_num()].data();
#else
    float* s = p.scratch[0].data();
#endif
    block(p, clips[items[i].first], items[i].second, s);
  }
}

}  // namespace frontend
}  // namespace mmengine
