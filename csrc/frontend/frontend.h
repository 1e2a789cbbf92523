// Native audio front end: framing + periodic window + real FFT + power + sparse Mel filter bank
// + dB + orthonormal DCT-II (MFCC), the features of mmengine/features/reference.py.
//
// Layout of the work: W consecutive frames of one clip are transformed together, one frame per
// SIMD lane (W = 16 with AVX-512, 8 with AVX2, 1 scalar), so that every butterfly, the Mel
// sums and the DCT are plain vertical vector arithmetic with no shuffles, and the outputs of
// a block are W consecutive columns of the (n_mels, frames) / (n_mfcc, frames) matrices.
// The N-point real FFT runs as an N/2-point complex FFT (Stockham radix-4, autosorting, one
// radix-2 pass when log2(N/2) is odd) of z[n] = x[2n] + i x[2n+1], then the split step.
//
// The filter bank, window and DCT come from Python (the reference's own definitions); the
// kernels only apply them. Work items are (clip, block) pairs spread over OpenMP threads, so
// one long clip uses every thread as well as a batch of short ones.
#pragma once

#include <cstdint>
#include <mutex>
#include <vector>

#include "common/buffer.h"
#include "common/cpu_features.h"

namespace mmengine {
namespace frontend {

struct Plan {
  int n_fft = 0, hop = 0, n_bins = 0, n_mels = 0, n_mfcc = 0;
  int half = 0;            // n_fft / 2: size of the complex FFT
  bool center = true;      // pad n_fft / 2 on both sides
  bool reflect = false;    // pad mode: reflect (no edge repeat) or zeros
  float power = 2.0f;      // 2: |X|^2, 1: |X|
  float amin = 1e-10f;     // floor before the log
  float db_offset = 0.0f;  // 10 log10(ref), subtracted
  std::vector<float> window;           // (n_fft)
  std::vector<float> stage_tw;         // per radix-4 stage, per p: w1re w1im w2re w2im w3re w3im
  std::vector<int> stage_len;          // n of each radix-4 stage (half, half/4, ...)
  bool final_radix2 = false;
  std::vector<float> split_cos, split_sin;  // cos / sin(2 pi k / n_fft), k = 0..half
  std::vector<int> mel_lo, mel_len, mel_off;  // nonzero bins of each band and where its weights start
  std::vector<float> mel_w;
  std::vector<float> dct;              // (n_mfcc, n_mels)
  // per-thread scratch, allocated on first use and kept (touching fresh pages is slow here)
  std::vector<AlignedBuffer<float>> scratch;
  std::mutex mutex;                    // one compute() at a time per plan (scratch is shared)
};

// One clip: waveform in, the two feature matrices out (caller-allocated, frames columns).
struct Clip {
  const float* y = nullptr;
  int64_t n = 0;
  int64_t frames = 0;
  float* logmel = nullptr;  // (n_mels, frames)
  float* mfcc = nullptr;    // (n_mfcc, frames), may be null
};

// Build a plan; throws std::invalid_argument on bad sizes (n_fft not a power of two >= 16, ...).
// melfb is (n_mels, n_fft / 2 + 1) dense, dct is (n_mfcc, n_mels) (n_mfcc may be 0).
void init_plan(Plan& p, int n_fft, int hop, bool center, bool reflect, float power,
               const float* window, const float* melfb, int n_mels, const float* dct,
               int n_mfcc, float amin, float db_ref);

// Frames of a clip of n samples (0 if too short without centring).
int64_t n_frames(const Plan& p, int64_t n);

// Floats of scratch one thread needs.
size_t scratch_floats(const Plan& p, int lanes);

// Compute every clip on `threads` threads (the binding resolves its default; < 1 = 1).
void compute(Plan& p, const std::vector<Clip>& clips, int threads, Isa isa);

// Per-ISA kernels: one block of up to `lanes` frames starting at frame t0 of clip c.
namespace scalar { int lanes(); void block(const Plan& p, const Clip& c, int64_t t0, float* scratch); }
#if defined(MMENGINE_X86_VARIANTS)
namespace avx2 { int lanes(); void block(const Plan& p, const Clip& c, int64_t t0, float* scratch); }
namespace avx512 { int lanes(); void block(const Plan& p, const Clip& c, int64_t t0, float* scratch); }
#endif

}  // namespace frontend
}  // namespace mmengine
