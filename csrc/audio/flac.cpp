// FLAC decoder, written from the format specification (RFC 9639). See flac.h.
//
// Layout of the work per frame: parse and CRC-8-check the header, decode each subframe into a
// per-channel integer buffer (residuals are decoded in place, then the predictor runs over
// them), check the CRC-16 footer, then undo the stereo decorrelation while converting to float
// and interleaving into the output.
//
// Samples are held in int32 unless the frame's bit depth is 31 or 32 (a side channel or a
// mid/side sum then needs 33-34 bits): those frames go through the same code with int64.
// Integer arithmetic that a malformed stream could overflow is done in unsigned types (it wraps,
// never undefined behaviour); a valid stream never wraps.
#include "audio/flac.h"

#include <algorithm>
#include <array>
#include <cstring>
#include <stdexcept>
#include <string>
#include <type_traits>

#if defined(__SSE2__)
#include <emmintrin.h>
#endif

namespace mmengine::audio {
namespace {

[[noreturn]] void fail(const std::string& msg) { throw std::runtime_error("FLAC: " + msg); }

// ---- CRCs ---------------------------------------------------------------------------------
// CRC-8: polynomial x^8 + x^2 + x + 1, CRC-16: x^16 + x^15 + x^2 + 1, both MSB first, initial
// value 0. CRC-16 runs eight bytes a step: table k holds the CRC of a byte followed by k zeros.
struct CrcTables {
  uint8_t c8[256];
  uint16_t c16[8][256];
};

constexpr CrcTables make_crc_tables() {
  CrcTables t{};
  for (int b = 0; b < 256; ++b) {
    unsigned c = unsigned(b);
    for (int i = 0; i < 8; ++i) c = (c & 0x80) ? ((c << 1) ^ 0x07) & 0xFF : (c << 1) & 0xFF;
    t.c8[b] = uint8_t(c);
    unsigned d = unsigned(b) << 8;
    for (int i = 0; i < 8; ++i) d = (d & 0x8000) ? ((d << 1) ^ 0x8005) & 0xFFFF : (d << 1) & 0xFFFF;
    t.c16[0][b] = uint16_t(d);
  }
  for (int k = 1; k < 8; ++k)
    for (int b = 0; b < 256; ++b) {
      unsigned prev = t.c16[k - 1][b];
      t.c16[k][b] = uint16_t(((prev << 8) & 0xFFFF) ^ t.c16[0][prev >> 8]);
    }
  return t;
}

constexpr CrcTables kCrc = make_crc_tables();

// Fuzzing builds (tests/fuzz/build.sh) compute the CRCs but do not refuse a frame whose CRC
// differs: a mutated frame then reaches the subframe decoder instead of stopping at its CRC.
#if defined(FUZZING_BUILD_MODE_UNSAFE_FOR_PRODUCTION)
constexpr bool kRefuseBadCrc = false;
#else
constexpr bool kRefuseBadCrc = true;
#endif

uint8_t crc8(const uint8_t* p, size_t n) {
  unsigned c = 0;
  for (size_t i = 0; i < n; ++i) c = kCrc.c8[c ^ p[i]];
  return uint8_t(c);
}

uint16_t crc16_serial(const uint8_t* p, size_t n) {
  unsigned c = 0;
  while (n >= 8) {
    const unsigned x = c ^ ((unsigned(p[0]) << 8) | p[1]);
    c = kCrc.c16[7][x >> 8] ^ kCrc.c16[6][x & 0xFF] ^ kCrc.c16[5][p[2]] ^ kCrc.c16[4][p[3]] ^
        kCrc.c16[3][p[4]] ^ kCrc.c16[2][p[5]] ^ kCrc.c16[1][p[6]] ^ kCrc.c16[0][p[7]];
    p += 8;
    n -= 8;
  }
  for (size_t i = 0; i < n; ++i) c = ((c << 8) & 0xFFFF) ^ kCrc.c16[0][(c >> 8) ^ p[i]];
  return uint16_t(c);
}

// Product of two polynomials modulo the CRC-16 polynomial.
constexpr uint32_t crc16_mulmod(uint32_t a, uint32_t b) {
  uint32_t r = 0;
  for (int i = 15; i >= 0; --i) {
    r <<= 1;
    if (r & 0x10000) r ^= 0x18005;
    if ((b >> i) & 1) r ^= a;
  }
  return r;
}

struct XPow {
  uint32_t v[32];  // x^(8 * 2^k) mod P
};
constexpr XPow make_xpow() {
  XPow t{};
  t.v[0] = 0x100;
  for (int k = 1; k < 32; ++k) t.v[k] = crc16_mulmod(t.v[k - 1], t.v[k - 1]);
  return t;
}
constexpr XPow kXPow = make_xpow();

// CRC-16 of a frame: the CRC register after a message M is M * x^16 mod P, so appending L
// bytes maps a register c to c * x^(8L) + crc(tail). Four equal segments run as independent
// chains (the table lookups of one chain wait on each other, four chains fill the load ports)
// and are joined with Horner's rule.
uint16_t crc16(const uint8_t* p, size_t n) {
  if (n < 256) return crc16_serial(p, n);
  const size_t seg = (n / 4) & ~size_t(7);
  const size_t first = n - 3 * seg;
  const uint8_t* q[4] = {p, p + first, p + first + seg, p + first + 2 * seg};
  unsigned c[4] = {0, 0, 0, 0};
  // the first segment's extra bytes first, so that the four then advance in step
  c[0] = crc16_serial(p, first - seg);
  q[0] += first - seg;
  for (size_t off = 0; off < seg; off += 8) {
    for (int k = 0; k < 4; ++k) {
      const uint8_t* b = q[k] + off;
      const unsigned x = c[k] ^ ((unsigned(b[0]) << 8) | b[1]);
      c[k] = kCrc.c16[7][x >> 8] ^ kCrc.c16[6][x & 0xFF] ^ kCrc.c16[5][b[2]] ^
             kCrc.c16[4][b[3]] ^ kCrc.c16[3][b[4]] ^ kCrc.c16[2][b[5]] ^ kCrc.c16[1][b[6]] ^
             kCrc.c16[0][b[7]];
    }
  }
  uint32_t xs = 1;  // x^(8 * seg) mod P
  for (int k = 0; k < 32; ++k)
    if ((seg >> k) & 1) xs = crc16_mulmod(xs, kXPow.v[k]);
  uint32_t r = c[0];
  for (int k = 1; k < 4; ++k) r = crc16_mulmod(r, xs) ^ c[k];
  return uint16_t(r);
}

// ---- bit reader ---------------------------------------------------------------------------
// `cache` holds the next bits MSB first; its top `n` bits are valid, the bits under them are
// zero or already the correct next bits (a refill ORs whole 8-byte loads and keeps only whole
// bytes). Past the end of the data it feeds zero bytes and counts them in `virt`, so reads never
// touch memory out of bounds; overrun() tells whether any of them was consumed.
inline uint64_t load_be64(const uint8_t* p) {
  uint64_t w;
  std::memcpy(&w, p, 8);
  return __builtin_bswap64(w);
}

struct BitReader {
  const uint8_t* begin;
  const uint8_t* p;
  const uint8_t* end;
  uint64_t cache = 0;
  int n = 0;
  size_t virt = 0;

