// CPU feature detection and the run-time ISA choice shared by every kernel.
#pragma once

#include <map>
#include <string>

namespace mmengine {

// Kernel variants, from least to most capable. Avx512Bf16 runs the AVX-512 build of the
// kernels with the AVX512-BF16 dot product (vdpbf16ps) for bf16 weights.
enum class Isa : int { Scalar = 0, Avx2 = 1, Avx512 = 2, Avx512Bf16 = 3 };

// Feature name -> present, for the features the kernels care about (detected once).
std::map<std::string, bool> cpu_features();

// Highest Isa that both this CPU and this build support.
Isa best_isa();

// The Isa kernels use now: best_isa() unless forced by set_isa().
Isa selected_isa();

// Force an Isa by name ("scalar", "avx2", "avx512", "avx512bf16") or go back to "auto".
// Throws std::invalid_argument for unknown names or an Isa this CPU/build cannot run.
void set_isa(const std::string& name);

const char* isa_name(Isa isa);

}  // namespace mmengine
