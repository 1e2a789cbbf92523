// The one Python binding unit: mmengine._C (CPU features and ISA choice, native LSTM, and the
// CUDA kernels when built with MMENGINE_WITH_CUDA).
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "audio/flac.h"
#include "common/cpu_features.h"
#include "frontend/frontend.h"
#include "lstm/lstm.h"
#include "model/model.h"

#ifdef _OPENMP
#include <omp.h>
#endif

#ifdef MMENGINE_WITH_CUDA
#include "cuda/lstm_cuda.h"
#endif

namespace py = pybind11;
using mmengine::Isa;
namespace lstm = mmengine::lstm;
namespace fe = mmengine::frontend;

namespace {

using F32Array = py::array_t<float, py::array::c_style | py::array::forcecast>;
using U16Array = py::array_t<uint16_t, py::array::c_style | py::array::forcecast>;

int default_threads() {
#ifdef _OPENMP
  return omp_get_max_threads();
#else
  return 1;
#endif
}

std::unique_ptr<lstm::Model> make_lstm(int num_layers, int input_size, int hidden,
                                       const std::string& dtype, const py::list& w_ih,
                                       const py::list& w_hh, const py::list& bias) {
  lstm::WeightType wt;
  if (dtype == "fp32") wt = lstm::WeightType::F32;
  else if (dtype == "bf16") wt = lstm::WeightType::BF16;
  else throw py::value_error("dtype must be 'fp32' or 'bf16', got '" + dtype + "'");
  if (py::len(w_ih) != size_t(num_layers) || py::len(w_hh) != size_t(num_layers) ||
      py::len(bias) != size_t(num_layers))
    throw py::value_error("expected one w_ih, w_hh and bias per layer");
  auto m = std::make_unique<lstm::Model>();
  lstm::init_model(*m, num_layers, input_size, hidden, wt);
  for (int l = 0; l < num_layers; ++l) {
    F32Array b = bias[l].cast<F32Array>();
    if (wt == lstm::WeightType::F32) {
      F32Array a = w_ih[l].cast<F32Array>(), h = w_hh[l].cast<F32Array>();
      lstm::load_layer(*m, l, a.data(), a.size(), h.data(), h.size(), b.data(), b.size());
    } else {
      U16Array a = w_ih[l].cast<U16Array>(), h = w_hh[l].cast<U16Array>();
      lstm::load_layer(*m, l, a.data(), a.size(), h.data(), h.size(), b.data(), b.size());
    }
  }
  return m;
}

py::tuple lstm_forward(lstm::Model& m, const F32Array& x, bool return_sequence, int num_threads) {
  if (x.ndim() != 3 || x.shape(2) != m.input_size)
    throw py::value_error("x must be (batch, steps, " + std::to_string(m.input_size) + ") float32");
  const int B = int(x.shape(0)), T = int(x.shape(1)), L = m.num_layers, H = m.hidden;
  py::array_t<float> h_n({L, B, H}), c_n({L, B, H});
  py::object y = py::none();
  lstm::ForwardArgs args;
  if (return_sequence) {
    py::array_t<float> ys({B, T, H});
    args.y_seq = ys.mutable_data();
    y = ys;
  }
  args.x = x.data();
  args.batch = B;
  args.steps = T;
  args.h_n = h_n.mutable_data();
  args.c_n = c_n.mutable_data();
  args.threads = num_threads > 0 ? num_threads : default_threads();
  const Isa isa = mmengine::selected_isa();
  if (B > 0) {
    py::gil_scoped_release release;
    std::lock_guard<std::mutex> lock(m.mutex);
    lstm::plan_workspace(m, B, T, args.threads,
                         isa == Isa::Avx512Bf16 && m.wtype == lstm::WeightType::BF16);
    lstm::forward(m, args, isa);
  }
  return py::make_tuple(y, h_n, c_n);
}

F32Array elementwise(const F32Array& x, bool is_tanh) {
  F32Array y(std::vector<py::ssize_t>(x.shape(), x.shape() + x.ndim()));
  const Isa isa = mmengine::selected_isa();
  if (is_tanh) lstm::tanh(x.data(), y.mutable_data(), size_t(x.size()), isa);
  else lstm::sigmoid(x.data(), y.mutable_data(), size_t(x.size()), isa);
  return y;
}


std::unique_ptr<fe::Plan> make_frontend(int n_fft, int hop, bool center, const std::string& pad_mode,
                                        float power, const F32Array& window, const F32Array& melfb,
                                        const F32Array& dct, float amin, float db_ref) {
  if (pad_mode != "constant" && pad_mode != "reflect")
    throw py::value_error("pad_mode must be 'constant' or 'reflect', got '" + pad_mode + "'");
  if (window.ndim() != 1 || window.shape(0) != n_fft)
    throw py::value_error("window must have n_fft samples");
  if (melfb.ndim() != 2 || melfb.shape(1) != n_fft / 2 + 1)
    throw py::value_error("melfb must be (n_mels, n_fft / 2 + 1)");
  if (dct.ndim() != 2 || (dct.shape(0) > 0 && dct.shape(1) != melfb.shape(0)))
    throw py::value_error("dct must be (n_mfcc, n_mels)");
  auto p = std::make_unique<fe::Plan>();
  fe::init_plan(*p, n_fft, hop, center, pad_mode == "reflect", power, window.data(), melfb.data(),
                int(melfb.shape(0)), dct.data(), int(dct.shape(0)), amin, db_ref);
  return p;
}

py::list frontend_compute(fe::Plan& p, const py::list& waves, int num_threads) {
  std::vector<F32Array> keep;
  std::vector<fe::Clip> clips;
  py::list out;
  keep.reserve(py::len(waves));
  for (size_t i = 0; i < py::len(waves); ++i) {
    F32Array y = waves[i].cast<F32Array>();
    if (y.ndim() != 1)
      throw py::value_error("waveform " + std::to_string(i) + ": expected a 1-D float32 array");
    if (p.reflect && p.center && y.shape(0) <= p.n_fft / 2)
      throw py::value_error("waveform " + std::to_string(i) + ": reflect padding needs more than " +
                            std::to_string(p.n_fft / 2) + " samples");
    const int64_t T = fe::n_frames(p, y.shape(0));
    if (T <= 0)
      throw py::value_error("waveform " + std::to_string(i) + ": shorter than n_fft without centring");
    py::array_t<float> lm({py::ssize_t(p.n_mels), py::ssize_t(T)});
    py::array_t<float> mf({py::ssize_t(p.n_mfcc), py::ssize_t(T)});
    fe::Clip c;
    c.y = y.data();
    c.n = y.shape(0);
    c.frames = T;
    c.logmel = lm.mutable_data();
    c.mfcc = p.n_mfcc > 0 ? mf.mutable_data() : nullptr;
    clips.push_back(c);
    keep.push_back(std::move(y));
    out.append(py::make_tuple(lm, mf));
  }
  const Isa isa = mmengine::selected_isa();
  {
    py::gil_scoped_release release;
    fe::compute(p, clips, num_threads > 0 ? num_threads : default_threads(), isa);
  }
  return out;
}

// ---- the whole-model graph (csrc/model) --------------------------------------------------------
namespace mdl = mmengine::model;

std::vector<float> vec1(const F32Array& a, py::ssize_t n, const char* what) {
  if (a.ndim() != 1 || a.shape(0) != n)
    throw py::value_error(std::string(what) + " must have shape (" + std::to_string(n) + ",)");
  return std::vector<float>(a.data(), a.data() + n);
}

int enum_of(const std::string& name, std::initializer_list<const char*> names, const char* what) {
  int i = 0;
  for (const char* n : names) {
    if (name == n) return i;
    ++i;
  }
  throw py::value_error(std::string("unknown ") + what + " '" + name + "'");
}

void add_stem(mdl::Graph& g, const std::string& input, const std::string& modality, int rows,
              const F32Array& mean, const F32Array& stdev, const py::list& convs, int col,
              const std::vector<int>& band_edges, py::object flux_scale, py::object flux_shift) {
  mdl::Stem s;
  s.input = enum_of(input, {"mfcc", "logmel", "symbolic"}, "input");
  s.modality = enum_of(modality, {"mfcc", "mel", "text", "symbolic"}, "modality");
  if (rows <= 0) throw py::value_error("rows must be positive");
  s.rows = rows;
  s.mean = vec1(mean, rows, "mean");
  s.inv_std = vec1(stdev, rows, "std");
  for (float& v : s.inv_std) {
    if (!(v > 0.0f)) throw py::value_error("std must be positive");
    v = 1.0f / v;
  }
  if (!band_edges.empty()) {
    s.flux_bands = int(band_edges.size()) - 1;
    s.band_edges = band_edges;
    s.flux_scale = vec1(flux_scale.cast<F32Array>(), s.flux_bands, "flux_scale");
    s.flux_shift = vec1(flux_shift.cast<F32Array>(), s.flux_bands, "flux_shift");
  }
  if (py::len(convs) < 1) throw py::value_error("a stem needs its input convolution");
  int cin = s.cin();
  for (size_t j = 0; j < py::len(convs); ++j) {
    py::tuple t = convs[j].cast<py::tuple>();
    if (t.size() != 3) throw py::value_error("convolutions are (weight, bias, dilation) tuples");
    F32Array w = t[0].cast<F32Array>(), b = t[1].cast<F32Array>();
    const int dil = t[2].cast<int>();
    if (w.ndim() != 3 || w.shape(1) != cin)
      throw py::value_error("convolution " + std::to_string(j) + ": weight must be (cout, " +
                            std::to_string(cin) + ", k)");
    const int cout = int(w.shape(0)), k = int(w.shape(2));
    if (b.ndim() != 1 || b.shape(0) != cout)
      throw py::value_error("convolution " + std::to_string(j) + ": bias must be (cout,)");
    mdl::Conv c;
    mdl::pack_conv(c, w.data(), b.data(), cout, cin, k, dil, g.bf16);
    if (j == 0) s.inp = std::move(c);
    else s.blocks.push_back(std::move(c));
    cin = cout;
  }
  s.width = s.inp.cout;
  s.col = col;
  g.stems.push_back(std::move(s));
  g.finalized = false;
}

py::array_t<float> graph_forward(mdl::Graph& g, py::object mfcc, py::object logmel, py::object text,
                                 py::object symbolic, const F32Array& masks, int num_threads,
                                 py::object chroma) {
  mdl::ForwardArgs a;
  std::vector<F32Array> keep;
  int B = -1, T = -1;
  py::object series[3] = {mfcc, logmel, symbolic};
  for (int i = 0; i < 3; ++i) {
    if (series[i].is_none()) continue;
    F32Array x = series[i].cast<F32Array>();
    if (x.ndim() != 3) throw py::value_error("time series must be (batch, rows, frames) float32");
    if ((B >= 0 && x.shape(0) != B) || (T >= 0 && x.shape(2) != T))
      throw py::value_error("time series disagree on batch or frames");
    B = int(x.shape(0));
    T = int(x.shape(2));
    a.series[i] = x.data();
    a.series_rows[i] = int(x.shape(1));
    keep.push_back(std::move(x));
  }
  if (B < 0) throw py::value_error("need at least one time series (mfcc, logmel or symbolic)");
  if (!text.is_none() && g.text_out > 0) {  // a model without late text ignores it
    F32Array x = text.cast<F32Array>();
    if (x.ndim() != 2 || x.shape(0) != B || x.shape(1) != g.text_in)
      throw py::value_error("text must be (batch, " + std::to_string(g.text_in) + ") float32");
    a.text = x.data();
    keep.push_back(std::move(x));
  }
  // a model without a head that reads the chroma ignores it
  if (!chroma.is_none() && (g.chroma_k > 0 || (g.audio_meter && g.meter_reads_chroma))) {
    F32Array x = chroma.cast<F32Array>();
    if (x.ndim() != 3 || x.shape(0) != B || x.shape(1) != 12 || x.shape(2) != T)
      throw py::value_error("chroma must be (batch, 12, frames) float32, frames as the series");
    a.chroma = x.data();
    keep.push_back(std::move(x));
  }
  if (masks.ndim() != 2 || masks.shape(0) != B || masks.shape(1) != mdl::kNumModalities)
    throw py::value_error("masks must be (batch, 4) float32");
  a.masks = masks.data();
  a.batch = B;
  a.frames = T;
  a.threads = num_threads > 0 ? num_threads : default_threads();
  py::array_t<float> logits({B, g.n_classes});
  a.logits = logits.mutable_data();
  const Isa isa = mmengine::selected_isa();
  {
    py::gil_scoped_release release;
    std::lock_guard<std::mutex> lock(g.mutex);
    mdl::forward(g, a, isa);
  }
  return logits;
}

}  // namespace

