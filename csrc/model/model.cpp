// ISA-independent part of the whole-model graph: checks, workspace, the per-clip schedule,
// the cheap clip-level layers (late streams, pooling, head) and dispatch of the convolutions.
#include "model/model.h"

#include <algorithm>
#include <cfloat>
#include <cmath>
#include <cstring>
#include <stdexcept>
#include <string>

#ifdef _OPENMP
#include <omp.h>
#endif

namespace mmengine {
namespace model {

namespace {

void check(bool ok, const std::string& what) {
  if (!ok) throw std::invalid_argument("native model: " + what);
}

constexpr int kPadTo = 16;  // channel padding of every time-major buffer and conv output

int round_up(int n, int m) { return (n + m - 1) / m * m; }

uint16_t bf16_of(float x) {  // round to nearest even, as torch and vstore_bf16
  uint32_t b;
  std::memcpy(&b, &x, 4);
  b += 0x7FFFu + ((b >> 16) & 1u);
  return uint16_t(b >> 16);
}

float f32_of(uint16_t h) {
  const uint32_t b = uint32_t(h) << 16;
  float x;
  std::memcpy(&x, &b, 4);
  return x;
}

void conv1d(const ConvArgs& a, int t0, int t1, Isa isa) {
#if defined(MMENGINE_HAVE_AVX512BF16)
  if (a.xb && isa == Isa::Avx512Bf16) {
    avx512::conv1d_bf16(a, t0, t1);
    return;
  }
#endif
  switch (isa) {
#if defined(MMENGINE_X86_VARIANTS)
    case Isa::Avx512Bf16:
    case Isa::Avx512: avx512::conv1d(a, t0, t1); return;
    case Isa::Avx2: avx2::conv1d(a, t0, t1); return;
#endif
    default: scalar::conv1d(a, t0, t1); return;
  }
}

// [begin, end) of part `idx` of `n` items split into `parts` contiguous ranges
inline void split(int n, int parts, int idx, int& begin, int& end) {
  const int q = n / parts, r = n % parts;
  begin = idx * q + std::min(idx, r);
  end = begin + q + (idx < r ? 1 : 0);
}

inline float finite(float v) {
  if (std::isnan(v)) return 0.0f;
  if (std::isinf(v)) return v > 0 ? FLT_MAX : -FLT_MAX;
  return v;
}

}  // namespace

void pack_conv(Conv& c, const float* w_torch, const float* bias, int cout, int cin, int k, int dil,
               bool bf16) {
  check(cout > 0 && cin > 0 && k > 0 && k % 2 == 1 && dil > 0,
        "convolution sizes must be positive with an odd kernel");
  c.cin = cin;
  c.cout = cout;
  c.cout_pad = round_up(cout, kPadTo);
  c.k = k;
  c.dil = dil;
  c.w.reserve(size_t(k) * cin * c.cout_pad);
  c.b.reserve(size_t(c.cout_pad));
  std::fill(c.w.data(), c.w.data() + size_t(k) * cin * c.cout_pad, 0.0f);
  std::fill(c.b.data(), c.b.data() + c.cout_pad, 0.0f);
  for (int o = 0; o < cout; ++o) {
    c.b.data()[o] = bias[o];
    for (int i = 0; i < cin; ++i)
      for (int j = 0; j < k; ++j)
        c.w.data()[(size_t(j) * cin + i) * c.cout_pad + o] = w_torch[(size_t(o) * cin + i) * k + j];
  }
  if (!bf16) return;
  c.cin_pairs = (cin + 1) / 2;
  const size_t n = size_t(k) * c.cin_pairs * c.cout_pad * 2;
  c.wb.reserve(n);
  std::fill(c.wb.data(), c.wb.data() + n, uint16_t(0));
  for (int j = 0; j < k; ++j)
    for (int i = 0; i < cin; ++i)
      for (int o = 0; o < cout; ++o) {
        float& w = c.w.data()[(size_t(j) * cin + i) * c.cout_pad + o];
        const uint16_t h = bf16_of(w);
        w = f32_of(h);  // every ISA computes with the bf16 weights
        c.wb.data()[((size_t(j) * c.cin_pairs + i / 2) * c.cout_pad + o) * 2 + (i % 2)] = h;
      }
}

int Graph::pooled_dim() const {
  const int width = has_rnn ? rnn.hidden : fused_dim;
  return pooling == kMeanMax ? 2 * width : width;
}

int Graph::late_dim() const {
  return (text_out > 0 ? text_out + 1 : 0) + (late_symbolic ? pitch_k + meter_rows : 0) +
         chroma_k + audio_meter_dim();
}

void finalize(Graph& g) {
  check(!g.stems.empty(), "the graph has no time-series stem");
  check(g.pool_stride >= 1, "pool stride must be >= 1");
  check(g.pooling >= kLast && g.pooling <= kMeanMax, "unknown pooling");
  int col = 0;
  for (const Stem& s : g.stems) {
    check(s.input >= 0 && s.input < kNumSeries, "stem input out of range");
    check(s.modality >= 0 && s.modality < kNumModalities, "stem modality out of range");
    check(s.rows > 0 && int(s.mean.size()) == s.rows && int(s.inv_std.size()) == s.rows,
          "stem normalisation statistics do not match its rows");
    check(s.flux_bands == 0 || (s.input == kLogmel && int(s.band_edges.size()) == s.flux_bands + 1 &&
                                int(s.flux_scale.size()) == s.flux_bands &&
                                int(s.flux_shift.size()) == s.flux_bands),
          "spectral flux needs band edges and a BatchNorm per band, on the log-Mel");
    for (size_t k = 0; k + 1 < s.band_edges.size(); ++k)
      check(s.band_edges[k] >= 0 && s.band_edges[k] < s.band_edges[k + 1] &&
                s.band_edges[k + 1] <= s.rows,
            "flux band edges must increase within the log-Mel rows");
    check(s.inp.cin == s.cin() && s.inp.cout == s.width, "stem input convolution does not fit");
    for (const Conv& c : s.blocks)
      check(c.cin == s.width && c.cout == s.width, "residual block does not keep the width");
    check(s.col == col, "stem blocks must be contiguous in the fused sequence");
    col += s.width + 1;
  }
  check(col == g.fused_dim, "fused width " + std::to_string(g.fused_dim) + " != stems' " +
                                std::to_string(col));
  if (g.has_rnn) check(g.rnn.input_size == g.fused_dim, "LSTM input size != fused width");
  check(g.text_out == 0 || (g.text_in > 0 && int(g.text_b.size()) == g.text_out),
        "text projection sizes");
  check(g.pitch_k == 0 || (int(g.templates.size()) == 12 * g.pitch_k &&
                           int(g.pitch_scale.size()) == g.pitch_k &&
                           int(g.pitch_shift.size()) == g.pitch_k),
        "pitch head sizes");
  check(g.chroma_k == 0 || (int(g.chroma_templates.size()) == 12 * g.chroma_k &&
                            int(g.chroma_scale.size()) == g.chroma_k &&
                            int(g.chroma_shift.size()) == g.chroma_k),
        "audio pitch head sizes");
  if (g.audio_meter) {
    const size_t nl = g.meter_lags.size();
    check(g.meter_bins > 0 && nl > 0 && g.meter_lag_w.size() == nl * size_t(g.meter_bins),
          "audio meter: lag weights must be (lags, bins)");
    for (size_t i = 0; i < nl; ++i)
      check(g.meter_lags[i] >= 0 && (i == 0 || g.meter_lags[i] > g.meter_lags[i - 1]),
            "audio meter: lags must increase from 0");
    check(g.meter_shifts >= 1 && g.meter_width >= 1 &&
              g.meter_width + g.meter_shifts - 1 == g.meter_bins &&
              g.meter_templates.size() == size_t(g.meter_k) * 2 * g.meter_width,
          "audio meter: templates must be (K, 2, bins - shifts + 1)");
    check(int(g.am_scale.size()) == g.audio_meter_dim() &&
              int(g.am_shift.size()) == g.audio_meter_dim(),
          "audio meter: BatchNorm sizes");
  }
  check(g.meter_rows == 0 || (int(g.meter_scale.size()) == g.meter_rows &&
                              int(g.meter_shift.size()) == g.meter_rows),
        "meter profile sizes");
  check(!g.late_symbolic || g.symbolic_rows >= std::max(g.pitch_k ? 12 : 0, g.meter_start + g.meter_rows),
        "the notes have fewer rows than the late streams read");
  check(g.n_classes > 0 && g.head_in == g.pooled_dim() + g.late_dim() &&
            int(g.head_b.size()) == g.n_classes,
        "head is (" + std::to_string(g.head_in) + ", C) but pooling + late give " +
            std::to_string(g.pooled_dim() + g.late_dim()));
  g.finalized = true;
}

namespace {

int radius(const Conv& c) { return c.dil * (c.k - 1) / 2; }

// Frames a stem's output at t depends on, each side (the receptive field's radius).
int stem_radius(const Stem& s) {
  int r = radius(s.inp);
  for (const Conv& c : s.blocks) r += radius(c);
  return r;
}

// Work buffers for `rows` frames of a segment (its halo included) on each of `threads`.
void plan(Graph& g, int B, int rows, int T, int threads) {
  int cmax = 0, pad = 1;
  for (const Stem& s : g.stems) {
    cmax = std::max({cmax, round_up(s.cin(), kPadTo), s.inp.cout_pad});
    for (const Conv& c : s.blocks) {
      cmax = std::max(cmax, c.cout_pad);
      pad = std::max(pad, radius(c));
    }
    pad = std::max(pad, radius(s.inp));
  }
  const int Tp = g.out_frames(T);
  if (rows > g.ws_frames || threads > g.ws_threads || cmax != g.buf_ld || pad != g.buf_pad) {
    const int n = std::max(threads, g.ws_threads);
    rows = std::max(rows, g.ws_frames);
    g.bufs.resize(3 * size_t(n));
    for (auto& b : g.bufs) {
      b = AlignedBuffer<float>();
      b.reserve(size_t(rows + 2 * pad) * cmax);
    }
    g.buf_ld_b = round_up(cmax, 32);
    g.bufs_b.resize(g.bf16 ? 3 * size_t(n) : 0);
    for (auto& b : g.bufs_b) {
      b = AlignedBuffer<uint16_t>();
      b.reserve(size_t(rows + 2 * pad) * g.buf_ld_b);
    }
    g.buf_ld = cmax;
    g.buf_pad = pad;
    g.ws_frames = rows;
    g.ws_threads = n;
  }
  g.fused.reserve(size_t(B) * Tp * g.fused_dim);
  if (g.has_rnn) {
    g.yseq.reserve(size_t(B) * Tp * g.rnn.hidden);
    g.hn.reserve(size_t(g.rnn.num_layers) * B * g.rnn.hidden);
    g.cn.reserve(size_t(g.rnn.num_layers) * B * g.rnn.hidden);
  }
}

// Rows [t0, t1) of the stem's time-major input: normalised rows, then the flux columns.
// x row (t - origin) holds frame t.
void stem_input(const Stem& s, const float* raw, int T, bool sanitize, float* x, ptrdiff_t ldx,
                int t0, int t1, int origin) {
  x -= ptrdiff_t(origin) * ldx;
  for (int r = 0; r < s.rows; ++r) {
    const float* src = raw + size_t(r) * T;
    const float m = s.mean[r], inv = s.inv_std[r];
    if (sanitize)
      for (int t = t0; t < t1; ++t) x[t * ldx + r] = (finite(src[t]) - m) * inv;
    else
      for (int t = t0; t < t1; ++t) x[t * ldx + r] = (src[t] - m) * inv;
  }
  for (int k = 0; k < s.flux_bands; ++k) {
    const int lo = s.band_edges[k], hi = s.band_edges[k + 1];
    const float inv_n = 1.0f / float(hi - lo);
    for (int t = t0; t < t1; ++t) {
      float acc = 0.0f;
      if (t > 0)
        for (int m = lo; m < hi; ++m) {
          const float d = raw[size_t(m) * T + t] - raw[size_t(m) * T + t - 1];
          acc += d > 0.0f ? d : 0.0f;
        }
      x[t * ldx + s.rows + k] = acc * inv_n * s.flux_scale[k] + s.flux_shift[k];
    }
  }
  // columns between cin and the padded width stay as they are: their weights are zero
}

// fused[t', col .. col + width] = ceil-mode average over `stride` frames of y (row t - origin
// holds frame t), then the mask
void pool_into(const float* y, ptrdiff_t ldy, int T, int stride, int width, float mask, float* fused,
               int D, int col, int p0, int p1, int origin) {
  y -= ptrdiff_t(origin) * ldy;
  for (int p = p0; p < p1; ++p) {
    const int a = p * stride, b = std::min(T, a + stride);
    const float inv = mask / float(b - a);
    float* out = fused + size_t(p) * D + col;
    for (int c = 0; c < width; ++c) out[c] = 0.0f;
    for (int t = a; t < b; ++t) {
      const float* row = y + t * ldy;
      for (int c = 0; c < width; ++c) out[c] += row[c];
    }
    for (int c = 0; c < width; ++c) out[c] *= inv;
    out[width] = mask;
  }
}

// Key-template scores of a pitch-class profile (models/streams.py PitchClassHead): the profile
// standardised over the 12 classes, correlated with each template at every rotation, the
// maximum over rotations, then BatchNorm (eval), times the mask m.
void key_scores(const double (&profile)[12], const std::vector<float>& templates,
                const std::vector<float>& scale, const std::vector<float>& shift, int K, float m,
                float* o) {
  double prof[12], mean = 0.0, ss = 0.0;
  for (int j = 0; j < 12; ++j) mean += profile[j];
  mean /= 12.0;
  for (int j = 0; j < 12; ++j) {
    prof[j] = profile[j] - mean;
    ss += prof[j] * prof[j];
  }
  const double sd = std::sqrt(ss / 12.0 + 1e-8);
  float z[12];
  for (int j = 0; j < 12; ++j) z[j] = float(prof[j] / sd);
  for (int k = 0; k < K; ++k) {
    const float* w = templates.data() + size_t(k) * 12;
    float best = -FLT_MAX;
    for (int s = 0; s < 12; ++s) {
      float r = 0.0f;
      for (int j = 0; j < 12; ++j) r += z[(j + s) % 12] * w[j];
      best = std::max(best, r / 12.0f);
    }
    o[k] = (best * scale[k] + shift[k]) * m;
  }
}

// The audio key scores (models/streams.py chroma_profile): each frame of the chroma (dB)
// relative to its loudest class, 10^(dB/10), averaged over the clip.
void chroma_scores(const Graph& g, const ForwardArgs& a, int b, float* o) {
  const float m = a.chroma ? a.masks[size_t(b) * kNumModalities + kModMel] : 0.0f;
  if (m == 0.0f) {
    for (int k = 0; k < g.chroma_k; ++k) o[k] = 0.0f;
    return;
  }
  const int T = a.frames;
  const float* c = a.chroma + size_t(b) * 12 * T;
  double prof[12] = {0.0};
  for (int t = 0; t < T; ++t) {
    float top = c[t];
    for (int j = 1; j < 12; ++j) top = std::max(top, c[size_t(j) * T + t]);
    for (int j = 0; j < 12; ++j) prof[j] += std::pow(10.0, double(c[size_t(j) * T + t] - top) / 10.0);
  }
  for (int j = 0; j < 12; ++j) prof[j] /= T;
  key_scores(prof, g.chroma_templates, g.chroma_scale, g.chroma_shift, g.chroma_k, m, o);
}

// sum over rows c and t < T - lag of x[c][t] * x[c][t + lag] for each lag (x row-major (C, T))
void lagged_sums(const double* x, int C, int T, const std::vector<int>& lags, double* out) {
  for (size_t i = 0; i < lags.size(); ++i) {
    const int l = lags[i];
    double acc = 0.0;
    for (int c = 0; c < C; ++c) {
      const double* r = x + size_t(c) * T;
      for (int t = 0; t + l < T; ++t) acc += r[t] * r[t + l];
    }
    out[i] = acc;
  }
}

// The audio meter head (models/streams.py audio_meter_profile and AudioMeterHead).
void audio_meter_scores(const Graph& g, const ForwardArgs& a, int b, float* o) {
  const int D = g.audio_meter_dim(), T = a.frames, M = a.series_rows[kLogmel];
  const float* mel = a.series[kLogmel];
  const float m = mel ? a.masks[size_t(b) * kNumModalities + kModMel] : 0.0f;
  if (m == 0.0f) {
    for (int i = 0; i < D; ++i) o[i] = 0.0f;
    return;
  }
  const int B = g.meter_bins, nl = int(g.meter_lags.size());
  std::vector<double> prof(size_t(2) * B, 0.0), sums(nl), x(static_cast<size_t>(T));
  // onset envelope: frame 0 is 0, then the mean positive rise over the Mel bands; centred
  const float* s = mel + size_t(b) * M * T;
  x[0] = 0.0;
  for (int t = 1; t < T; ++t) {
    double acc = 0.0;
    for (int k = 0; k < M; ++k) {
      const double d = double(s[size_t(k) * T + t]) - double(s[size_t(k) * T + t - 1]);
      acc += d > 0.0 ? d : 0.0;
    }
    x[t] = acc / M;
  }
  double mean = 0.0, energy = 0.0;
  for (int t = 0; t < T; ++t) mean += x[t];
  mean /= T;
  for (int t = 0; t < T; ++t) {
    x[t] -= mean;
    energy += x[t] * x[t];
  }
  lagged_sums(x.data(), 1, T, g.meter_lags, sums.data());
  for (int i = 0; i < nl; ++i) {
    const double r = sums[i] / (energy + 1e-8);
    for (int j = 0; j < B; ++j) prof[j] += r * g.meter_lag_w[size_t(i) * B + j];
  }
  if (g.meter_reads_chroma && a.chroma) {
    // each frame's linear chroma over its loudest class, unit length; mean cosine per lag
    const float* c = a.chroma + size_t(b) * 12 * T;
    std::vector<double> lin(size_t(12) * T);
    for (int t = 0; t < T; ++t) {
      float top = c[t];
      for (int j = 1; j < 12; ++j) top = std::max(top, c[size_t(j) * T + t]);
      double ss = 0.0;
      for (int j = 0; j < 12; ++j) {
        const double v = std::pow(10.0, double(c[size_t(j) * T + t] - top) / 10.0);
        lin[size_t(j) * T + t] = v;
        ss += v * v;
      }
      const double inv = 1.0 / std::sqrt(ss + 1e-12);
      for (int j = 0; j < 12; ++j) lin[size_t(j) * T + t] *= inv;
    }
    lagged_sums(lin.data(), 12, T, g.meter_lags, sums.data());
    double* row = prof.data() + B;
    for (int i = 0; i < nl; ++i) {
      const double v = sums[i] / std::max(double(T - g.meter_lags[i]), 1.0);
      for (int j = 0; j < B; ++j) row[j] += v * g.meter_lag_w[size_t(i) * B + j];
    }
    double mu = 0.0, sq = 0.0;
    for (int j = 0; j < B; ++j) mu += row[j];
    mu /= B;
    for (int j = 0; j < B; ++j) {
      row[j] -= mu;
      sq += row[j] * row[j];
    }
    const double sd = std::sqrt(sq / B + 1e-8);
    for (int j = 0; j < B; ++j) row[j] /= sd;
  }
  std::vector<double> v(static_cast<size_t>(D));
  for (int j = 0; j < 2 * B; ++j) v[j] = prof[j];
  const int W = g.meter_width;
  for (int k = 0; k < g.meter_k; ++k) {
    const float* w = g.meter_templates.data() + size_t(k) * 2 * W;
    double best = -DBL_MAX;
    for (int sh = 0; sh < g.meter_shifts; ++sh) {
      double r = 0.0;
      for (int c = 0; c < 2; ++c)
        for (int i = 0; i < W; ++i) r += prof[size_t(c) * B + sh + i] * w[c * W + i];
      best = std::max(best, r / (2.0 * W));
    }
    v[2 * B + k] = best;
  }
  for (int i = 0; i < D; ++i) o[i] = (float(v[i]) * g.am_scale[i] + g.am_shift[i]) * m;
}

// One clip's late vector (text, key scores, meter profile, audio key scores, audio meter),
// written to `late`.
void late_streams(const Graph& g, const ForwardArgs& a, int b, float* late) {
  const int am = g.audio_meter_dim();
  if (g.chroma_k > 0) chroma_scores(g, a, b, late + g.late_dim() - am - g.chroma_k);
  if (am > 0) audio_meter_scores(g, a, b, late + g.late_dim() - am);
  const float* masks = a.masks + size_t(b) * kNumModalities;
  float* o = late;
  if (g.text_out > 0) {
    const float m = a.text ? masks[kModText] : 0.0f;
    if (m != 0.0f) {
      const float* x = a.text + size_t(b) * g.text_in;
      for (int e = 0; e < g.text_out; ++e) o[e] = g.text_b[e];
      for (int v = 0; v < g.text_in; ++v) {
        const float xv = x[v];
        if (xv == 0.0f) continue;  // TF-IDF rows are sparse
        const float* w = g.text_w.data() + size_t(v) * g.text_out;
        for (int e = 0; e < g.text_out; ++e) o[e] += xv * w[e];
      }
      for (int e = 0; e < g.text_out; ++e) o[e] = (o[e] > 0.0f ? o[e] : 0.0f) * m;
    } else {
      for (int e = 0; e < g.text_out; ++e) o[e] = 0.0f;
    }
    o[g.text_out] = m;
    o += g.text_out + 1;
  }
  if (!g.late_symbolic) return;
  const float* sym = a.series[kSymbolic];
  const float m = sym ? masks[kModSymbolic] : 0.0f;
  const int T = a.frames, S = a.series_rows[kSymbolic];
  if (m == 0.0f) {
    for (int i = 0; i < g.pitch_k + g.meter_rows; ++i) o[i] = 0.0f;
    return;
  }
  const float* raw = sym + size_t(b) * S * T;
  if (g.pitch_k > 0) {
    // the duration-weighted pitch-class profile of the notes
    double prof[12];
    for (int j = 0; j < 12; ++j) {
      double acc = 0.0;
      for (int t = 0; t < T; ++t) acc += finite(raw[size_t(j) * T + t]);
      prof[j] = acc / T;
    }
    key_scores(prof, g.templates, g.pitch_scale, g.pitch_shift, g.pitch_k, m, o);
    o += g.pitch_k;
  }
  for (int r = 0; r < g.meter_rows; ++r) {
    double acc = 0.0;
    const float* src = raw + size_t(g.meter_start + r) * T;
    for (int t = 0; t < T; ++t) acc += finite(src[t]);
    o[r] = (float(acc / T) * g.meter_scale[r] + g.meter_shift[r]) * m;
  }
}

}  // namespace

void forward(Graph& g, const ForwardArgs& a, Isa isa) {
  check(g.finalized, "forward before finalize");
  const int B = a.batch, T = a.frames, threads = std::max(1, a.threads);
  check(B >= 0 && T > 0, "need at least one frame");
  check(a.masks != nullptr, "masks are required");
  for (const Stem& s : g.stems)
    if (a.series[s.input])
      check(a.series_rows[s.input] >= s.rows,
            "input " + std::to_string(s.input) + " has " + std::to_string(a.series_rows[s.input]) +
                " rows, the model reads " + std::to_string(s.rows));
  if (g.late_symbolic && a.series[kSymbolic])
    check(a.series_rows[kSymbolic] == g.symbolic_rows, "the notes have the wrong number of rows");
  if (B == 0) return;
  // Work items: (clip, segment of frames). With fewer clips than threads a clip is cut into
  // segments (boundaries on multiples of the pool stride) that are computed with their halo
  // (each layer on the frames the later layers read), so threads never wait for each other
  // inside a stem: no barrier at all until the recurrence, which matters on a busy machine.
  int R = 0;
  for (const Stem& s : g.stems) R = std::max(R, stem_radius(s));
  const int nseg = B >= threads ? 1 : std::min((threads + B - 1) / B, std::max(1, T / 64));
  const int seg = round_up((T + nseg - 1) / nseg, g.pool_stride);
  const int items = B * nseg;
  plan(g, B, std::min(T, seg + 2 * R), T, threads);
  const int Tp = g.out_frames(T), D = g.fused_dim;
  const ptrdiff_t ld = g.buf_ld, ldb = g.buf_ld_b;
  const int pad = g.buf_pad;
  const bool bf16 = g.bf16 && isa == Isa::Avx512Bf16;
  float* fused = g.fused.data();

#pragma omp parallel for schedule(dynamic, 1) num_threads(std::min(threads, items))
  for (int item = 0; item < items; ++item) {
#ifdef _OPENMP
    const int tid = omp_get_thread_num();
#else
    const int tid = 0;
#endif
    const int b = item / nseg, lo = (item % nseg) * seg, hi = std::min(T, lo + seg);
    if (lo >= hi) continue;
    const int p0 = lo / g.pool_stride, p1 = (hi + g.pool_stride - 1) / g.pool_stride;
    float* fb = fused + size_t(b) * Tp * D;
    for (const Stem& s : g.stems) {
      const float* series = a.series[s.input];
      const float m = series ? a.masks[size_t(b) * kNumModalities + s.modality] : 0.0f;
      if (m == 0.0f) {  // missing: zero block and mask channel (nothing to compute)
        for (int p = p0; p < p1; ++p)
          std::fill(fb + size_t(p) * D + s.col, fb + size_t(p) * D + s.col + s.width + 1, 0.0f);
        continue;
      }
      // buffer row r holds frame origin + r; rows outside [0, T) are the zero padding
      const int rs = stem_radius(s), origin = std::max(0, lo - rs);
      const int last = std::min(T, hi + rs);  // frames [origin, last) are ever computed
      float* buf[3];
      uint16_t* bb[3] = {nullptr, nullptr, nullptr};
      for (int i = 0; i < 3; ++i) {
        float* base = g.bufs[3 * size_t(tid) + i].data();
        buf[i] = base + ptrdiff_t(pad) * ld;
        std::fill(base, buf[i], 0.0f);  // frames before 0 (only read when origin == 0)
        std::fill(buf[i] + ptrdiff_t(last - origin) * ld, buf[i] + ptrdiff_t(last - origin + pad) * ld,
                  0.0f);
        if (bf16) {
          uint16_t* bbase = g.bufs_b[3 * size_t(tid) + i].data();
          bb[i] = bbase + ptrdiff_t(pad) * ldb;
          std::fill(bbase, bb[i], uint16_t(0));
          std::fill(bb[i] + ptrdiff_t(last - origin) * ldb,
                    bb[i] + ptrdiff_t(last - origin + pad) * ldb, uint16_t(0));
        }
      }
      float *x = buf[0], *y = buf[1], *z = buf[2];
      uint16_t *xb = bb[0], *yb = bb[1], *zb = bb[2];
      const float* raw = series + size_t(b) * a.series_rows[s.input] * T;
      stem_input(s, raw, T, s.input == kSymbolic, x, ld, origin, last, origin);
      if (bf16) {
        const int cin = s.cin(), cpad = round_up(cin, 2);
        for (int r = 0; r < last - origin; ++r) {
          for (int c = 0; c < cin; ++c) xb[r * ldb + c] = bf16_of(x[r * ld + c]);
          for (int c = cin; c < cpad; ++c) xb[r * ldb + c] = 0;
        }
      }
      // layer j computes the frames within the radius of the later layers
      int rem = rs - radius(s.inp);
      ConvArgs ca;
      ca.x = x; ca.ldx = ld; ca.conv = &s.inp; ca.relu = true; ca.y = y; ca.ldy = ld;
      if (bf16) { ca.xb = xb; ca.ldxb = ldb; ca.yb = yb; ca.ldyb = ldb; }
      conv1d(ca, std::max(0, lo - rem) - origin, std::min(T, hi + rem) - origin, isa);
      for (const Conv& c : s.blocks) {
        rem -= radius(c);
        ConvArgs cb;
        cb.x = y; cb.ldx = ld; cb.conv = &c; cb.relu = true; cb.res = y; cb.ldr = ld;
        cb.y = z; cb.ldy = ld;
        if (bf16) { cb.xb = yb; cb.ldxb = ldb; cb.yb = zb; cb.ldyb = ldb; }
        conv1d(cb, std::max(0, lo - rem) - origin, std::min(T, hi + rem) - origin, isa);
        std::swap(y, z);
        std::swap(yb, zb);
      }
      pool_into(y, ld, T, g.pool_stride, s.width, m, fb, D, s.col, p0, p1, origin);
    }
  }

  // -- recurrence ------------------------------------------------------------------------------
  const float* seq = fused;
  int width = D;
  if (g.has_rnn) {
    lstm::ForwardArgs la;
    la.x = fused;
    la.batch = B;
    la.steps = Tp;
    la.y_seq = g.pooling == kLast ? nullptr : g.yseq.data();
    la.h_n = g.hn.data();
    la.c_n = g.cn.data();
    la.threads = threads;
    {
      std::lock_guard<std::mutex> lock(g.rnn.mutex);
      lstm::plan_workspace(g.rnn, B, Tp, threads,
                           isa == Isa::Avx512Bf16 && g.rnn.wtype == lstm::WeightType::BF16);
      lstm::forward(g.rnn, la, isa);
    }
    seq = g.yseq.data();
    width = g.rnn.hidden;
  }

  // -- pooling, late streams, head -------------------------------------------------------------
  const int P = g.pooled_dim(), C = g.n_classes;
  std::vector<float> vec(size_t(g.head_in));
  for (int b = 0; b < B; ++b) {
    if (g.pooling == kLast) {
      const float* h = g.has_rnn ? g.hn.data() + (size_t(g.rnn.num_layers - 1) * B + b) * width
                                 : seq + (size_t(b) * Tp + Tp - 1) * width;
      std::copy(h, h + width, vec.begin());
    } else {
      float* mean = vec.data();
      float* mx = vec.data() + width;
      const float* yb = seq + size_t(b) * Tp * width;
      for (int c = 0; c < width; ++c) { mean[c] = 0.0f; }
      if (g.pooling == kMeanMax)
        for (int c = 0; c < width; ++c) mx[c] = -FLT_MAX;
      for (int t = 0; t < Tp; ++t) {
        const float* row = yb + size_t(t) * width;
        for (int c = 0; c < width; ++c) mean[c] += row[c];
        if (g.pooling == kMeanMax)
          for (int c = 0; c < width; ++c) mx[c] = std::max(mx[c], row[c]);
      }
      for (int c = 0; c < width; ++c) mean[c] /= float(Tp);
    }
    late_streams(g, a, b, vec.data() + P);
    float* out = a.logits + size_t(b) * C;
    for (int c = 0; c < C; ++c) out[c] = g.head_b[c];
    for (int i = 0; i < g.head_in; ++i) {
      const float v = vec[i];
      const float* w = g.head_w.data() + size_t(i) * C;
      for (int c = 0; c < C; ++c) out[c] += v * w[c];
    }
  }
}

}  // namespace model
}  // namespace mmengine