  BitReader(const uint8_t* b, const uint8_t* start, const uint8_t* e) : begin(b), p(start), end(e) {}

  // afterwards 56 <= n <= 63 (so a shift by every valid bit count stays below 64)
  inline void refill() {
    if (n < 56) {
      if (end - p >= 8) {
        cache |= load_be64(p) >> n;
        p += (63 - n) >> 3;
        n |= 56;
      } else {
        refill_slow();
      }
    }
  }

  void refill_slow() {
    while (n < 56) {
      uint64_t b = 0;
      if (p < end) b = *p++;
      else ++virt;
      cache |= b << (56 - n);
      n += 8;
    }
  }

  bool overrun() const { return virt * 8 > size_t(n); }
  // byte offset of the next unread bit's byte
  size_t byte_pos() const { return size_t(p - begin) + virt - size_t(n >> 3); }

  // k in 1..56
  inline uint64_t read(int k) {
    refill();
    const uint64_t v = cache >> (64 - k);
    cache <<= k;
    n -= k;
    return v;
  }
  // k in 1..56, two's complement
  inline int64_t read_signed(int k) {
    const uint64_t v = read(k);
    return int64_t(v << (64 - k)) >> (64 - k);
  }
  // number of 0 bits before the next 1 bit (which is consumed)
  uint32_t read_unary() {
    uint32_t z = 0;
    for (;;) {
      refill();
      if (cache) {
        const int lz = __builtin_clzll(cache);
        if (lz < n) {
          cache = (cache << lz) << 1;
          n -= lz + 1;
          return z + uint32_t(lz);
        }
      }
      z += uint32_t(n);
      cache = 0;  // the bits under n are reloaded by the next refill
      n = 0;
      if (virt > 16) fail("truncated frame at byte " + std::to_string(end - begin));
    }
  }
  void align_byte() {
    const int r = n & 7;
    cache <<= r;
    n -= r;
  }
};

// ---- predictors ----------------------------------------------------------------------------
// p(s, i, h1, h2, r) -> sample i from its residual r; h1 = s[i-1], h2 = s[i-2] come in registers
// (the newest samples: reloading them from memory would put a store-forwarding delay on the
// critical path), older ones are read from s. Unsigned arithmetic: wraps, never undefined.
template <typename T, int O>
struct FixedP {
  T operator()(const T* s, uint32_t i, T h1, T h2, T r) const {
    using U = std::make_unsigned_t<T>;
    if constexpr (O == 0) return r;
    else if constexpr (O == 1) return T(U(h1) + U(r));
    else if constexpr (O == 2) return T(U(r) - U(h2) + 2 * U(h1));
    else if constexpr (O == 3) return T(U(s[i - 3]) + U(r) + 3 * (U(h1) - U(h2)));
    else return T(U(r) - U(s[i - 4]) + 4 * U(s[i - 3]) - 6 * U(h2) + 4 * U(h1));
  }
};

// 32-bit sums (exact when bps + precision + ceil(log2(order)) <= 32)
template <int O>
struct Lpc32P {
  uint32_t c[32];
  int shift;
  int32_t operator()(const int32_t* s, uint32_t i, int32_t h1, int32_t h2, int32_t r) const {
    uint32_t rest = 0;
    for (int j = 2; j < O; ++j) rest += c[j] * uint32_t(s[i - 1 - j]);
    if constexpr (O >= 2) rest += c[1] * uint32_t(h2);
    const uint32_t sum = rest + c[0] * uint32_t(h1);
    return int32_t(uint32_t(r) + uint32_t(int32_t(sum) >> shift));
  }
};

#if defined(__SSE2__)
// 16-bit samples and coefficients, orders 3..10: the taps of s[i-3] .. s[i-10] go through one
// pmaddwd on an int16 copy of the samples (sh, 16 zeros before index 0); its pair sums wrap
// only where the 32-bit total would, so the result is the same as Lpc32P's.
template <int O>
struct Lpc16P {
  __m128i cv;
  uint32_t c0, c1;
  int shift;
  int16_t* sh;
  int32_t operator()(const int32_t*, uint32_t i, int32_t h1, int32_t h2, int32_t r) const {
    const __m128i x = _mm_loadu_si128(reinterpret_cast<const __m128i*>(sh + i - 10));
    __m128i v = _mm_madd_epi16(x, cv);
    v = _mm_add_epi32(v, _mm_shuffle_epi32(v, 0x4E));
    v = _mm_add_epi32(v, _mm_shuffle_epi32(v, 0xB1));
    const uint32_t sum = uint32_t(_mm_cvtsi128_si32(v)) + c1 * uint32_t(h2) + c0 * uint32_t(h1);
    const int32_t out = int32_t(uint32_t(r) + uint32_t(int32_t(sum) >> shift));
    sh[i] = int16_t(out);
    return out;
  }
};
#endif

// 64-bit sums, any order. Unsigned: with 31-32 bit samples a malformed stream's wrapped
// samples make the products overflow int64 (found by tests/fuzz/flac_fuzzer.cpp); a valid
// stream's sum fits int64, where the wrapping sum is the same.
template <typename T>
struct Lpc64P {
  int32_t c[32];
  uint32_t order;
  int shift;
  T operator()(const T* s, uint32_t i, T, T, T r) const {
    uint64_t sum = 0;
    for (uint32_t j = 0; j < order; ++j)
      sum += uint64_t(int64_t(c[j])) * uint64_t(int64_t(s[i - 1 - j]));
    using U = std::make_unsigned_t<T>;
    return T(U(r) + U(T(int64_t(sum) >> shift)));
  }
};

// ---- residual + prediction ------------------------------------------------------------------
inline int32_t unzigzag(uint32_t u) { return int32_t((u >> 1) ^ (0u - (u & 1u))); }

// Rice-coded samples s[i .. e), each restored by the predictor as soon as it is decoded: the
// bit-reader chain and the predictor chain are independent and overlap in the CPU.
template <typename T, typename Pred>
void rice_predict(BitReader& br, T* s, uint32_t i, uint32_t e, int k, const Pred& pred) {
  T h1 = i >= 1 ? s[i - 1] : T(0), h2 = i >= 2 ? s[i - 2] : T(0);
  while (i < e) {
    const size_t avail = size_t(br.end - br.p);
    // every sample of the fast loop takes <= 63 bits, so 8 bytes each plus one load suffice
    const uint32_t chunk = avail >= 16 ? uint32_t(std::min<size_t>(e - i, (avail - 16) / 8)) : 0;
    if (chunk) {
      uint64_t cache = br.cache;
      int n = br.n;
      const uint8_t* p = br.p;
      if (n < 56) {
        cache |= load_be64(p) >> n;
        p += (63 - n) >> 3;
        n |= 56;
      }
      const uint32_t stop = i + chunk;
      bool slow = false;
      for (; i < stop; ++i) {
        const int lz = __builtin_clzll(cache | 1);
        const int total = lz + 1 + k;
        if (__builtin_expect(total > n, 0)) {
          slow = true;
          break;
        }
        const uint64_t t = cache << lz;  // stop bit at the top
        const uint32_t u = ((uint32_t(lz) - 1u) << k) + uint32_t(t >> (63 - k));
        cache <<= total;
        n -= total;
        cache |= load_be64(p) >> n;
        p += (63 - n) >> 3;
        n |= 56;
        const T v = pred(s, i, h1, h2, T(unzigzag(u)));
        s[i] = v;
        h2 = h1;
        h1 = v;
      }
      br.cache = cache;
      br.n = n;
      br.p = p;
      if (!slow) continue;
    }
    // one sample through the general reader (long unary run, or the end of the data is near)
    uint32_t u = br.read_unary() << k;
    if (k) u |= uint32_t(br.read(k));
    const T v = pred(s, i, h1, h2, T(unzigzag(u)));
    s[i] = v;
    h2 = h1;
    h1 = v;
    ++i;
  }
}

[[noreturn]] void bad(const BitReader& br, size_t frame_pos, const char* what) {
  if (br.overrun()) fail("truncated frame at byte " + std::to_string(frame_pos));
  fail(std::string(what) + " in frame at byte " + std::to_string(frame_pos));
}

// Residual of a block of `bs` samples after `order` warm-up samples (already in s[0 .. order)),
// restored into s[order .. bs) by the predictor.
template <typename T, typename Pred>
void residual_predict(BitReader& br, T* s, uint32_t bs, uint32_t order, size_t fpos,
                      const Pred& pred) {
  const uint32_t method = uint32_t(br.read(2));
  if (method > 1) bad(br, fpos, "reserved residual coding method");
  const int pbits = method ? 5 : 4;
  const int escape = method ? 31 : 15;
  const uint32_t porder = uint32_t(br.read(4));
  const uint32_t parts = 1u << porder;
  if (bs & (parts - 1)) bad(br, fpos, "partition order does not divide the block size");
  const uint32_t psize = bs >> porder;
  if (psize < order) bad(br, fpos, "partition smaller than the predictor order");
  uint32_t i = order;
  for (uint32_t part = 0; part < parts; ++part) {
    const uint32_t e = (part + 1) * psize;
    const int k = int(br.read(pbits));
    if (k == escape) {
      const int nb = int(br.read(5));
      for (; i < e; ++i) {
        const T r = nb ? T(int32_t(br.read_signed(nb))) : T(0);
        s[i] = pred(s, i, i >= 1 ? s[i - 1] : T(0), i >= 2 ? s[i - 2] : T(0), r);
      }
    } else {
      rice_predict(br, s, i, e, k, pred);
      i = e;
    }
    if (br.overrun()) fail("truncated frame at byte " + std::to_string(fpos));
  }
}

template <typename T, int O>
void fixed_fn(BitReader& br, T* s, uint32_t bs, size_t fpos) {
  residual_predict(br, s, bs, O, fpos, FixedP<T, O>{});
}

template <int O>
void lpc32_fn(BitReader& br, int32_t* s, uint32_t bs, size_t fpos, const int32_t* coef,
              int shift) {
  Lpc32P<O> p;
  for (int j = 0; j < O; ++j) p.c[j] = uint32_t(coef[j]);
  p.shift = shift;
  residual_predict(br, s, bs, O, fpos, p);
}

#if defined(__SSE2__)
template <int O>
void lpc16_fn(BitReader& br, int32_t* s, uint32_t bs, size_t fpos, const int32_t* coef,
              int shift, int16_t* sh) {
  Lpc16P<O> p;
  alignas(16) int16_t c[8] = {};
  for (int l = 0; l < 8; ++l) c[l] = 9 - l < O ? int16_t(coef[9 - l]) : int16_t(0);
  p.cv = _mm_load_si128(reinterpret_cast<const __m128i*>(c));
  p.c0 = uint32_t(coef[0]);
  p.c1 = uint32_t(coef[1]);
  p.shift = shift;
  p.sh = sh;
  for (int j = 0; j < O; ++j) sh[j] = int16_t(s[j]);
  residual_predict(br, s, bs, O, fpos, p);
}
using Lpc16Fn = void (*)(BitReader&, int32_t*, uint32_t, size_t, const int32_t*, int, int16_t*);
constexpr Lpc16Fn kLpc16[8] = {&lpc16_fn<3>, &lpc16_fn<4>, &lpc16_fn<5>, &lpc16_fn<6>,
                               &lpc16_fn<7>, &lpc16_fn<8>, &lpc16_fn<9>, &lpc16_fn<10>};
#endif

using Lpc32Fn = void (*)(BitReader&, int32_t*, uint32_t, size_t, const int32_t*, int);
template <int... I>
constexpr std::array<Lpc32Fn, sizeof...(I)> make_lpc32_table(std::integer_sequence<int, I...>) {
  return {{&lpc32_fn<I + 1>...}};
}
constexpr std::array<Lpc32Fn, 32> kLpc32 = make_lpc32_table(std::make_integer_sequence<int, 32>{});

inline int ceil_log2(uint32_t v) {
  int r = 0;
  while ((1u << r) < v) ++r;
  return r;
}

// ---- subframe -----------------------------------------------------------------------------
template <typename T>
void decode_subframe(BitReader& br, T* s, uint32_t bs, uint32_t bps, size_t fpos,
                     int16_t* sh) {
  const uint32_t hdr = uint32_t(br.read(8));
  if (hdr & 0x80) bad(br, fpos, "nonzero subframe padding bit");
  const uint32_t type = (hdr >> 1) & 0x3F;
  uint32_t wasted = 0;
  if (hdr & 1) {
    wasted = br.read_unary() + 1;
    if (wasted >= bps) bad(br, fpos, "wasted bits exceed the sample size");
    bps -= wasted;
  }
  const int b = int(bps);
  if (type == 0) {  // CONSTANT
    const T v = T(br.read_signed(b));
    std::fill(s, s + bs, v);
  } else if (type == 1) {  // VERBATIM
    for (uint32_t i = 0; i < bs; ++i) s[i] = T(br.read_signed(b));
  } else if (type >= 8 && type <= 12) {  // FIXED
    const uint32_t order = type - 8;
    if (order > bs) bad(br, fpos, "predictor order exceeds the block size");
    for (uint32_t i = 0; i < order; ++i) s[i] = T(br.read_signed(b));
    switch (order) {
      case 0: fixed_fn<T, 0>(br, s, bs, fpos); break;
      case 1: fixed_fn<T, 1>(br, s, bs, fpos); break;
      case 2: fixed_fn<T, 2>(br, s, bs, fpos); break;
      case 3: fixed_fn<T, 3>(br, s, bs, fpos); break;
      default: fixed_fn<T, 4>(br, s, bs, fpos); break;
    }
  } else if (type >= 32) {  // LPC
    const uint32_t order = type - 31;
    if (order > bs) bad(br, fpos, "predictor order exceeds the block size");
    for (uint32_t i = 0; i < order; ++i) s[i] = T(br.read_signed(b));
    const uint32_t precision = uint32_t(br.read(4)) + 1;
    if (precision == 16) bad(br, fpos, "invalid LPC coefficient precision");
    const int shift = int(br.read_signed(5));
    if (shift < 0) bad(br, fpos, "negative LPC shift");
    int32_t coef[32] = {};
    for (uint32_t j = 0; j < order; ++j) coef[j] = int32_t(br.read_signed(int(precision)));
    // |sum| <= order * 2^(bps-1) * 2^(precision-1): fits int32 when this is <= 32
    bool done = false;
    if constexpr (std::is_same_v<T, int32_t>) {
      if (bps + precision + uint32_t(ceil_log2(order)) <= 32) {
#if defined(__SSE2__)
        if (bps <= 16 && order >= 3 && order <= 10)
          kLpc16[order - 3](br, s, bs, fpos, coef, shift, sh);
        else
#endif
          kLpc32[order - 1](br, s, bs, fpos, coef, shift);
        done = true;
      }
    }
    if (!done) {
      Lpc64P<T> p;
      std::memcpy(p.c, coef, sizeof(p.c));
      p.order = order;
      p.shift = shift;
      residual_predict(br, s, bs, order, fpos, p);
    }
  } else {
    bad(br, fpos, "reserved subframe type");
  }
  if (br.overrun()) fail("truncated frame at byte " + std::to_string(fpos));
  if (wasted) {
    using U = std::make_unsigned_t<T>;
    for (uint32_t i = 0; i < bs; ++i) s[i] = T(U(s[i]) << wasted);
  }
}

// ---- decorrelation + float conversion -----------------------------------------------------
template <typename T>
void emit(T* const* ch, uint32_t nch, uint32_t assign, uint32_t bs, float scale, float* out) {
  using U = std::make_unsigned_t<T>;
  if (nch == 1) {
    const T* a = ch[0];
    for (uint32_t i = 0; i < bs; ++i) out[i] = float(a[i]) * scale;
    return;
  }
  if (nch == 2) {
    const T* a = ch[0];
    const T* b = ch[1];
    switch (assign) {
      case 8:  // left, side
        for (uint32_t i = 0; i < bs; ++i) {
          const T l = a[i], r = T(U(a[i]) - U(b[i]));
          out[2 * i] = float(l) * scale;
          out[2 * i + 1] = float(r) * scale;
        }
        return;
      case 9:  // side, right
        for (uint32_t i = 0; i < bs; ++i) {
          const T r = b[i], l = T(U(a[i]) + U(b[i]));
          out[2 * i] = float(l) * scale;
          out[2 * i + 1] = float(r) * scale;
        }
        return;
      case 10:  // mid, side
        for (uint32_t i = 0; i < bs; ++i) {
          const T side = b[i];
          const U mid = (U(a[i]) << 1) | (U(side) & 1);
          const T l = T(T(mid + U(side)) >> 1), r = T(T(mid - U(side)) >> 1);
          out[2 * i] = float(l) * scale;
          out[2 * i + 1] = float(r) * scale;
        }
        return;
      default:
        for (uint32_t i = 0; i < bs; ++i) {
          out[2 * i] = float(a[i]) * scale;
          out[2 * i + 1] = float(b[i]) * scale;
        }
        return;
    }
  }
  for (uint32_t c = 0; c < nch; ++c) {
    const T* a = ch[c];
    float* o = out + c;
    for (uint32_t i = 0; i < bs; ++i) o[size_t(i) * nch] = float(a[i]) * scale;
  }
}

// ---- stream -------------------------------------------------------------------------------
struct Decoder {
  const uint8_t* data;
  size_t size;
  FlacInfo info;
  std::vector<int32_t> buf32[8];
  std::vector<int64_t> buf64[8];
  std::vector<int16_t> shadow;  // int16 copy of a subframe for Lpc16P; 16 zeros first
  uint64_t decoded = 0;
  uint64_t frame_index = 0;
  int blocking = -1;
  float scale;

