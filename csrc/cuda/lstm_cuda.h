// CUDA LSTM kernels for inference: a fused cell (one step) and a persistent sequence kernel
// (all T steps of a layer in one cooperative launch). Gate order i, f, g, o as torch.nn.LSTM;
// reference: mmengine/models/reference.py. Weights fp32, bf16 or fp16; every product is
// accumulated in fp32 and the states h, c are fp32.
//
// The Python side passes raw device pointers (tensor.data_ptr()) and the stream handle
// (torch.cuda.current_stream().cuda_stream) as integers, so the extension does not link
// libtorch. Every tensor is contiguous (row-major) float32 except W_hh, in `dtype`.
#pragma once

#include <cstdint>
#include <string>

#include <pybind11/pybind11.h>

namespace mmengine::cuda {

enum class WeightType : int { kFloat32 = 0, kBFloat16 = 1, kFloat16 = 2 };

// "float32" / "bfloat16" / "float16" (also torch's "torch.bfloat16" spelling); throws otherwise.
WeightType parse_weight_type(const std::string& name);

// One step. gx (B, 4H) = x W_ihᵀ + b_ih; h, c (B, H); w_hh (4H, H); b_hh (4H,) or null;
// writes h_out, c_out (B, H). All pointers are device pointers.
struct LstmCellArgs {
  const float* gx;
  const float* h;
  const float* c;
  const void* w_hh;
  const float* b_hh;  // may be null
  float* h_out;
  float* c_out;
  int B;
  int H;
};

// One layer over T steps. gx (B, T, 4H); w_hh (4H, H); b_hh (4H,) or null; h0, c0 (B, H) or
// null (zeros); writes y (B, T, H), h_T and c_T (B, H).
struct LstmSeqArgs {
  const float* gx;
  const void* w_hh;
  const float* b_hh;  // may be null
  const float* h0;    // may be null
  const float* c0;    // may be null
  float* y;
  float* h_T;
  float* c_T;
  int B;
  int T;
  int H;
};

// How the persistent kernel splits the work on the current device (see lstm_cuda.cu).
struct LstmSeqPlan {
  int block_h;      // hidden units per block
  int block_b;      // batch rows per tile
  int n_hblocks;    // blocks along the hidden units = ceil(H / block_h)
  int n_groups;     // blocks along the batch (each loops over its tiles)
  int smem_bytes;   // dynamic shared memory per block
  int max_resident; // blocks the device holds at once with this shared memory (grid bound)
};

void lstm_cell(const LstmCellArgs& args, WeightType wt, std::uintptr_t stream);
LstmSeqPlan lstm_sequence_plan(int B, int H, WeightType wt);
void lstm_sequence(const LstmSeqArgs& args, WeightType wt, std::uintptr_t stream);

// Adds lstm_cell_cuda, lstm_sequence_cuda and lstm_sequence_cuda_plan to the module `m`.
void register_bindings(pybind11::module_& m);

}  // namespace mmengine::cuda
