// libFuzzer harness for the native audio front end (csrc/frontend/*), built with ASan + UBSan
// by tests/fuzz/build.sh (the kernels once per ISA, as CMake builds them).
//
// The input picks everything the Python binding (csrc/bindings.cpp: MelFrontend) passes on:
// n_fft, hop, centring, pad mode, power, amin, db_ref, the window, a filter bank of any values
// (NaN, Inf, zeros: empty bands), a DCT matrix, 1-4 waveforms of any length and any float
// values, the ISA and the thread count. The binding's own argument checks are applied first
// (they are part of the entry point); then init_plan + n_frames + compute must either throw
// std::invalid_argument or fill every output column without a sanitizer report.
//
// Differential property: with finite inputs of ordinary size, every ISA the CPU runs gives the
// scalar kernel's log-Mel and MFCC within a tolerance.
#include <fuzzer/FuzzedDataProvider.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <stdexcept>
#include <vector>

#include "common/cpu_features.h"
#include "frontend/frontend.h"

namespace fe = mmengine::frontend;
using mmengine::Isa;

namespace {

// The ISAs this CPU runs (the checks of csrc/common/cpu_features.cpp, which clang 14 cannot
// compile: it does not know the "f16c" feature name).
std::vector<Isa> runnable_isas() {
  std::vector<Isa> out{Isa::Scalar};
#if defined(MMENGINE_X86_VARIANTS)
  __builtin_cpu_init();
  if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) out.push_back(Isa::Avx2);
  if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
      __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq"))
    out.push_back(Isa::Avx512);
#endif
  return out;
}

const std::vector<Isa>& isas() {
  static const std::vector<Isa> v = runnable_isas();
  return v;
}

// A float: mostly ordinary values, sometimes the special ones.
float pick_float(FuzzedDataProvider& in, bool finite) {
  const uint8_t kind = in.ConsumeIntegral<uint8_t>();
  if (!finite) {
    switch (kind) {
      case 0: return std::nanf("");
      case 1: return INFINITY;
      case 2: return -INFINITY;
      case 3: return 3.4e38f;
      case 4: return 1e-45f;  // denormal
      default: break;
    }
  }
  return in.ConsumeFloatingPointInRange<float>(-1.0f, 1.0f);
}

struct Out {
  std::vector<float> logmel, mfcc;
};