  Decoder(const uint8_t* d, size_t n, const FlacInfo& i) : data(d), size(n), info(i) {
    scale = 1.0f / float(uint64_t(1) << (info.bits_per_sample - 1));
  }

  [[noreturn]] void truncated(size_t pos) {
    fail("truncated frame at byte " + std::to_string(pos));
  }

  // Decodes the frame at byte `pos`; `get_out(bs)` returns where its bs x channels floats go.
  // Returns the byte after the frame.
  template <typename GetOut>
  size_t frame(size_t pos, GetOut&& get_out) {
    const uint8_t* d = data;
    const size_t fpos = pos;
    auto need = [&](size_t k) {
      if (size - pos < k) truncated(fpos);
    };
    need(4);
    if (d[pos] != 0xFF || (d[pos + 1] & 0xFE) != 0xF8)
      fail("lost frame sync at byte " + std::to_string(fpos));
    const int strategy = d[pos + 1] & 1;
    if (blocking < 0) blocking = strategy;
    else if (blocking != strategy) fail("blocking strategy changes at byte " + std::to_string(fpos));
    const uint32_t bs_code = d[pos + 2] >> 4, sr_code = d[pos + 2] & 15;
    const uint32_t ch_code = d[pos + 3] >> 4, ss_code = (d[pos + 3] >> 1) & 7;
    if (d[pos + 3] & 1) fail("reserved frame header bit set at byte " + std::to_string(fpos));
    pos += 4;
    // coded frame / sample number
    need(1);
    uint32_t b0 = d[pos++];
    uint64_t number;
    int extra;
    if (b0 < 0x80) { number = b0; extra = 0; }
    else if ((b0 & 0xE0) == 0xC0) { number = b0 & 0x1F; extra = 1; }
    else if ((b0 & 0xF0) == 0xE0) { number = b0 & 0x0F; extra = 2; }
    else if ((b0 & 0xF8) == 0xF0) { number = b0 & 0x07; extra = 3; }
    else if ((b0 & 0xFC) == 0xF8) { number = b0 & 0x03; extra = 4; }
    else if ((b0 & 0xFE) == 0xFC) { number = b0 & 0x01; extra = 5; }
    else if (b0 == 0xFE) { number = 0; extra = 6; }
    else fail("bad coded number in frame at byte " + std::to_string(fpos));
    need(size_t(extra));
    for (int i = 0; i < extra; ++i) {
      const uint32_t c = d[pos++];
      if ((c & 0xC0) != 0x80) fail("bad coded number in frame at byte " + std::to_string(fpos));
      number = (number << 6) | (c & 0x3F);
    }
    uint32_t bs;
    if (bs_code == 0) fail("reserved block size in frame at byte " + std::to_string(fpos));
    else if (bs_code == 1) bs = 192;
    else if (bs_code <= 5) bs = 576u << (bs_code - 2);
    else if (bs_code == 6) { need(1); bs = uint32_t(d[pos]) + 1; pos += 1; }
    else if (bs_code == 7) { need(2); bs = ((uint32_t(d[pos]) << 8) | d[pos + 1]) + 1; pos += 2; }
    else bs = 256u << (bs_code - 8);
    if (sr_code == 12) { need(1); pos += 1; }
    else if (sr_code == 13 || sr_code == 14) { need(2); pos += 2; }
    else if (sr_code == 15) fail("invalid sample rate code in frame at byte " + std::to_string(fpos));
    need(1);
    if (crc8(d + fpos, pos - fpos) != d[pos] && kRefuseBadCrc)
      fail("bad CRC-8 in frame " + std::to_string(frame_index) + " at byte " + std::to_string(fpos));
    pos += 1;

    if (strategy == 0 ? number != frame_index : number != decoded)
      fail("unexpected frame number in frame at byte " + std::to_string(fpos));
    static const uint32_t kBits[8] = {0, 8, 12, 0, 16, 20, 24, 32};
    uint32_t bps = ss_code == 0 ? info.bits_per_sample : kBits[ss_code];
    if (ss_code == 3) fail("reserved sample size in frame at byte " + std::to_string(fpos));
    if (bps != info.bits_per_sample)
      fail("frame sample size differs from STREAMINFO at byte " + std::to_string(fpos));
    uint32_t nch;
    if (ch_code < 8) nch = ch_code + 1;
    else if (ch_code <= 10) nch = 2;
    else fail("reserved channel assignment in frame at byte " + std::to_string(fpos));
    if (nch != info.channels)
      fail("frame channel count differs from STREAMINFO at byte " + std::to_string(fpos));

    BitReader br(d, d + pos, d + size);
    if (bps >= 31) pos = subframes<int64_t>(br, buf64, bs, bps, nch, ch_code, fpos, get_out);
    else pos = subframes<int32_t>(br, buf32, bs, bps, nch, ch_code, fpos, get_out);
    ++frame_index;
    return pos;
  }