PYBIND11_MODULE(_C, m) {
  m.doc() = "mmengine native kernels: CPU LSTM stack (scalar / AVX2 / AVX-512 / AVX512-BF16)";

  m.def("cpu_features", &mmengine::cpu_features,
        "Dict feature name -> bool for the ISA features this CPU reports.");
  m.def("selected_isa", [] { return std::string(mmengine::isa_name(mmengine::selected_isa())); },
        "The kernel variant in use: 'scalar', 'avx2', 'avx512' or 'avx512bf16'.");
  m.def("best_isa", [] { return std::string(mmengine::isa_name(mmengine::best_isa())); },
        "The most capable variant this CPU and build support.");
  m.def("set_isa", &mmengine::set_isa, py::arg("name"),
        "Force a variant ('scalar', 'avx2', 'avx512', 'avx512bf16') or 'auto'. "
        "ValueError if unknown or unsupported here.");
  m.def("build_info", [] {
    py::list isas;
    isas.append("scalar");
#ifdef MMENGINE_X86_VARIANTS
    isas.append("avx2");
    isas.append("avx512");
#endif
#ifdef MMENGINE_HAVE_AVX512BF16
    isas.append("avx512bf16");
#endif
    py::dict d;
    d["isas"] = isas;
#ifdef _OPENMP
    d["openmp"] = true;
#else
    d["openmp"] = false;
#endif
#ifdef MMENGINE_WITH_CUDA
    d["cuda"] = true;
#else
    d["cuda"] = false;
#endif
    d["compiler"] = std::string(__VERSION__);
    return d;
  }, "Dict: 'isas' compiled kernel variants, 'openmp', 'cuda', 'compiler'.");
  m.def("has_openmp", [] {
#ifdef _OPENMP
    return true;
#else
    return false;
#endif
  });
  m.def("max_threads", &default_threads, "Threads a forward uses by default (OpenMP).");
  m.def("has_cuda", [] {
#ifdef MMENGINE_WITH_CUDA
    return true;
#else
    return false;
#endif
  }, "True when the extension was built with the CUDA kernels.");
  m.def("sigmoid", [](const F32Array& x) { return elementwise(x, false); }, py::arg("x"),
        "Elementwise sigmoid with the selected ISA's kernel (float32).");
  m.def("tanh", [](const F32Array& x) { return elementwise(x, true); }, py::arg("x"),
        "Elementwise tanh with the selected ISA's kernel (float32).");

  py::register_exception<mmengine::audio::FlacLimitError>(m, "FlacLimitError",
                                                         PyExc_ValueError);
  m.def("decode_flac", [](py::buffer data, py::object max_frames, bool mono) {
    // bytes, bytearray, memoryview or a contiguous uint8 array
    py::buffer_info b = data.request();
    if (b.itemsize != 1 || (b.ndim > 1) || (b.ndim == 1 && b.strides[0] != 1))
      throw py::value_error("decode_flac expects a contiguous 1-D byte buffer");
    const auto* p = static_cast<const uint8_t*>(b.ptr);
    const size_t n = size_t(b.size);
    namespace au = mmengine::audio;
    const uint64_t limit = max_frames.is_none() ? au::kNoLimit : max_frames.cast<uint64_t>();
    au::FlacInfo info = au::flac_parse_info(p, n);
    const py::ssize_t ch = py::ssize_t(info.channels);
    if (info.total_samples == 0) {  // unknown length: counted frame by frame against the limit
      py::gil_scoped_release release;
      info.total_samples = au::flac_count_samples(p, n, info, limit);
    }
    if (info.total_samples > limit)
      throw au::FlacLimitError("FLAC: STREAMINFO declares " +
                               std::to_string(info.total_samples) + " samples, more than " +
                               std::to_string(limit));
    py::array_t<float> out({py::ssize_t(info.total_samples), mono ? py::ssize_t(1) : ch});
    if (info.total_samples) {
      float* dst = out.mutable_data();
      py::gil_scoped_release release;
      if (mono) au::flac_decode_mono_into(p, n, info, dst);
      else au::flac_decode_into(p, n, info, dst);
    }
    return py::make_tuple(out, info.sample_rate);
  }, py::arg("data"), py::arg("max_frames") = py::none(), py::arg("mono") = false,
        "FLAC file bytes -> (float32 array (frames, channels) scaled by 1/2^(bits-1), "
        "sample_rate). A stream of unknown length (STREAMINFO total 0) is counted frame by "
        "frame first. FlacLimitError (a ValueError) when it holds more than max_frames "
        "samples (checked before the output is allocated); RuntimeError on malformed, "
        "truncated or unsupported input. mono=True: (frames, 1), the mean of the channels, "
        "one frame of every channel held at a time.");

  struct PyFlacStream {  // the buffer stays exported (and so alive) as long as the stream
    py::buffer_info buf;
    std::unique_ptr<mmengine::audio::FlacStream> s;
  };
  py::class_<PyFlacStream>(m, "FlacStream", py::module_local(),
      "FlacStream(data, max_frames=None, mono=False): decode a FLAC file's bytes (any "
      "contiguous byte buffer, e.g. an mmap) frame by frame; read(want) returns the next whole "
      "frames, at least `want` samples unless the stream ends (then 0), as float32 (k, 1) when "
      "mono else (k, channels): the samples, checks and mix of decode_flac. FlacLimitError as "
      "soon as more than max_frames samples are decoded (a declared total: at construction); "
      "RuntimeError on malformed, truncated or unsupported input.")
      .def(py::init([](py::buffer data, py::object max_frames, bool mono) {
             namespace au = mmengine::audio;
             auto* w = new PyFlacStream{data.request(), nullptr};
             std::unique_ptr<PyFlacStream> own(w);
             if (w->buf.itemsize != 1 || w->buf.ndim > 1 ||
                 (w->buf.ndim == 1 && w->buf.strides[0] != 1))
               throw py::value_error("FlacStream expects a contiguous 1-D byte buffer");
             const auto* p = static_cast<const uint8_t*>(w->buf.ptr);
             const size_t n = size_t(w->buf.size);
             const uint64_t limit =
                 max_frames.is_none() ? au::kNoLimit : max_frames.cast<uint64_t>();
             w->s = std::make_unique<au::FlacStream>(p, n, au::flac_parse_info(p, n), mono,
                                                     limit);
             return own.release();
           }), py::arg("data"), py::arg("max_frames") = py::none(), py::arg("mono") = false)
      .def("read", [](PyFlacStream& w, uint64_t want) {
             auto* out = new std::vector<float>();  // handed to the array: no copy
             py::capsule owner(out, [](void* p) { delete static_cast<std::vector<float>*>(p); });
             {
               py::gil_scoped_release release;
               w.s->read(want, *out);
             }
             const py::ssize_t cols = w.s->mono() ? 1 : py::ssize_t(w.s->info().channels);
             return py::array_t<float>({py::ssize_t(out->size()) / cols, cols},
                                       {cols * py::ssize_t(sizeof(float)),
                                        py::ssize_t(sizeof(float))},
                                       out->data(), owner);
           }, py::arg("want"))
      .def_property_readonly("sample_rate", [](const PyFlacStream& w) {
             return w.s->info().sample_rate; })
      .def_property_readonly("channels", [](const PyFlacStream& w) {
             return w.s->info().channels; })
      .def_property_readonly("total_samples", [](const PyFlacStream& w) {
             return w.s->info().total_samples; })
      .def_property_readonly("decoded", [](const PyFlacStream& w) { return w.s->decoded(); })
      .def_property_readonly("byte_pos", [](const PyFlacStream& w) { return w.s->byte_pos(); })
      .def_property_readonly("finished", [](const PyFlacStream& w) {
             return w.s->finished(); });

  py::class_<lstm::Model, std::unique_ptr<lstm::Model>>(m, "LSTM", py::module_local(),
      "Packed LSTM stack (see mmengine.runtime.native_lstm for the layout).")
      .def(py::init(&make_lstm), py::arg("num_layers"), py::arg("input_size"),
           py::arg("hidden_size"), py::arg("dtype"), py::arg("w_ih"), py::arg("w_hh"),
           py::arg("bias"))
      .def("forward", &lstm_forward, py::arg("x"), py::arg("return_sequence") = false,
           py::arg("num_threads") = 0,
           "x (B, T, D) float32 -> (y (B, T, H) or None, h_n (L, B, H), c_n (L, B, H)).")
      .def("reserve", [](lstm::Model& mod, int batch, int steps, int num_threads) {
             py::gil_scoped_release release;
             std::lock_guard<std::mutex> lock(mod.mutex);
             lstm::plan_workspace(mod, batch, steps,
                                  num_threads > 0 ? num_threads : default_threads(),
                                  mod.wtype == lstm::WeightType::BF16);
           }, py::arg("batch"), py::arg("steps"), py::arg("num_threads") = 0,
           "Allocate and touch the workspace for (batch, steps) ahead of the first call.")
      .def_readonly("num_layers", &lstm::Model::num_layers)
      .def_readonly("input_size", &lstm::Model::input_size)
      .def_readonly("hidden_size", &lstm::Model::hidden)
      .def_property_readonly("dtype", [](const lstm::Model& mod) {
        return std::string(mod.wtype == lstm::WeightType::F32 ? "fp32" : "bf16");
      });

  py::class_<mdl::Graph, std::unique_ptr<mdl::Graph>>(m, "FusionGraph", py::module_local(),
      "The whole fusion model (stems, fusion, LSTM, pooling, late streams, head) in C++; "
      "assembled by mmengine.runtime.native_model.")
      .def(py::init([](int fused_dim, int pool_stride, const std::string& pooling,
                       const std::string& dtype) {
             auto g = std::make_unique<mdl::Graph>();
             g->fused_dim = fused_dim;
             g->pool_stride = pool_stride;
             g->pooling = enum_of(pooling, {"last", "mean", "meanmax"}, "pooling");
             g->bf16 = enum_of(dtype, {"fp32", "bf16"}, "dtype") == 1;
             return g;
           }), py::arg("fused_dim"), py::arg("pool_stride"), py::arg("pooling"),
           py::arg("dtype") = "fp32",
           "dtype 'bf16': convolution weights rounded to bf16, and on AVX512-BF16 CPUs the "
           "convolutions run on bf16 activations (vdpbf16ps, fp32 accumulation); add the "
           "stems after construction.")
      .def("add_stem", &add_stem, py::arg("input"), py::arg("modality"), py::arg("rows"),
           py::arg("mean"), py::arg("std"), py::arg("convs"), py::arg("col"),
           py::arg("band_edges") = std::vector<int>(), py::arg("flux_scale") = py::none(),
           py::arg("flux_shift") = py::none(),
           "Time-series stem: normalisation (+ spectral flux), convs [(w (cout, cin, k), b, "
           "dilation)]: the input conv then the residual blocks, BatchNorm folded in.")
      .def("set_lstm", [](mdl::Graph& g, int num_layers, int input_size, int hidden,
                          const std::string& dtype, const py::list& w_ih, const py::list& w_hh,
                          const py::list& bias) {
             auto tmp = make_lstm(num_layers, input_size, hidden, dtype, w_ih, w_hh, bias);
             lstm::init_model(g.rnn, num_layers, input_size, hidden, tmp->wtype);
             for (int l = 0; l < num_layers; ++l) g.rnn.layers[l] = std::move(tmp->layers[l]);
             g.has_rnn = true;
             g.finalized = false;
           }, py::arg("num_layers"), py::arg("input_size"), py::arg("hidden_size"),
           py::arg("dtype"), py::arg("w_ih"), py::arg("w_hh"), py::arg("bias"))
      .def("set_text", [](mdl::Graph& g, const F32Array& w, const F32Array& b) {
             if (w.ndim() != 2) throw py::value_error("text weight must be (vocabulary, width)");
             g.text_in = int(w.shape(0));
             g.text_out = int(w.shape(1));
             g.text_w.reserve(size_t(w.size()));
             std::memcpy(g.text_w.data(), w.data(), sizeof(float) * size_t(w.size()));
             g.text_b = vec1(b, g.text_out, "text bias");
             g.finalized = false;
           }, py::arg("weight"), py::arg("bias"), "Late text: ReLU(text @ weight + bias).")
      .def("set_symbolic", [](mdl::Graph& g, int rows, py::object templates, py::object pscale,
                              py::object pshift, int meter_start, py::object mscale,
                              py::object mshift) {
             g.late_symbolic = true;
             g.symbolic_rows = rows;
             if (!templates.is_none()) {
               F32Array t = templates.cast<F32Array>();
               if (t.ndim() != 2 || t.shape(1) != 12)
                 throw py::value_error("templates must be (K, 12)");
               g.pitch_k = int(t.shape(0));
               g.templates.assign(t.data(), t.data() + t.size());
               g.pitch_scale = vec1(pscale.cast<F32Array>(), g.pitch_k, "pitch scale");
               g.pitch_shift = vec1(pshift.cast<F32Array>(), g.pitch_k, "pitch shift");
             }
             if (!mscale.is_none()) {
               F32Array s = mscale.cast<F32Array>();
               g.meter_start = meter_start;
               g.meter_rows = int(s.size());
               g.meter_scale = vec1(s, g.meter_rows, "meter scale");
               g.meter_shift = vec1(mshift.cast<F32Array>(), g.meter_rows, "meter shift");
             }
             g.finalized = false;
           }, py::arg("rows"), py::arg("templates"), py::arg("pitch_scale"),
           py::arg("pitch_shift"), py::arg("meter_start"), py::arg("meter_scale"),
           py::arg("meter_shift"),
           "Late streams of the notes: key-template scores and the meter profile, each "
           "followed by its BatchNorm as (scale, shift); None leaves one out.")
      .def("set_head", [](mdl::Graph& g, const F32Array& w, const F32Array& b) {
             if (w.ndim() != 2) throw py::value_error("head weight must be (inputs, classes)");
             g.head_in = int(w.shape(0));
             g.n_classes = int(w.shape(1));
             g.head_w.reserve(size_t(w.size()));
             std::memcpy(g.head_w.data(), w.data(), sizeof(float) * size_t(w.size()));
             g.head_b = vec1(b, g.n_classes, "head bias");
             g.finalized = false;
           }, py::arg("weight"), py::arg("bias"))
      .def("finalize", [](mdl::Graph& g) { mdl::finalize(g); },
           "Check that the parts fit together (ValueError naming what does not).")
      .def("set_chroma", [](mdl::Graph& g, const F32Array& templates, const F32Array& scale,
                            const F32Array& shift) {
             if (templates.ndim() != 2 || templates.shape(1) != 12)
               throw py::value_error("templates must be (K, 12)");
             g.chroma_k = int(templates.shape(0));
             g.chroma_templates.assign(templates.data(), templates.data() + templates.size());
             g.chroma_scale = vec1(scale, g.chroma_k, "audio pitch scale");
             g.chroma_shift = vec1(shift, g.chroma_k, "audio pitch shift");
             g.finalized = false;
           }, py::arg("templates"), py::arg("scale"), py::arg("shift"),
           "The audio pitch head: key-template scores of the chroma's profile, BatchNorm "
           "(scale, shift), masked with the log-Mel; last in the late block.")
      .def("set_audio_meter", [](mdl::Graph& g, const py::array_t<int64_t, py::array::c_style |
                                 py::array::forcecast>& lags, const F32Array& lag_weights,
                                 const F32Array& templates, const F32Array& scale,
                                 const F32Array& shift, bool reads_chroma) {
             if (lags.ndim() != 1 || lag_weights.ndim() != 2 ||
                 lag_weights.shape(0) != lags.shape(0))
               throw py::value_error("lags must be (L,) and lag weights (L, bins)");
             if (templates.ndim() != 3 || templates.shape(1) != 2)
               throw py::value_error("audio meter templates must be (K, 2, width)");
             const int bins = int(lag_weights.shape(1)), width = int(templates.shape(2));
             if (width < 1 || width > bins)
               throw py::value_error("audio meter templates are wider than the profile");
             g.audio_meter = true;
             g.meter_bins = bins;
             g.meter_k = int(templates.shape(0));
             g.meter_width = width;
             g.meter_shifts = bins - width + 1;
             g.meter_lags.clear();
             for (py::ssize_t i = 0; i < lags.shape(0); ++i) {
               const int64_t l = lags.data()[i];
               if (l < 0 || l > (int64_t(1) << 20)) throw py::value_error("lag out of range");
               g.meter_lags.push_back(int(l));
             }
             g.meter_lag_w.assign(lag_weights.data(), lag_weights.data() + lag_weights.size());
             g.meter_templates.assign(templates.data(), templates.data() + templates.size());
             g.am_scale = vec1(scale, g.audio_meter_dim(), "audio meter scale");
             g.am_shift = vec1(shift, g.audio_meter_dim(), "audio meter shift");
             g.meter_reads_chroma = reads_chroma;
             g.finalized = false;
           }, py::arg("lags"), py::arg("lag_weights"), py::arg("templates"), py::arg("scale"),
           py::arg("shift"), py::arg("reads_chroma"),
           "The audio meter head: the log-lag profile of the onset envelope's autocorrelation "
           "and (reads_chroma) the chroma's self-similarity, K template scores, BatchNorm "
           "(scale, shift), masked with the log-Mel; after the audio pitch head, last in the "
           "late block.")
      .def("forward", &graph_forward, py::arg("mfcc"), py::arg("logmel"), py::arg("text"),
           py::arg("symbolic"), py::arg("masks"), py::arg("num_threads") = 0,
           py::arg("chroma") = py::none(),
           "(B, rows, T) float32 series or None, text (B, V) or None, masks (B, 4) 0/1 in "
           "modality order (mfcc, mel, text, symbolic), chroma (B, 12, T) in dB or None "
           "-> logits (B, C) float32.")
      .def_readonly("n_classes", &mdl::Graph::n_classes)
      .def_readonly("fused_dim", &mdl::Graph::fused_dim);

  py::class_<fe::Plan, std::unique_ptr<fe::Plan>>(m, "MelFrontend", py::module_local(),
      "Native log-Mel + MFCC front end (see mmengine.features.native_frontend).")
      .def(py::init(&make_frontend), py::arg("n_fft"), py::arg("hop_length"), py::arg("center"),
           py::arg("pad_mode"), py::arg("power"), py::arg("window"), py::arg("melfb"),
           py::arg("dct"), py::arg("amin"), py::arg("db_ref"))
      .def("n_frames", [](const fe::Plan& p, int64_t n) { return fe::n_frames(p, n); },
           py::arg("n_samples"), "Frames of a waveform of n_samples.")
      .def("compute", &frontend_compute, py::arg("waveforms"), py::arg("num_threads") = 0,
           "List of 1-D float32 waveforms -> list of (logmel (n_mels, T), mfcc (n_mfcc, T)).")
      .def_readonly("n_fft", &fe::Plan::n_fft)
      .def_readonly("hop_length", &fe::Plan::hop)
      .def_readonly("n_mels", &fe::Plan::n_mels)
      .def_readonly("n_mfcc", &fe::Plan::n_mfcc);

#ifdef MMENGINE_WITH_CUDA
  mmengine::cuda::register_bindings(m);
#endif
}
