// The whole fusion model in C++: everything between the front end's features and the logits.
//
// The graph is the default design of mmengine/models/fusion.py (FusionLSTM, stem "dilated"):
//
//   per time-series modality s (mfcc, logmel, symbolic), per clip whose mask is 1:
//     x   = (raw[:rows] - mean) / std, time-major (T, rows)      [symbolic: NaN -> 0, +-inf -> +-max]
//     mel: x |= BN(spectral flux of raw logmel in band_edges)   (flux_bands extra columns)
//     z   = ReLU(conv3(x))                                       (BatchNorm folded into the conv)
//     z   = z + ReLU(conv3_d(z)) for every dilation d             (residual dilated blocks)
//   fused[b, t', :] = avg_pool_{stride}([z_s * m_s, m_s] for s in order)   (ceil mode)
//   y  = LSTM stack over fused (lstm::Model), or fused itself without a recurrence
//   p  = pool(y): last step, mean, or mean ++ max over time
//   late = [ReLU(text @ Wt + bt) * m_text, m_text] ++ [BN(key scores) ++ BN(meter profile)] * m_sym
//          ++ BN(key scores of the chroma's profile) * m_mel        (the audio pitch head)
//          ++ BN([meter profile of the log-Mel and chroma, its template scores]) * m_mel
//                                                                  (the audio meter head)
//   logits = [p, late] @ Wh + bh
//
// Convolutions run time-major (rows = frames, columns = channels) on zero-padded buffers, so a
// dilated kernel-3 convolution is three shifted GEMMs with the channels in SIMD lanes
// (model_kernels.cpp, compiled per ISA). Work buffers are allocated once (grown, never shrunk)
// and reused; one forward at a time per graph (mutex).
#pragma once

#include <cstddef>
#include <cstdint>
#include <mutex>
#include <vector>

#include "common/buffer.h"
#include "common/cpu_features.h"
#include "lstm/lstm.h"

namespace mmengine {
namespace model {

// One time-major convolution: y[t, o] = act(b[o] + sum_k sum_i x[t + (k - (K-1)/2) * dil, i]
// * w[k, i, o]) (+ res[t, o]); o < cout_pad (a multiple of 16; padded channels have zero
// weights and bias).
//
// bf16 graphs also keep wb: the weights as bf16 pairs of input channels (k, cin_pairs,
// cout_pad, 2), for the AVX512-BF16 kernel (vdpbf16ps: bf16 x bf16 pairs, fp32 accumulation),
// whose inputs are bf16 copies of the activations; the fp32 w then holds the same bf16 values,
// so every ISA computes with the same weights.
struct Conv {
  int cin = 0, cout = 0, cout_pad = 0, k = 3, dil = 1, cin_pairs = 0;
  AlignedBuffer<float> w;      // (k, cin, cout_pad)
  AlignedBuffer<float> b;      // (cout_pad)
  AlignedBuffer<uint16_t> wb;  // bf16 graphs: (k, cin_pairs, cout_pad, 2)
};

struct ConvArgs {
  const float* x = nullptr;  // row t at x + t * ldx; rows -pad .. T + pad - 1 readable
  ptrdiff_t ldx = 0;
  const uint16_t* xb = nullptr;  // bf16 kernel: the input as bf16 (row stride ldxb, even)
  ptrdiff_t ldxb = 0;
  const Conv* conv = nullptr;
  bool relu = true;
  const float* res = nullptr;  // residual added after the activation (or nullptr)
  ptrdiff_t ldr = 0;
  float* y = nullptr;
  ptrdiff_t ldy = 0;
  uint16_t* yb = nullptr;  // also store the output as bf16 here (or nullptr)
  ptrdiff_t ldyb = 0;
};

enum Input : int { kMfcc = 0, kLogmel = 1, kSymbolic = 2, kNumSeries = 3 };
enum Modality : int { kModMfcc = 0, kModMel = 1, kModText = 2, kModSymbolic = 3, kNumModalities = 4 };
enum Pooling : int { kLast = 0, kMean = 1, kMeanMax = 2 };

struct Stem {
  int input = 0;     // Input
  int modality = 0;  // Modality (its mask)
  int rows = 0;      // rows of the input array read (the first `rows`)
  int flux_bands = 0;
  std::vector<int> band_edges;          // flux_bands + 1 Mel-band indices
  std::vector<float> mean, inv_std;     // (rows)
  std::vector<float> flux_scale, flux_shift;  // (flux_bands): BatchNorm of the flux
  Conv inp;
  std::vector<Conv> blocks;
  int width = 0;  // output channels
  int col = 0;    // first column of its block in the fused sequence (mask at col + width)
  int pad = 0;    // zero rows above and below the time-major buffers (max dilation, >= 1)
  int cin() const { return rows + flux_bands; }
};

struct Graph {
  bool bf16 = false;  // convolutions with bf16 weights (and bf16 activations on AVX512-BF16)
  // sequence part
  std::vector<Stem> stems;
  int fused_dim = 0, pool_stride = 1, pooling = kMeanMax;
  bool has_rnn = false;
  lstm::Model rnn;
  // late streams (each optional)
  int text_in = 0, text_out = 0;      // Linear(text_in -> text_out) + ReLU, and its mask
  AlignedBuffer<float> text_w;        // (text_in, text_out)
  std::vector<float> text_b;
  int pitch_k = 0;                    // key templates
  std::vector<float> templates;       // (K, 12)
  std::vector<float> pitch_scale, pitch_shift;
  int meter_start = 0, meter_rows = 0;
  std::vector<float> meter_scale, meter_shift;
  bool late_symbolic = false;         // the notes' late block exists (pitch and/or meter)
  int symbolic_rows = 0;              // rows of the symbolic input array
  int chroma_k = 0;                   // key templates of the audio pitch head (0 = none)
  std::vector<float> chroma_templates;  // (K, 12)
  std::vector<float> chroma_scale, chroma_shift;
  // the audio meter head (models/streams.py AudioMeterHead): autocorrelation of the onset
  // envelope and self-similarity of the chroma at `meter_lags`, read at `meter_bins`
  // log-spaced lags through `meter_lag_w` (lags, bins); `meter_k` templates (K, 2, width)
  // at `meter_shifts` positions; BatchNorm over the 2 * bins + K outputs
  bool audio_meter = false;
  int meter_bins = 0, meter_k = 0, meter_width = 0, meter_shifts = 0;
  std::vector<int> meter_lags;
  std::vector<float> meter_lag_w, meter_templates, am_scale, am_shift;
  bool meter_reads_chroma = false;
  int audio_meter_dim() const { return audio_meter ? 2 * meter_bins + meter_k : 0; }
  // head
  int n_classes = 0, head_in = 0;
  AlignedBuffer<float> head_w;        // (head_in, n_classes)
  std::vector<float> head_b;
  bool finalized = false;

