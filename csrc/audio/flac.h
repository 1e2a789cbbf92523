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
#include <limits>
#include <stdexcept>
#include <vector>

namespace mmengine::audio {

struct FlacInfo {
  uint32_t sample_rate = 0;
  uint32_t channels = 0;
  uint32_t bits_per_sample = 0;
  uint64_t total_samples = 0;  // inter-channel samples; 0 = unknown
  size_t audio_offset = 0;     // byte offset of the first frame
};

// Thrown when a stream holds more samples than the caller's limit (max_samples below): the
// stream may be valid, it is refused by policy (mmengine.config.InputLimits).
struct FlacLimitError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

constexpr uint64_t kNoLimit = std::numeric_limits<uint64_t>::max();

// Parses the stream marker and the metadata blocks (STREAMINFO is read, the others skipped).
FlacInfo flac_parse_info(const uint8_t* data, size_t size);

// Decodes every frame into out (info.total_samples x channels floats, interleaved). Requires
// info.total_samples != 0; throws when the stream holds fewer or more samples. info must come
// from flac_parse_info on the same data.
void flac_decode_into(const uint8_t* data, size_t size, const FlacInfo& info, float* out);

// Decodes every frame and writes the mean of its channels: out holds info.total_samples floats
// (the channels of a sample summed in order in float, then divided by the channel count, as
// numpy's float32 mean over a row). Only one frame of every channel is held at a time.
// Requirements as for flac_decode_into.
void flac_decode_mono_into(const uint8_t* data, size_t size, const FlacInfo& info, float* out);

// Decodes every frame into one frame-sized scratch buffer and returns the number of
// inter-channel samples the stream holds; throws FlacLimitError as soon as that exceeds
// max_samples (nothing proportional to the stream's length is allocated).
uint64_t flac_count_samples(const uint8_t* data, size_t size, const FlacInfo& info,
                            uint64_t max_samples = kNoLimit);

// Decodes every frame (streams of unknown length too: counted first with
// flac_count_samples, then decoded into an output of exactly that size). Returns frames x
// channels floats, interleaved. Throws FlacLimitError when the stream holds more than
// max_samples samples (a known length is checked before anything is decoded). info as for
// flac_decode_into.
std::vector<float> flac_decode(const uint8_t* data, size_t size, const FlacInfo& info,
                               uint64_t max_samples = kNoLimit);

// Frame-by-frame decoding: each read() decodes whole frames until it holds at least `want`
// samples (or the stream ends), so only about `want` samples plus one frame are held at a
// time, whatever the stream's length. The samples, their checks (CRCs, frame numbers, the
// STREAMINFO total: fewer or more samples throw) and the channel mix (mono: the mean of the
// channels, as flac_decode_mono_into) are those of the whole-stream functions; a stream of
// unknown length throws FlacLimitError as soon as it passes max_samples. `data` must stay
// valid (and unchanged) while the object lives; info as for flac_decode_into.
class FlacStream {
 public:
  FlacStream(const uint8_t* data, size_t size, const FlacInfo& info, bool mono,
             uint64_t max_samples = kNoLimit);
  ~FlacStream();
  FlacStream(const FlacStream&) = delete;
  FlacStream& operator=(const FlacStream&) = delete;
  // Replaces `out` with the next frames: k x (mono ? 1 : channels) floats, interleaved;
  // k >= want unless the stream ended (k == 0 once it has).
  void read(uint64_t want, std::vector<float>& out);
  bool finished() const;
  uint64_t decoded() const;  // samples decoded so far
  size_t byte_pos() const;   // offset of the next frame (everything before it is consumed)
  const FlacInfo& info() const;
  bool mono() const;  // the output has one column (mono requested, or one channel)

 private:
  struct Impl;
  Impl* impl_;
};

}  // namespace mmengine::audio