  template <typename T, typename GetOut>
  size_t subframes(BitReader& br, std::vector<T>* bufs, uint32_t bs, uint32_t bps, uint32_t nch,
                   uint32_t assign, size_t fpos, GetOut& get_out) {
    T* ch[8];
    if (shadow.size() < size_t(bs) + 16) shadow.assign(size_t(bs) + 16, 0);
    for (uint32_t c = 0; c < nch; ++c) {
      if (bufs[c].size() < bs) bufs[c].resize(bs);
      ch[c] = bufs[c].data();
      const bool side = (assign == 8 && c == 1) || (assign == 9 && c == 0) ||
                        (assign == 10 && c == 1);
      decode_subframe(br, ch[c], bs, bps + (side ? 1 : 0), fpos, shadow.data() + 16);
    }
    br.align_byte();
    const size_t crc_pos = br.byte_pos();
    if (br.overrun() || size - crc_pos < 2) truncated(fpos);
    const uint16_t want = uint16_t((data[crc_pos] << 8) | data[crc_pos + 1]);
    if (crc16(data + fpos, crc_pos - fpos) != want && kRefuseBadCrc)
      fail("bad CRC-16 in frame " + std::to_string(frame_index) + " at byte " +
           std::to_string(fpos));
    float* out = get_out(bs);
    emit<T>(ch, nch, assign, bs, scale, out);
    decoded += bs;
    return crc_pos + 2;
  }
};

}  // namespace

FlacInfo flac_parse_info(const uint8_t* d, size_t size) {
  size_t pos = 0;
  // an ID3v2 tag may precede the stream
  if (size >= 10 && d[0] == 'I' && d[1] == 'D' && d[2] == '3') {
    const size_t len = (size_t(d[6] & 0x7F) << 21) | (size_t(d[7] & 0x7F) << 14) |
                       (size_t(d[8] & 0x7F) << 7) | size_t(d[9] & 0x7F);
    pos = 10 + len + ((d[5] & 0x10) ? 10 : 0);
  }
  if (size < pos + 4 || std::memcmp(d + pos, "fLaC", 4) != 0) fail("not a FLAC stream");
  pos += 4;
  FlacInfo info;
  bool first = true, last = false;
  while (!last) {
    if (size - pos < 4) fail("truncated metadata at byte " + std::to_string(pos));
    last = (d[pos] & 0x80) != 0;
    const uint32_t type = d[pos] & 0x7F;
    const size_t len = (size_t(d[pos + 1]) << 16) | (size_t(d[pos + 2]) << 8) | d[pos + 3];
    pos += 4;
    if (size - pos < len) fail("truncated metadata at byte " + std::to_string(pos));
    if (type == 127) fail("invalid metadata block type at byte " + std::to_string(pos - 4));
    if (first != (type == 0)) fail("STREAMINFO must be the first metadata block");
    if (type == 0) {
      if (len < 34) fail("short STREAMINFO block");
      const uint8_t* s = d + pos;
      info.sample_rate = (uint32_t(s[10]) << 12) | (uint32_t(s[11]) << 4) | (s[12] >> 4);
      info.channels = ((s[12] >> 1) & 7) + 1;
      info.bits_per_sample = (((uint32_t(s[12]) & 1) << 4) | (s[13] >> 4)) + 1;
      info.total_samples = (uint64_t(s[13] & 0x0F) << 32) | (uint64_t(s[14]) << 24) |
                           (uint64_t(s[15]) << 16) | (uint64_t(s[16]) << 8) | s[17];
      if (info.bits_per_sample < 4)
        fail("unsupported bits per sample " + std::to_string(info.bits_per_sample));
    }
    first = false;
    pos += len;
  }
  info.audio_offset = pos;
  return info;
}

namespace {

// out[i] = the mean of the nch channels of row i of `in` (rows x nch, interleaved), summed in
// numpy's order for a float32 row mean (bit-identical to np.mean(axis=1, dtype=float32)).
void mix_rows(const float* in, uint32_t nch, uint32_t rows, float* out) {
  const float count = float(nch);
  for (uint32_t i = 0; i < rows; ++i) {
    const float* f = in + size_t(i) * nch;
    float sum;
    if (nch == 8) {  // numpy sums a row of 8 pairwise
      sum = ((f[0] + f[1]) + (f[2] + f[3])) + ((f[4] + f[5]) + (f[6] + f[7]));
    } else {
      sum = f[0];
      for (uint32_t c = 1; c < nch; ++c) sum += f[c];
    }
    out[i] = sum / count;
  }
}

// Decodes the frames of the stream; get_out(done, bs) returns where the bs x channels floats
// of the frame that follows `done` decoded samples go. With a known total the stream must hold exactly that many samples.
template <typename GetOut>
void decode_frames(const uint8_t* data, size_t size, const FlacInfo& info, GetOut get_out) {
  Decoder dec(data, size, info);
  const uint64_t total = info.total_samples;
  auto sink = [&](uint32_t bs) -> float* {
    if (total && total - dec.decoded < bs)
      fail("stream holds more samples than STREAMINFO declares (" + std::to_string(total) +
           ")");
    return get_out(dec.decoded, bs);
  };
  size_t pos = info.audio_offset;
  while (total ? dec.decoded < total : pos < size) {
    if (pos >= size)
      fail("truncated stream: " + std::to_string(dec.decoded) + " of " + std::to_string(total) +
           " samples present");
    pos = dec.frame(pos, sink);
  }
}

}  // namespace

void flac_decode_into(const uint8_t* data, size_t size, const FlacInfo& info, float* out) {
  if (info.total_samples == 0) fail("flac_decode_into needs the STREAMINFO total sample count");
  const uint32_t nch = info.channels;
  decode_frames(data, size, info,
                [&](uint64_t done, uint32_t) { return out + size_t(done) * nch; });
}

void flac_decode_mono_into(const uint8_t* data, size_t size, const FlacInfo& info, float* out) {
  if (info.total_samples == 0)
    fail("flac_decode_mono_into needs the STREAMINFO total sample count");
  const uint32_t nch = info.channels;
  if (nch == 1) return flac_decode_into(data, size, info, out);
  std::vector<float> scratch;  // one frame, interleaved
  uint64_t at = 0;
  uint32_t held = 0;
  auto mix = [&] {  // the frame decoded into scratch -> out[at .. at + held)
    mix_rows(scratch.data(), nch, held, out + at);
    held = 0;
  };
  decode_frames(data, size, info, [&](uint64_t done, uint32_t bs) {
    mix();
    if (scratch.size() < size_t(bs) * nch) scratch.resize(size_t(bs) * nch);
    at = done;
    held = bs;
    return scratch.data();
  });
  mix();
}

uint64_t flac_count_samples(const uint8_t* data, size_t size, const FlacInfo& info,
                            uint64_t max_samples) {
  std::vector<float> scratch;
  const uint32_t nch = info.channels;
  uint64_t count = 0;
  decode_frames(data, size, info, [&](uint64_t done, uint32_t bs) {
    if (done + bs > max_samples)
      throw FlacLimitError("FLAC: stream holds more than " + std::to_string(max_samples) +
                           " samples");
    count = done + bs;
    if (scratch.size() < size_t(bs) * nch) scratch.resize(size_t(bs) * nch);
    return scratch.data();
  });
  return count;
}

std::vector<float> flac_decode(const uint8_t* data, size_t size, const FlacInfo& info,
                               uint64_t max_samples) {
  FlacInfo known = info;
  if (known.total_samples == 0)
    known.total_samples = flac_count_samples(data, size, info, max_samples);
  if (known.total_samples > max_samples)
    throw FlacLimitError("FLAC: STREAMINFO declares " + std::to_string(known.total_samples) +
                         " samples, more than " + std::to_string(max_samples));
  std::vector<float> out;
  if (known.total_samples == 0) return out;
  out.resize(size_t(known.total_samples) * known.channels);
  flac_decode_into(data, size, known, out.data());
  return out;
}

// ---- frame by frame -----------------------------------------------------------------------
struct FlacStream::Impl {
  Decoder dec;
  size_t pos;
  bool mono;
  uint64_t limit;
  bool done = false;
  std::vector<float> scratch;  // one frame, interleaved (mono mixing)

