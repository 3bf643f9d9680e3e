// Inline rans64 primitives shared by the compat and fast formats (encoder writes 32-bit words
// backwards, decoder reads them forwards), plus the escape (bypass) value mapping.
#pragma once

#include <cstring>

#include "rans/rans_core.hpp"

namespace cod_fast {
namespace rans {

// Words are stored little-endian whatever the host.
inline uint32_t to_le32(uint32_t v) {
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
  return __builtin_bswap32(v);
#else
  return v;
#endif
}
inline uint32_t load_le32(const uint8_t* p) {
  uint32_t v;
  std::memcpy(&v, p, 4);
  return to_le32(v);
}
inline void store_le32(uint8_t* p, uint32_t v) {
  v = to_le32(v);
  std::memcpy(p, &v, 4);
}

inline uint64_t mulhi64(uint64_t a, uint64_t b) {
  return static_cast<uint64_t>((static_cast<unsigned __int128>(a) * b) >> 64);
}

// Encode one symbol into state x; *ptr moves down by one word when the state renormalises.
// Precondition: e.freq > 0, x in [L, 2^63). Postcondition: x in [L, 2^63).
inline void enc_put(uint64_t& x, uint32_t*& ptr, const EncSym& e) {
  // x_max = ((L >> 16) << 32) * freq: the state after encoding must stay below 2^63.
  const uint64_t x_max = (static_cast<uint64_t>(e.freq) << (31 - kPrecision + 32));
  if (x >= x_max) {
    *--ptr = to_le32(static_cast<uint32_t>(x));
    x >>= 32;
  }
  const uint64_t q = mulhi64(x, e.rcp_freq) >> e.rcp_shift;
  x = x + e.bias + q * e.cmpl_freq;
}

// Push kBypassBits raw bits (CompressAI's Rans64EncPutBits: x = (x << 4) | val).
inline void enc_put_bits(uint64_t& x, uint32_t*& ptr, uint32_t val) {
  // Equivalent to a symbol of frequency 2^(16-4) at precision 16: x_max = 2^(31-16+32) * 2^12.
  const uint64_t x_max = 1ull << (31 - kPrecision + 32 + kPrecision - kBypassBits);
  if (x >= x_max) {
    *--ptr = to_le32(static_cast<uint32_t>(x));
    x >>= 32;
  }
  x = (x << kBypassBits) | val;
}

// Decoder word source with bounds: reading past the end raises StreamError.
struct WordReader {
  const uint8_t* data;
  size_t n_words;
  size_t pos;
  inline uint32_t next() {
    if (pos >= n_words) throw StreamError("rANS stream truncated (read past the last word)");
    return load_le32(data + 4 * pos++);
  }
};

inline uint32_t dec_get_bits(uint64_t& x, WordReader& rd) {
  const uint32_t val = static_cast<uint32_t>(x) & kMaxBypassVal;
  x >>= kBypassBits;
  if (x < kRansL) x = (x << 32) | rd.next();
  return val;
}

// Escape mapping of CompressAI. value = symbol - offset (exact, in 64 bits). Returns true when the
// value needs the escape symbol; then *raw is the zig-zag payload. Throws ArgError when the payload
// would not round-trip (raw >= 2^31).
inline bool escape_of(int64_t value, int32_t max_value, uint32_t* raw) {
  if (value >= 0 && value < max_value) return false;
  const int64_t r = value < 0 ? -2 * value - 1 : 2 * (value - max_value);
  if (r > static_cast<int64_t>(kMaxRaw)) {
    throw ArgError("rANS: symbol too far outside its table's range (escape payload >= 2^31)");
  }
  *raw = static_cast<uint32_t>(r);
  return true;
}

// Number of 4-bit nibbles that carry raw (0 for raw == 0), at most kMaxRawNibbles.
inline int raw_nibbles(uint32_t raw) {
  int n = 0;
  while (n < kMaxRawNibbles && (raw >> (n * kBypassBits)) != 0) ++n;
  return n;
}

// Encoder side of the escape payload for one symbol, in reverse of the decoding order: raw nibbles
// last-to-first, then the nibble count (CompressAI writes the count as 15, 15, ..., rest; with at
// most 8 nibbles it is always a single nibble).
inline void enc_escape_payload(uint64_t& x, uint32_t*& ptr, uint32_t raw) {
  const int n = raw_nibbles(raw);
  for (int j = n - 1; j >= 0; --j) enc_put_bits(x, ptr, (raw >> (j * kBypassBits)) & kMaxBypassVal);
  enc_put_bits(x, ptr, static_cast<uint32_t>(n));
}

// Decoder side: reads the nibble count and payload and returns the symbol value (before adding
// the offset). Streams whose count or payload cannot come from a valid encoder raise StreamError.
inline int64_t dec_escape_payload(uint64_t& x, WordReader& rd, int32_t max_value) {
  uint32_t val = dec_get_bits(x, rd);
  uint32_t n = val;
  while (val == kMaxBypassVal) {  // CompressAI's "count continues" marker
    val = dec_get_bits(x, rd);
    n += val;
    if (n > static_cast<uint32_t>(kMaxRawNibbles)) break;
  }
  if (n > static_cast<uint32_t>(kMaxRawNibbles)) {
    throw StreamError("rANS stream corrupted: escape with more than 8 payload nibbles");
  }
  uint32_t raw = 0;
  for (uint32_t j = 0; j < n; ++j) raw |= dec_get_bits(x, rd) << (j * kBypassBits);
  if (raw > kMaxRaw) throw StreamError("rANS stream corrupted: escape payload >= 2^31");
  const int64_t half = raw >> 1;
  return (raw & 1) ? -half - 1 : half + max_value;
}

// Final symbol = value + offset must be an int32.
inline int32_t checked_symbol(int64_t value, int32_t offset) {
  const int64_t s = value + offset;
  if (s < INT32_MIN || s > INT32_MAX) throw StreamError("rANS stream corrupted: symbol overflow");
  return static_cast<int32_t>(s);
}

}  // namespace rans
}  // namespace cod_fast
