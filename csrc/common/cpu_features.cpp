#include "common/cpu_features.h"

#include <atomic>
#include <stdexcept>

namespace mmengine {
namespace {

// -1: automatic; otherwise the forced Isa as int
std::atomic<int> g_forced{-1};

bool has(const char* name) {
  const std::map<std::string, bool> f = cpu_features();
  auto it = f.find(name);
  return it != f.end() && it->second;
}

bool supported(Isa isa) {
  switch (isa) {
    case Isa::Scalar:
      return true;
    case Isa::Avx2:
#if defined(MMENGINE_X86_VARIANTS)
      return has("avx2") && has("fma");
#else
      return false;
#endif
    case Isa::Avx512:
#if defined(MMENGINE_X86_VARIANTS)
      return has("avx512f") && has("avx512bw") && has("avx512vl") && has("avx512dq");
#else
      return false;
#endif
    case Isa::Avx512Bf16:
#if defined(MMENGINE_X86_VARIANTS) && defined(MMENGINE_HAVE_AVX512BF16)
      return supported(Isa::Avx512) && has("avx512bf16");
#else
      return false;
#endif
  }
  return false;
}

}  // namespace

std::map<std::string, bool> cpu_features() {
  std::map<std::string, bool> f;
#if defined(__GNUC__) && (defined(__x86_64__) || defined(__i386__))
  __builtin_cpu_init();
  f["sse2"] = __builtin_cpu_supports("sse2");
  f["avx"] = __builtin_cpu_supports("avx");
  f["avx2"] = __builtin_cpu_supports("avx2");
  f["fma"] = __builtin_cpu_supports("fma");
  f["f16c"] = __builtin_cpu_supports("f16c");
  f["avx512f"] = __builtin_cpu_supports("avx512f");
  f["avx512bw"] = __builtin_cpu_supports("avx512bw");
  f["avx512vl"] = __builtin_cpu_supports("avx512vl");
  f["avx512dq"] = __builtin_cpu_supports("avx512dq");
  f["avx512vnni"] = __builtin_cpu_supports("avx512vnni");
  f["avx512bf16"] = __builtin_cpu_supports("avx512bf16");
#endif
  return f;
}

Isa best_isa() {
  static const Isa best = [] {
    for (int i = int(Isa::Avx512Bf16); i > 0; --i)
      if (supported(Isa(i))) return Isa(i);
    return Isa::Scalar;
  }();
  return best;
}

Isa selected_isa() {
  const int forced = g_forced.load(std::memory_order_relaxed);
  return forced < 0 ? best_isa() : Isa(forced);
}

const char* isa_name(Isa isa) {
  switch (isa) {
    case Isa::Scalar: return "scalar";
    case Isa::Avx2: return "avx2";
    case Isa::Avx512: return "avx512";
    case Isa::Avx512Bf16: return "avx512bf16";
  }
  return "?";
}

void set_isa(const std::string& name) {
  if (name == "auto") {
    g_forced.store(-1);
    return;
  }
  for (int i = 0; i <= int(Isa::Avx512Bf16); ++i) {
    if (name == isa_name(Isa(i))) {
      if (!supported(Isa(i)))
        throw std::invalid_argument("ISA '" + name + "' is not supported by this CPU or build");
      g_forced.store(i);
      return;
    }
  }
  throw std::invalid_argument("unknown ISA '" + name +
                              "'; valid: auto, scalar, avx2, avx512, avx512bf16");
}

}  // namespace mmengine
