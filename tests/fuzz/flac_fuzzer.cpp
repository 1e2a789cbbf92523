// libFuzzer harness for the C++ FLAC decoder (csrc/audio/flac.*), built with ASan + UBSan by
// tests/fuzz/build.sh (with FUZZING_BUILD_MODE_UNSAFE_FOR_PRODUCTION: CRCs are computed but a
// mismatch is not refused, so mutated frames reach the subframe decoder).
//
// Any byte string is given to the decoder the way the Python binding (mmengine._C.decode_flac)
// gives it: parse the metadata, then decode with a sample limit. The decoder must return or
// throw std::runtime_error (FlacLimitError is one); a crash, a sanitizer report, any other
// exception, a leak or an allocation over libFuzzer's -malloc_limit_mb is a finding.
//
// Differential properties: the entry points agree. flac_count_samples counts what flac_decode
// returns; for a stream of known length flac_decode_into gives the same samples bit for bit
// (or all fail); flac_decode_mono_into gives the channel mean of those samples, bit for bit;
// FlacStream (frame by frame, all channels or mono) gives the same samples as flac_decode.
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <stdexcept>
#include <vector>

#include "audio/flac.h"

namespace au = mmengine::audio;

namespace {

// The sample limit, like the binding's max_frames; small, so that a few frames of 65,536
// samples (a few bytes each with CONSTANT subframes) reach it.
constexpr uint64_t kMaxSamples = uint64_t(1) << 17;

[[noreturn]] void finding(const char* what) {
  std::fprintf(stderr, "flac_fuzzer: %s\n", what);
  std::abort();
}

// mono[i] must be the mean of the nch channels of frame i of `out`, in numpy's float32 order
// (8 channels: pairwise), bit for bit
void check_mono(const std::vector<float>& out, uint32_t nch, const float* mono, size_t n,
                const char* what) {
  for (size_t i = 0; i < n; ++i) {
    const float* f = out.data() + i * nch;
    float sum;
    if (nch == 8) {
      sum = ((f[0] + f[1]) + (f[2] + f[3])) + ((f[4] + f[5]) + (f[6] + f[7]));
    } else {
      sum = f[0];
      for (uint32_t c = 1; c < nch; ++c) sum += f[c];
    }
    const float want = sum / float(nch);
    if (std::memcmp(&want, &mono[i], sizeof(float)) != 0) finding(what);
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  au::FlacInfo info;
  try {
    info = au::flac_parse_info(data, size);
  } catch (const std::runtime_error&) {
    return 0;
  }
  if (info.channels < 1 || info.channels > 8 || info.bits_per_sample < 4 ||
      info.bits_per_sample > 32 || info.audio_offset > size)
    finding("flac_parse_info returned an impossible FlacInfo");

  std::vector<float> out;
  bool ok = false, limited = false;
  try {
    out = au::flac_decode(data, size, info, kMaxSamples);
    ok = true;
  } catch (const au::FlacLimitError&) {
    limited = true;
  } catch (const std::runtime_error&) {
  }
  if (ok && out.size() % info.channels != 0) finding("flac_decode: not whole frames");
  if (ok && out.size() / info.channels > kMaxSamples) finding("flac_decode: over the limit");

  uint64_t counted = 0;
  bool count_ok = false;
  try {
    counted = au::flac_count_samples(data, size, info, kMaxSamples);
    count_ok = true;
  } catch (const std::runtime_error&) {
  }
  if (info.total_samples == 0) {
    if (ok != count_ok && !limited) finding("flac_count_samples and flac_decode disagree on success");
    if (ok && counted != out.size() / info.channels) finding("flac_count_samples != decoded");
  } else if (ok && (!count_ok || counted != info.total_samples)) {
    finding("a decoded stream of known length does not count to its length");
  }

  if (info.total_samples != 0 && info.total_samples <= kMaxSamples) {
    std::vector<float> fixed(size_t(info.total_samples) * info.channels, -7.0f);
    bool fixed_ok = false;
    try {
      au::flac_decode_into(data, size, info, fixed.data());
      fixed_ok = true;
    } catch (const std::runtime_error&) {
    }
    if (fixed_ok != ok) finding("flac_decode_into and flac_decode disagree on success");
    if (ok && (out.size() != fixed.size() ||
               std::memcmp(out.data(), fixed.data(), fixed.size() * sizeof(float))))
      finding("flac_decode_into and flac_decode disagree on the samples");
  }

  // the mono path (decode_flac(mono=True); a stream of unknown length is counted first):
  // the same success, and each sample the channel mean in numpy's float32 order
  au::FlacInfo known = info;
  if (known.total_samples == 0 && ok) known.total_samples = out.size() / info.channels;
  if (known.total_samples != 0 && known.total_samples <= kMaxSamples) {
    std::vector<float> mono(size_t(known.total_samples), -7.0f);
    bool mono_ok = false;
    try {
      au::flac_decode_mono_into(data, size, known, mono.data());
      mono_ok = true;
    } catch (const std::runtime_error&) {
    }
    if (info.total_samples != 0 && mono_ok != ok)
      finding("flac_decode_mono_into and flac_decode disagree on success");
    if (mono_ok && ok)
      check_mono(out, info.channels, mono.data(), mono.size(),
                 "flac_decode_mono_into differs from the mean of flac_decode's channels");
  }

  // the frame-by-frame stream (mmengine._C.FlacStream, what the engine streams with), all
  // channels and mono, reading a size taken from the input: where flac_decode succeeds the
  // stream gives the same samples bit for bit (mono: their channel mean); where one fails
  // and neither hit the limit, so does the other; it never holds much more than it was asked
  const uint64_t want = 1 + (uint64_t(size) * 7919u) % 70000u;
  for (const bool mono_s : {false, true}) {
    std::vector<float> got, part;
    bool s_ok = false, s_limited = false;
    try {
      au::FlacStream st(data, size, info, mono_s, kMaxSamples);
      const size_t cols = st.mono() ? 1 : info.channels;
      while (true) {
        st.read(want, part);
        if (part.empty()) break;
        if (part.size() % cols != 0) finding("FlacStream: not whole frames");
        if (part.size() / cols > want + 65536) finding("FlacStream: read far more than asked");
        got.insert(got.end(), part.begin(), part.end());
        if (got.size() / cols > kMaxSamples) finding("FlacStream: over the limit");
      }
      if (!st.finished()) finding("FlacStream: an empty read before the end");
      s_ok = true;
    } catch (const au::FlacLimitError&) {
      s_limited = true;
    } catch (const std::runtime_error&) {
    }
    if (!limited && !s_limited && s_ok != ok)
      finding("FlacStream and flac_decode disagree on success");
    if (!(ok && s_ok)) continue;
    if (!mono_s || info.channels == 1) {
      if (got.size() != out.size() ||
          (!got.empty() && std::memcmp(got.data(), out.data(), got.size() * sizeof(float))))
        finding("FlacStream and flac_decode disagree on the samples");
    } else {
      if (got.size() * info.channels != out.size())
        finding("FlacStream(mono) and flac_decode disagree on the length");
      check_mono(out, info.channels, got.data(), got.size(),
                 "FlacStream(mono) differs from the mean of flac_decode's channels");
    }
  }
  return 0;
}
