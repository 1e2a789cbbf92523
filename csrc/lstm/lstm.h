// Native CPU LSTM stack: packed model, reusable workspace, per-ISA forward entry points.
//
// Packed layout (written by mmengine/runtime/native_lstm.py::pack_lstm, checked here):
//   hidden size H is padded to Hp = 16 * nb; unit block j holds units 16j .. 16j+15 and its
//   64 "gate columns" are c = 16 * gate + u (gate order i, f, g, o as torch.nn.LSTM).
//   fp32: w_ih (nb, K_in, 64), w_hh (nb, Hp, 64) with w[j, k, c] = W[gate*H + 16j + u, k]
//   bf16: w_ih (nb, K_in/2, 64, 2), w_hh (nb, Hp/2, 64, 2) uint16, pairs (k even, k odd);
//         K_in is padded to even with zeros
//   bias (nb, 64) fp32 = b_ih + b_hh.
//   K_in is the input size D for layer 0 and Hp for later layers (rows >= H are zero).
// Padded units get zero weights and bias, so their c and h stay exactly 0.
#pragma once

#include <cstddef>
#include <cstdint>
#include <mutex>
#include <vector>

#include "common/buffer.h"
#include "common/cpu_features.h"

namespace mmengine {
namespace lstm {

constexpr int kUnitBlock = 16;             // hidden units per block
constexpr int kBlockCols = 4 * kUnitBlock;  // gate columns per block

enum class WeightType : int { F32 = 0, BF16 = 1 };

struct Layer {
  int in_size = 0;  // logical input size (D or H)
  int k_in = 0;     // packed K of w_ih (D or Hp, rounded up to even for bf16)
  AlignedBuffer<float> w_ih_f32, w_hh_f32;
  AlignedBuffer<uint16_t> w_ih_bf16, w_hh_bf16;
  AlignedBuffer<float> bias;  // (nb, 64)
};

// Buffers for one forward call, sized for (batch, threads, chunk) and kept between calls.
//   g:   L x (B, Tc, 4Hp)    input projection of one time chunk per layer (+ both biases)
//   out: L x (B, Tc+1, Hp)   hidden states of the chunk; slot 0 holds h0 = 0 for the first chunk
//   outb: like out in bf16   (only for the AVX512-BF16 path: the GEMM operands)
//   c:   L x (B, Hp)         cell states
//   xb:  per thread (rows, Tc, Dp) bf16 copy of the layer-0 input chunk (AVX512-BF16 path)
struct Workspace {
  int batch = 0, chunk = 0, threads = 0, rows_per_thread = 0;
  bool by_rows = false;  // threads split the batch (true) or the hidden units (false)
  AlignedBuffer<float> g;
  std::vector<AlignedBuffer<float>> out, c;
  std::vector<AlignedBuffer<uint16_t>> outb, xb;
};

struct Model {
  int num_layers = 0, input_size = 0, hidden = 0, hidden_pad = 0, blocks = 0;
  WeightType wtype = WeightType::F32;
  std::vector<Layer> layers;
  Workspace ws;
  std::mutex mutex;  // one forward at a time per model (the workspace is shared)
};

struct ForwardArgs {
  const float* x = nullptr;  // (B, T, D) contiguous
  int batch = 0, steps = 0;
  float* y_seq = nullptr;    // (B, T, H) or nullptr
  float* h_n = nullptr;      // (L, B, H)
  float* c_n = nullptr;      // (L, B, H)
  int threads = 1;
};

// Set sizes and allocate empty layers; then load_layer() each layer (sizes are checked,
// std::invalid_argument on mismatch). w_ih/w_hh are float* (F32) or uint16_t* (BF16).
void init_model(Model& m, int num_layers, int input_size, int hidden, WeightType wtype);
void load_layer(Model& m, int l, const void* w_ih, size_t n_ih, const void* w_hh, size_t n_hh,
                const float* bias, size_t n_bias);

// Size the workspace for (batch, steps, threads); reallocates only when a size changes.
void plan_workspace(Model& m, int batch, int steps, int threads, bool bf16_operands);

// Whole-stack forward (zero initial states). The caller holds m.mutex and has planned m.ws.
void forward(Model& m, const ForwardArgs& args, Isa isa);

#define MMENGINE_DECLARE_ISA(ns)                             \
  namespace ns {                                             \
  void forward(Model& m, const ForwardArgs& args, bool dp);  \
  void sigmoid(const float* x, float* y, size_t n);          \
  void tanh(const float* x, float* y, size_t n);             \
  }
MMENGINE_DECLARE_ISA(scalar)
MMENGINE_DECLARE_ISA(avx2)
MMENGINE_DECLARE_ISA(avx512)
#undef MMENGINE_DECLARE_ISA

// Elementwise activations of the selected ISA (exposed for accuracy tests).
void sigmoid(const float* x, float* y, size_t n, Isa isa);
void tanh(const float* x, float* y, size_t n, Isa isa);

}  // namespace lstm
}  // namespace mmengine