  // workspace (grown on demand)
  int ws_frames = 0, ws_threads = 0;
  std::vector<AlignedBuffer<float>> bufs;      // 3 time-major (pad + T + pad, cmax) buffers
  std::vector<AlignedBuffer<uint16_t>> bufs_b;  // bf16 graphs: their bf16 copies (ld_b)
  int buf_ld = 0, buf_ld_b = 0, buf_pad = 0;
  AlignedBuffer<float> fused;  // (B, T', D)
  AlignedBuffer<float> yseq;   // (B, T', H)
  AlignedBuffer<float> hn, cn; // (L, B, H)
  std::mutex mutex;

  int out_frames(int frames) const { return (frames + pool_stride - 1) / pool_stride; }
  int pooled_dim() const;
  int late_dim() const;
};

struct ForwardArgs {
  const float* series[kNumSeries] = {nullptr, nullptr, nullptr};  // (B, rows_s, T) or nullptr
  int series_rows[kNumSeries] = {0, 0, 0};
  const float* text = nullptr;  // (B, text_in) or nullptr
  const float* chroma = nullptr;  // (B, 12, T) chroma in dB, or nullptr
  const float* masks = nullptr; // (B, kNumModalities) 0/1 per modality (0 where absent)
  int batch = 0, frames = 0, threads = 1;
  float* logits = nullptr;      // (B, n_classes)
};

// Validate the assembled graph (shapes agree: fused width, head rows); throws
// std::invalid_argument naming what does not fit.
void finalize(Graph& g);

// Fold-free conversion helpers used by the binding: take (cout, cin, k) torch-layout weights
// and write the packed (k, cin, cout_pad) layout.
void pack_conv(Conv& c, const float* w_torch, const float* bias, int cout, int cin, int k, int dil,
               bool bf16);

// Whole forward; the caller holds g.mutex. Throws std::invalid_argument on bad sizes.
void forward(Graph& g, const ForwardArgs& a, Isa isa);

// Per-ISA kernels (model_kernels.cpp): rows [t0, t1) of one convolution.
#define MM_DECLARE_MODEL_ISA(ns) \
  namespace ns { void conv1d(const ConvArgs& a, int t0, int t1); }
MM_DECLARE_MODEL_ISA(scalar)
#if defined(MMENGINE_X86_VARIANTS)
MM_DECLARE_MODEL_ISA(avx2)
MM_DECLARE_MODEL_ISA(avx512)
#endif
#undef MM_DECLARE_MODEL_ISA
#if defined(MMENGINE_HAVE_AVX512BF16)
// rows [t0, t1) with a.xb (bf16 input) and conv.wb (bf16 pairs): the AVX512-BF16 build only
namespace avx512 { void conv1d_bf16(const ConvArgs& a, int t0, int t1); }
#endif

}  // namespace model
}  // namespace mmengine
