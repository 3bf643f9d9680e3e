// CompressAI-compatible rANS streams: one rans64 state, precision 16, the 8-byte final state
// first, then the 32-bit words the decoder reads in order. Byte-for-byte equal to
// compressai.ans.RansEncoder().encode_with_indexes on little-endian hosts; unlike it, the output
// buffer is sized from the exact operation count (CompressAI's flush overflows for 0-3 symbols).
#include <string>

#include "rans/rans_ops.hpp"

namespace cod_fast {
namespace rans {

namespace {

inline void check_index(const Tables& tables, int32_t t, int64_t i) {
  // Unsigned compare rejects negatives too.
  if (static_cast<uint32_t>(t) >= static_cast<uint32_t>(tables.n_tables())) {
    throw ArgError("rANS: indexes[" + std::to_string(i) + "] = " + std::to_string(t) +
                   " outside [0, " + std::to_string(tables.n_tables()) + ")");
  }
}

}  // namespace

std::string compat_encode(const Tables& tables, const int32_t* symbols, const int32_t* indexes,
                          int64_t n) {
  // Pass 1: validate and count encoder operations (each emits at most one word).
  int64_t ops = 0;
  for (int64_t i = 0; i < n; ++i) {
    const int32_t t = indexes[i];
    check_index(tables, t, i);
    const auto& inf = tables.info(t);
    const int64_t value = static_cast<int64_t>(symbols[i]) - inf.offset;
    uint32_t raw = 0;
    int64_t v = value;
    if (escape_of(value, inf.max_value, &raw)) {
      ops += 1 + raw_nibbles(raw);
      v = inf.max_value;
    }
    if (tables.enc(t)[v].rcp_shift == kZeroFreq) {
      throw ArgError("rANS: symbols[" + std::to_string(i) + "] has probability 0 in table " +
                     std::to_string(t));
    }
    ops += 1;
  }
  // Pass 2: encode in reverse into words[0 .. cap); the stream is the tail [ptr, end).
  const size_t cap = static_cast<size_t>(ops) + 2;
  std::vector<uint32_t> words(cap);
  uint32_t* const end = words.data() + cap;
  uint32_t* ptr = end;
  uint64_t x = kRansL;
  for (int64_t i = n - 1; i >= 0; --i) {
    const int32_t t = indexes[i];
    const auto& inf = tables.info(t);
    const int64_t value = static_cast<int64_t>(symbols[i]) - inf.offset;
    uint32_t raw = 0;
    int64_t v = value;
    if (escape_of(value, inf.max_value, &raw)) {
      enc_escape_payload(x, ptr, raw);
      v = inf.max_value;
    }
    enc_put(x, ptr, tables.enc(t)[v]);
  }
  // Flush: the final state as two words, low half first.
  *--ptr = to_le32(static_cast<uint32_t>(x >> 32));
  *--ptr = to_le32(static_cast<uint32_t>(x));
  return std::string(reinterpret_cast<const char*>(ptr),
                     static_cast<size_t>(end - ptr) * sizeof(uint32_t));
}

void compat_decode(const Tables& tables, const uint8_t* data, size_t size, const int32_t* indexes,
                   int64_t n, int32_t* out) {
  if (size % 4 != 0) throw StreamError("rANS stream length is not a multiple of 4 bytes");
  if (size < 8) throw StreamError("rANS stream shorter than its 8-byte initial state");
  WordReader rd{data, size / 4, 0};
  uint64_t x = rd.next();
  x |= static_cast<uint64_t>(rd.next()) << 32;
  // A valid state lies in [L, 2^63); anything else cannot come from an encoder.
  if (x < kRansL || (x >> 63) != 0) throw StreamError("rANS stream corrupted: bad initial state");
  for (int64_t i = 0; i < n; ++i) {
    const int32_t t = indexes[i];
    check_index(tables, t, i);
    const auto& inf = tables.info(t);
    const uint32_t slot = static_cast<uint32_t>(x) & (kTotal - 1);
    const uint32_t s = dec_find(tables.dec_info()[t], slot);
    const uint32_t* c = tables.cdf(t);
    const uint32_t start = c[s];
    const uint32_t freq = c[s + 1] - start;
    x = freq * (x >> kPrecision) + slot - start;
    if (x < kRansL) x = (x << 32) | rd.next();
    int64_t value = s;
    if (static_cast<int32_t>(s) == inf.max_value) value = dec_escape_payload(x, rd, inf.max_value);
    out[i] = checked_symbol(value, inf.offset);
  }
  // The encoder started from state L and consumed every word: anything else is corruption.
  if (rd.pos != rd.n_words) throw StreamError("rANS stream has trailing words after the last symbol");
  if (x != kRansL) throw StreamError("rANS stream corrupted: final state mismatch");
}

}  // namespace rans
}  // namespace cod_fast