  Impl(const uint8_t* d, size_t n, const FlacInfo& i, bool m, uint64_t lim)
      : dec(d, n, i), pos(i.audio_offset), mono(m && i.channels > 1), limit(lim) {}
};

FlacStream::FlacStream(const uint8_t* data, size_t size, const FlacInfo& info, bool mono,
                       uint64_t max_samples)
    : impl_(nullptr) {
  // checked before anything is allocated: a constructor that throws runs no destructor, so
  // an Impl made first would leak (found by tests/fuzz/flac_fuzzer.cpp)
  if (info.total_samples > max_samples)
    throw FlacLimitError("FLAC: STREAMINFO declares " + std::to_string(info.total_samples) +
                         " samples, more than " + std::to_string(max_samples));
  impl_ = new Impl(data, size, info, mono, max_samples);
}

FlacStream::~FlacStream() { delete impl_; }

void FlacStream::read(uint64_t want, std::vector<float>& out) {
  Impl& s = *impl_;
  Decoder& dec = s.dec;
  const uint64_t total = dec.info.total_samples;
  const uint32_t nch = dec.info.channels;
  const uint32_t width = s.mono ? 1 : nch;
  out.clear();
  uint64_t got = 0;
  auto sink = [&](uint32_t bs) -> float* {  // the checks of decode_frames and flac_count_samples
    if (total && total - dec.decoded < bs)
      fail("stream holds more samples than STREAMINFO declares (" + std::to_string(total) +
           ")");
    if (dec.decoded + bs > s.limit)
      throw FlacLimitError("FLAC: stream holds more than " + std::to_string(s.limit) +
                           " samples");
    if (s.mono) {
      if (s.scratch.size() < size_t(bs) * nch) s.scratch.resize(size_t(bs) * nch);
      return s.scratch.data();
    }
    out.resize(size_t(got + bs) * width);
    return out.data() + size_t(got) * width;
  };
  while (!s.done && got < want) {
    if (!(total ? dec.decoded < total : s.pos < dec.size)) {
      s.done = true;
      break;
    }
    if (s.pos >= dec.size)
      fail("truncated stream: " + std::to_string(dec.decoded) + " of " + std::to_string(total) +
           " samples present");
    const uint64_t before = dec.decoded;
    s.pos = dec.frame(s.pos, sink);
    const uint32_t bs = uint32_t(dec.decoded - before);
    if (s.mono) {
      out.resize(size_t(got + bs));
      mix_rows(s.scratch.data(), nch, bs, out.data() + got);
    }
    got += bs;
  }
}

bool FlacStream::finished() const { return impl_->done; }
uint64_t FlacStream::decoded() const { return impl_->dec.decoded; }
size_t FlacStream::byte_pos() const { return impl_->pos; }
const FlacInfo& FlacStream::info() const { return impl_->dec.info; }
bool FlacStream::mono() const { return impl_->mono || impl_->dec.info.channels == 1; }

}  // namespace mmengine::audio
