// ISA-independent part of the native LSTM: model loading checks, workspace planning, dispatch.
#include "lstm/lstm.h"

#include <algorithm>
#include <stdexcept>
#include <string>

namespace mmengine {
namespace lstm {

namespace {

// Bytes of the input-projection chunk one thread should keep (in L2 next to its weights).
constexpr size_t kChunkBudget = 192 * 1024;

void check(bool ok, const std::string& what) {
  if (!ok) throw std::invalid_argument("native LSTM: " + what);
}

}  // namespace

void plan_workspace(Model& m, int batch, int steps, int threads, bool bf16_operands) {
  Workspace& ws = m.ws;
  threads = std::max(1, threads);
  const int Hp = m.hidden_pad, G4 = 4 * Hp;
  const bool by_rows = threads > 1 && batch >= 4 * threads;
  const int rows_t = by_rows ? (batch + threads - 1) / threads : batch;
  const int cols_t = by_rows ? G4 : (m.blocks + threads - 1) / threads * kBlockCols;
  size_t tc = kChunkBudget / (size_t(std::max(1, rows_t)) * cols_t * sizeof(float));
  // at least 2 steps per chunk (a step never overwrites the slot the next chunk starts from)
  tc = std::max<size_t>(tc, 2);
  tc = std::min<size_t>(tc, size_t(std::max(steps, 1)));
  ws.batch = batch;
  ws.threads = threads;
  ws.by_rows = by_rows;
  ws.rows_per_thread = rows_t;
  ws.chunk = int(tc);

  const size_t B = size_t(std::max(batch, 1)), slots = tc + 1;
  const size_t Dp = size_t(m.input_size + 1) & ~size_t(1);
  ws.g.reserve(size_t(m.num_layers) * B * tc * G4);  // one chunk per layer (wavefront)
  ws.out.resize(m.num_layers);
  ws.c.resize(m.num_layers);
  for (int l = 0; l < m.num_layers; ++l) {
    ws.out[l].reserve(B * slots * Hp);
    ws.c[l].reserve(B * Hp);
  }
  if (bf16_operands) {
    ws.outb.resize(m.num_layers);
    for (int l = 0; l < m.num_layers; ++l) ws.outb[l].reserve(B * slots * Hp);
    ws.xb.resize(std::max<size_t>(ws.xb.size(), size_t(threads)));
    for (int t = 0; t < threads; ++t) ws.xb[t].reserve(B * tc * Dp);
  }
}

void forward(Model& m, const ForwardArgs& args, Isa isa) {
  switch (isa) {
#if defined(MMENGINE_X86_VARIANTS)
    case Isa::Avx512Bf16:
      avx512::forward(m, args, m.wtype == WeightType::BF16);
      return;
    case Isa::Avx512:
      avx512::forward(m, args, false);
      return;
    case Isa::Avx2:
      avx2::forward(m, args, false);
      return;
#endif
    default:
      scalar::forward(m, args, false);
      return;
  }
}

void sigmoid(const float* x, float* y, size_t n, Isa isa) {
  switch (isa) {
#if defined(MMENGINE_X86_VARIANTS)
    case Isa::Avx512Bf16:
    case Isa::Avx512: avx512::sigmoid(x, y, n); return;
    case Isa::Avx2: avx2::sigmoid(x, y, n); return;
#endif
    default: scalar::sigmoid(x, y, n); return;
  }
}

void tanh(const float* x, float* y, size_t n, Isa isa) {
  switch (isa) {
#if defined(MMENGINE_X86_VARIANTS)
    case Isa::Avx512Bf16:
    case Isa::Avx512: avx512::tanh(x, y, n); return;
    case Isa::Avx2: avx2::tanh(x, y, n); return;
#endif
    default: scalar::tanh(x, y, n); return;
  }
}

void init_model(Model& m, int num_layers, int input_size, int hidden, WeightType wtype) {
  check(num_layers >= 1 && input_size >= 1 && hidden >= 1, "sizes must be positive");
  m.num_layers = num_layers;
  m.input_size = input_size;
  m.hidden = hidden;
  m.blocks = (hidden + kUnitBlock - 1) / kUnitBlock;
  m.hidden_pad = m.blocks * kUnitBlock;
  m.wtype = wtype;
  m.layers.clear();
  m.layers.resize(num_layers);
}

void load_layer(Model& m, int l, const void* w_ih, size_t n_ih, const void* w_hh, size_t n_hh,
                const float* bias, size_t n_bias) {
  check(l >= 0 && l < m.num_layers, "layer index out of range");
  Layer& ly = m.layers[l];
  const size_t nb = size_t(m.blocks), Hp = size_t(m.hidden_pad);
  ly.in_size = l == 0 ? m.input_size : m.hidden;
  size_t k_in = l == 0 ? size_t(m.input_size) : Hp;
  if (m.wtype == WeightType::BF16) k_in = (k_in + 1) & ~size_t(1);
  ly.k_in = int(k_in);
  const std::string name = "layer " + std::to_string(l);
  check(n_ih == nb * k_in * kBlockCols, name + ": packed w_ih has the wrong size");
  check(n_hh == nb * Hp * kBlockCols, name + ": packed w_hh has the wrong size");
  check(n_bias == nb * kBlockCols, name + ": packed bias has the wrong size");
  if (m.wtype == WeightType::F32) {
    ly.w_ih_f32.reserve(n_ih);
    ly.w_hh_f32.reserve(n_hh);
    std::copy_n(static_cast<const float*>(w_ih), n_ih, ly.w_ih_f32.data());
    std::copy_n(static_cast<const float*>(w_hh), n_hh, ly.w_hh_f32.data());
  } else {
    ly.w_ih_bf16.reserve(n_ih);
    ly.w_hh_bf16.reserve(n_hh);
    std::copy_n(static_cast<const uint16_t*>(w_ih), n_ih, ly.w_ih_bf16.data());
    std::copy_n(static_cast<const uint16_t*>(w_hh), n_hh, ly.w_hh_bf16.data());
  }
  ly.bias.reserve(n_bias);
  std::copy_n(bias, n_bias, ly.bias.data());
}

}  // namespace lstm
}  // namespace mmengine
