// A FLAC decoder written from the format specification (RFC 9639): STREAMINFO, fixed and
// variable block size frames, CONSTANT / VERBATIM / FIXED / LPC subframes, wasted bits, Rice
// residuals (methods 0 and 1, escape codes), inter-channel decorrelation, CRC-8 and CRC-16
// checks. Output is float32, interleaved (frames, channels), scaled by 1 / 2^(bits - 1), which
// is bit-identical to libsndfile's float read.
//
// Every malformed, truncated or unsupported input throws std::runtime_error with a short reason.
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

namespace mmengine::audio {

struct FlacInfo {
  uint32_t sample_rate = 0;
  uint32_t channels = 0;
  uint32_t bits_per_sample = 0;
  uint64_t total_samples = 0;  // inter-channel samples; 0 = unknown
  size_t audio_offset = 0;     // byte offset of the first frame
};

// Parses the stream marker and the metadata blocks (STREAMINFO is read, the others skipped).
FlacInfo flac_parse_info(const uint8_t* data, size_t size);

// Decodes every frame into out (info.total_samples x channels floats, interleaved). Requires
// info.total_samples != 0; throws when the stream holds fewer or more samples. info must come
// from flac_parse_info on the same data.
void flac_decode_into(const uint8_t* data, size_t size, const FlacInfo& info, float* out);

// Decodes every frame, growing the output as needed (for streams of unknown length too).
// Returns frames x channels floats, interleaved. info as for flac_decode_into.
std::vector<float> flac_decode(const uint8_t* data, size_t size, const FlacInfo& info);

}  // namespace mmengine::audio