bool close(const std::vector<float>& a, const std::vector<float>& b, float tol) {
  for (size_t i = 0; i < a.size(); ++i) {
    const float x = a[i], y = b[i];
    if (std::isnan(x) || std::isnan(y) || std::isinf(x) || std::isinf(y)) continue;
    if (std::fabs(x - y) > tol * (1.0f + std::fabs(x))) return false;
  }
  return true;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  FuzzedDataProvider in(data, size);
  const bool finite = in.ConsumeBool();
  // n_fft: any int (init_plan checks it) or a valid power of two up to 1024 (kept small for speed)
  int n_fft = in.ConsumeBool() ? in.ConsumeIntegralInRange<int>(-64, 2048)
                               : 16 << in.ConsumeIntegralInRange<int>(0, 6);
  int hop = in.ConsumeBool() ? in.ConsumeIntegralInRange<int>(-4, 4096)
                             : in.ConsumeIntegralInRange<int>(1, std::max(1, n_fft));
  const bool center = in.ConsumeBool();
  const bool reflect = in.ConsumeBool();
  const float power = in.ConsumeBool() ? 2.0f : (in.ConsumeBool() ? 1.0f : pick_float(in, false));
  // finite mode: normal floats only (the dB kernel's contract; denormals are config errors)
  const float amin = in.ConsumeBool() ? 1e-10f
                     : finite ? in.ConsumeFloatingPointInRange<float>(1e-20f, 1.0f)
                              : pick_float(in, false);
  const float db_ref = in.ConsumeBool() ? 1.0f
                       : finite ? in.ConsumeFloatingPointInRange<float>(1e-6f, 1e6f)
                                : pick_float(in, false);
  const int n_mels = in.ConsumeIntegralInRange<int>(-1, 80);
  const int n_mfcc = in.ConsumeIntegralInRange<int>(-1, 40);
  if (n_fft < 1 || n_fft > 2048 || n_mels < 0 || n_mfcc < 0) {
    // the binding builds its arrays from these sizes first: only init_plan's own checks
    // are reachable with them, with matching arrays
    if (n_fft < 1 || n_fft > 2048) n_fft = 16;
  }
  const int n_bins = n_fft / 2 + 1;
  const int mels = std::max(n_mels, 0), mfccs = std::max(n_mfcc, 0);
  std::vector<float> window(static_cast<size_t>(n_fft));
  std::vector<float> melfb(static_cast<size_t>(mels) * n_bins);
  std::vector<float> dct(static_cast<size_t>(mfccs) * mels);
  const bool sparse = in.ConsumeBool();  // a filter bank of bands with few nonzero bins
  for (float& w : window) w = finite ? std::fabs(pick_float(in, true)) : pick_float(in, false);
  for (size_t i = 0; i < melfb.size(); ++i) {
    if (sparse && (i % size_t(n_bins)) % 7 != size_t(i / n_bins) % 7) continue;
    melfb[i] = finite ? std::fabs(pick_float(in, true)) : pick_float(in, false);
  }
  for (float& d : dct) d = pick_float(in, finite);

  fe::Plan plan;
  try {
    fe::init_plan(plan, n_fft, hop, center, reflect, power, window.data(), melfb.data(), n_mels,
                  dct.data(), n_mfcc, amin, db_ref);
  } catch (const std::invalid_argument&) {
    return 0;
  }

  // waveforms, with the binding's checks (csrc/bindings.cpp: frontend_compute)
  const int n_waves = in.ConsumeIntegralInRange<int>(1, 4);
  std::vector<std::vector<float>> waves(static_cast<size_t>(n_waves));
  for (auto& y : waves) {
    const int64_t n = in.ConsumeBool() ? in.ConsumeIntegralInRange<int64_t>(0, 64)
                                       : in.ConsumeIntegralInRange<int64_t>(0, 6000);
    y.resize(size_t(n));
    const size_t distinct = std::min<size_t>(y.size(), in.remaining_bytes() / 2 + 1);
    for (size_t i = 0; i < y.size(); ++i)
      y[i] = i < distinct ? pick_float(in, finite) : y[i % std::max<size_t>(distinct, 1)];
  }
  std::vector<fe::Clip> clips;
  for (auto& y : waves) {
    const int64_t n = int64_t(y.size());
    if (plan.reflect && plan.center && n <= plan.n_fft / 2) return 0;
    const int64_t T = fe::n_frames(plan, n);
    if (T <= 0) return 0;
    fe::Clip c;
    c.y = y.data();
    c.n = n;
    c.frames = T;
    clips.push_back(c);
  }
  const int threads = in.ConsumeIntegralInRange<int>(-1, 3);

  std::vector<Out> outs;
  for (Isa isa : isas()) {
    Out o;
    size_t cols = 0;
    for (const auto& c : clips) cols += size_t(c.frames);
    o.logmel.assign(cols * size_t(plan.n_mels), NAN);
    o.mfcc.assign(cols * size_t(plan.n_mfcc), NAN);
    std::vector<fe::Clip> cs = clips;
    size_t off = 0;
    for (auto& c : cs) {
      c.logmel = o.logmel.data() + off * size_t(plan.n_mels);
      c.mfcc = plan.n_mfcc > 0 ? o.mfcc.data() + off * size_t(plan.n_mfcc) : nullptr;
      off += size_t(c.frames);
    }
    fe::compute(plan, cs, threads, isa);
    outs.push_back(std::move(o));
  }
  if (!finite) return 0;
  // every output written (the NaN fill is gone), and the ISAs agree
  for (size_t k = 0; k < outs.size(); ++k) {
    for (float v : outs[k].logmel)
      if (std::isnan(v)) {
        std::fprintf(stderr, "log-Mel output left unwritten or NaN (ISA %d)\n", int(isas()[k]));
        std::abort();
      }
    if (k > 0 && (!close(outs[0].logmel, outs[k].logmel, 2e-2f) ||
                  !close(outs[0].mfcc, outs[k].mfcc, 2e-2f))) {
      std::fprintf(stderr, "ISA %d differs from scalar\n", int(isas()[k]));
      std::abort();
    }
  }
  return 0;
}
