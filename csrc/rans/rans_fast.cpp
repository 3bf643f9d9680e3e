// cod_fast's own rANS stream: independent segments, each with kLanes interleaved rans64 states.
//
// Layout (all integers little-endian):
//   offset 0  magic "CFRS"
//          4  u8 version (1)            5  u8 lanes (4)         6  u16 reserved (0)
//          8  u64 total symbol count
//         16  u32 segment count S
//         20  S x { u32 symbol count, u32 byte length }
//   20 + 8S   segment payloads, back to back, in symbol order.
// Segment payload: lanes x 8 bytes of initial decoder states (lane 0 first; low word, high word),
// then the 32-bit words in the order the decoder consumes them. Local symbol j of a segment is
// coded by lane j % lanes. Escaped values (outside a table's range) use CompressAI's scheme on
// the symbol's lane: escape symbol, 4-bit nibble count, 4-bit nibbles.
// The segment symbol count is an encoder choice recorded in the header, so any number of threads
// decodes any stream, and the bytes do not depend on the thread count used to encode.
#include <algorithm>
#include <memory>
#include <string>

#include "common/parallel.hpp"
#include "rans/rans_ops.hpp"

namespace cod_fast {
namespace rans {

namespace {

constexpr uint8_t kMagic[4] = {'C', 'F', 'R', 'S'};
constexpr uint8_t kVersion = 1;
constexpr size_t kFixedHeader = 20;
constexpr size_t kSegmentEntry = 8;
constexpr size_t kStateBytes = 8 * kLanes;

inline uint64_t load_le64(const uint8_t* p) {
  return load_le32(p) | (static_cast<uint64_t>(load_le32(p + 4)) << 32);
}

// Cold paths of the argument checks.
__attribute__((noinline, noreturn)) void bad_index(uint32_t n_tables, int32_t t, int64_t i) {
  throw ArgError("rANS: indexes[" + std::to_string(i) + "] = " + std::to_string(t) +
                 " outside [0, " + std::to_string(n_tables) + ")");
}
__attribute__((noinline, noreturn)) void zero_freq(int32_t t, int64_t i) {
  throw ArgError("rANS: symbols[" + std::to_string(i) + "] has probability 0 in table " +
                 std::to_string(t));
}

// Words one segment of m symbols may emit at most: one per symbol, plus per escaped symbol one
// count nibble and up to kMaxRawNibbles payload nibbles; plus the flushed states.
inline size_t segment_capacity(int64_t m) {
  return static_cast<size_t>(m) * (2 + kMaxRawNibbles) + 2 * kLanes;
}

// Rare path: encode an escaped symbol (payload, then the escape symbol itself).
__attribute__((noinline)) void enc_escape(const TableView& tv, uint64_t& x, uint32_t*& ptr,
                                          int32_t t, int64_t value, int64_t i) {
  const auto& inf = tv.info[t];
  uint32_t raw = 0;
  escape_of(value, inf.max_value, &raw);  // throws ArgError when raw >= 2^31
  const EncSym& e = tv.enc[inf.base + inf.max_value];
  if (e.freq == 0) zero_freq(t, i);
  enc_escape_payload(x, ptr, raw);
  enc_put(x, ptr, e);
}

// One symbol on one lane (encoder side); i is its position, for error messages.
// The renormalisation is branch-free: the low word is always stored at ptr[-1] (the buffer keeps
// one word of slack below the stream for that) and ptr moves only when the word is kept.
inline void enc_one(const TableView& tv, uint64_t& x, uint32_t*& ptr, int32_t sym, int32_t t,
                    int64_t i) {
  if (static_cast<uint32_t>(t) >= tv.n_tables) bad_index(tv.n_tables, t, i);
  const auto& inf = tv.info[t];
  const int64_t value = static_cast<int64_t>(sym) - inf.offset;
  // Unsigned compare: 0 <= value < max_value (value fits in 64 bits, max_value >= 0).
  if (static_cast<uint64_t>(value) < static_cast<uint64_t>(inf.max_value)) {
    const EncSym& e = tv.enc[inf.base + value];
    if (e.freq == 0) zero_freq(t, i);
    const uint64_t x_max = static_cast<uint64_t>(e.freq) << (31 - kPrecision + 32);
    const bool emit = x >= x_max;
    ptr[-1] = to_le32(static_cast<uint32_t>(x));
    ptr -= emit;
    const uint64_t y = emit ? (x >> 32) : x;
    const uint64_t q = mulhi64(y, e.rcp_freq) >> e.rcp_shift;
    x = y + e.bias + q * e.cmpl_freq;
  } else {
    enc_escape(tv, x, ptr, t, value, i);
  }
}

// Encodes symbols [begin, begin + m) into buf (capacity cap >= segment_capacity(m) + 1 words),
// writing backwards from the end; returns the first word of the stream. Word buf[0] is slack.
uint32_t* encode_segment(const Tables& tables, const int32_t* symbols, const int32_t* indexes,
                         int64_t begin, int64_t m, uint32_t* buf, size_t cap) {
  const TableView tv = tables.view();
  uint32_t* ptr = buf + cap;
  uint64_t x[kLanes];
  for (int l = 0; l < kLanes; ++l) x[l] = kRansL;
  const int32_t* sy = symbols + begin;
  const int32_t* ix = indexes + begin;
  // Reverse of the decoding order: the partial last group first, then whole groups, each group's
  // lanes from last to first.
  const int64_t full = m - m % kLanes;
  for (int64_t j = m - 1; j >= full; --j) {
    enc_one(tv, x[j % kLanes], ptr, sy[j], ix[j], begin + j);
  }
  for (int64_t g = full - kLanes; g >= 0; g -= kLanes) {
    for (int l = kLanes - 1; l >= 0; --l) enc_one(tv, x[l], ptr, sy[g + l], ix[g + l], begin + g + l);
  }
  for (int l = kLanes - 1; l >= 0; --l) {
    *--ptr = to_le32(static_cast<uint32_t>(x[l] >> 32));
    *--ptr = to_le32(static_cast<uint32_t>(x[l]));
  }
  return ptr;
}

// Rare path: the escape payload of a decoded escape symbol. State and read position travel by
// value, so that the hot loop keeps them in registers (no address of theirs escapes). Inlined:
// as a call, every lane's state was live across it and the 4-lane loop kept them on the stack
// (a call leaves only 6 callee-saved registers), which cost more than the larger loop body.
struct Escaped {
  uint64_t x;
  size_t pos;
  int32_t symbol;
};
__attribute__((always_inline)) inline Escaped dec_escape(uint64_t x, const uint8_t* data,
                                                         size_t n_words, size_t pos,
                                                         const Tables::DecInfo& inf) {
  WordReader rd{data, n_words, pos};  // pos > n_words (an earlier over-read) throws on next()
  const int32_t symbol = checked_symbol(dec_escape_payload(x, rd, inf.max_value), inf.offset);
  return Escaped{x, rd.pos, symbol};
}

// One symbol on one lane (decoder side), table `inf` (its index was checked by check_indexes).
// Always inlined into the 4-lane loop so that the lanes' independent lookups overlap.
__attribute__((always_inline)) inline int32_t dec_one(const Tables::DecInfo& inf, uint64_t& x,
                                                      size_t& pos, const uint8_t* data,
                                                      size_t n_words) {
  const uint32_t slot = static_cast<uint32_t>(x) & (kTotal - 1);
  const uint32_t s = dec_find(inf, slot);
  const uint32_t* c = inf.cdf;
  const uint32_t start = c[s];
  const uint32_t freq = c[s + 1] - start;
  x = freq * (x >> kPrecision) + slot - start;
  // Branch-free refill (a refill follows ~1 symbol in 7, unpredictably: a branch mispredicted
  // often enough to cost more than the rest of the step). The read index is clamped to the last
  // word, so nothing outside the segment is touched; a stream that needs more words than it has
  // ends with pos > n_words, which decode_segment reports.
  const size_t at = pos < n_words ? pos : n_words - 1;
  const uint64_t word = load_le32(data + 4 * at);
  const uint64_t refill = x < kRansL;
  const uint64_t mask = uint64_t{0} - refill;
  x = (((x << 32) | word) & mask) | (x & ~mask);
  pos += refill;
  if (__builtin_expect(static_cast<int32_t>(s) == inf.max_value, 0)) {
    const Escaped e = dec_escape(x, data, n_words, pos, inf);
    x = e.x;
    pos = e.pos;
    return e.symbol;
  }
  return static_cast<int32_t>(s) + inf.offset;
}

// ArgError for the first of indexes[begin, begin + m) outside [0, n_tables). One pass before a
// segment's decode (branch-free maximum, vectorised), so that the decode loop needs neither
// the table count nor the position in registers.
void check_indexes(const int32_t* indexes, int64_t begin, int64_t m, uint32_t n_tables) {
  const int32_t* ix = indexes + begin;
  uint32_t largest = 0;
  for (int64_t j = 0; j < m; ++j) largest = std::max(largest, static_cast<uint32_t>(ix[j]));
  if (largest < n_tables) return;
  for (int64_t j = 0; j < m; ++j) {
    if (static_cast<uint32_t>(ix[j]) >= n_tables) bad_index(n_tables, ix[j], begin + j);
  }
}

void decode_segment(const Tables& tables, const uint8_t* data, size_t size, const int32_t* indexes,
                    int64_t begin, int64_t m, int32_t* out) {
  check_indexes(indexes, begin, m, static_cast<uint32_t>(tables.n_tables()));
  const Tables::DecInfo* dec = tables.dec_info();
  // size >= kStateBytes and size % 4 == 0 were checked by the header parser.
  const size_t n_words = size / 4;
  uint64_t x[kLanes];
  for (int l = 0; l < kLanes; ++l) {
    x[l] = load_le32(data + 8 * l) | (static_cast<uint64_t>(load_le32(data + 8 * l + 4)) << 32);
    if (x[l] < kRansL || (x[l] >> 63) != 0) {
      throw StreamError("rANS stream corrupted: bad initial state");
    }
  }
  size_t pos = 2 * kLanes;
  uint64_t x0 = x[0], x1 = x[1], x2 = x[2], x3 = x[3];
  static_assert(kLanes == 4, "the decode loop is written for 4 lanes");
  const int32_t* ix = indexes + begin;
  int32_t* o = out + begin;
  const int64_t full = m - m % kLanes;
  for (int64_t g = 0; g < full; g += kLanes) {
    // All loads of a group before its stores: an int32 store may alias the tables, and the
    // compiler would otherwise reload them between lanes.
    const int32_t t0 = ix[g], t1 = ix[g + 1], t2 = ix[g + 2], t3 = ix[g + 3];
    const int32_t s0 = dec_one(dec[t0], x0, pos, data, n_words);
    const int32_t s1 = dec_one(dec[t1], x1, pos, data, n_words);
    const int32_t s2 = dec_one(dec[t2], x2, pos, data, n_words);
    const int32_t s3 = dec_one(dec[t3], x3, pos, data, n_words);
    o[g] = s0;
    o[g + 1] = s1;
    o[g + 2] = s2;
    o[g + 3] = s3;
  }
  x[0] = x0, x[1] = x1, x[2] = x2, x[3] = x3;
  for (int64_t j = full; j < m; ++j) {
    o[j] = dec_one(dec[ix[j]], x[j % kLanes], pos, data, n_words);
  }
  if (pos > n_words) throw StreamError("rANS stream truncated: a segment needs more words");
  if (pos < n_words) throw StreamError("rANS segment has trailing words");
  for (int l = 0; l < kLanes; ++l) {
    if (x[l] != kRansL) throw StreamError("rANS stream corrupted: final state mismatch");
  }
}

}  // namespace

std::string fast_encode(const Tables& tables, const int32_t* symbols, const int32_t* indexes,
                        int64_t n, int64_t segment_symbols, int threads) {
  if (n < 0) throw ArgError("rANS: negative symbol count");
  if (segment_symbols < 1 || segment_symbols > kMaxSegmentSymbols) {
    throw ArgError("rANS: segment_symbols must be in [1, 2^30]");
  }
  const int64_t n_seg = (n + segment_symbols - 1) / segment_symbols;
  if (n_seg > INT32_MAX) throw ArgError("rANS: too many segments");
  std::vector<std::string> payload(n_seg);
  cod_fast::parallel_for(n_seg, threads, [&](int64_t k) {
    const int64_t begin = k * segment_symbols;
    const int64_t m = std::min(segment_symbols, n - begin);
    const size_t cap = segment_capacity(m) + 1;
    // Not zero-initialised: only the words the encoder writes are read back.
    std::unique_ptr<uint32_t[]> buf(new uint32_t[cap]);
    const uint32_t* first = encode_segment(tables, symbols, indexes, begin, m, buf.get(), cap);
    payload[k].assign(reinterpret_cast<const char*>(first),
                      static_cast<size_t>(buf.get() + cap - first) * sizeof(uint32_t));
  });
  size_t total = kFixedHeader + kSegmentEntry * static_cast<size_t>(n_seg);
  for (const auto& p : payload) total += p.size();
  std::string out(total, '\0');
  uint8_t* h = reinterpret_cast<uint8_t*>(&out[0]);
  std::memcpy(h, kMagic, 4);
  h[4] = kVersion;
  h[5] = static_cast<uint8_t>(kLanes);
  h[6] = h[7] = 0;
  store_le32(h + 8, static_cast<uint32_t>(static_cast<uint64_t>(n)));
  store_le32(h + 12, static_cast<uint32_t>(static_cast<uint64_t>(n) >> 32));
  store_le32(h + 16, static_cast<uint32_t>(n_seg));
  size_t pos = kFixedHeader + kSegmentEntry * static_cast<size_t>(n_seg);
  for (int64_t k = 0; k < n_seg; ++k) {
    const int64_t m = std::min(segment_symbols, n - k * segment_symbols);
    if (payload[k].size() > UINT32_MAX) throw ArgError("rANS: segment larger than 4 GiB");
    store_le32(h + kFixedHeader + kSegmentEntry * k, static_cast<uint32_t>(m));
    store_le32(h + kFixedHeader + kSegmentEntry * k + 4, static_cast<uint32_t>(payload[k].size()));
    std::memcpy(h + pos, payload[k].data(), payload[k].size());
    pos += payload[k].size();
  }
  return out;
}

FastInfo fast_inspect(const uint8_t* data, size_t size) {
  if (size < kFixedHeader) throw StreamError("rANS fast stream shorter than its 20-byte header");
  if (std::memcmp(data, kMagic, 4) != 0) throw StreamError("not a cod_fast rANS stream (bad magic)");
  FastInfo info;
  info.version = data[4];
  info.lanes = data[5];
  if (info.version != kVersion) {
    throw StreamError("unsupported cod_fast rANS stream version " + std::to_string(info.version));
  }
  if (info.lanes != kLanes || data[6] != 0 || data[7] != 0) {
    throw StreamError("unsupported cod_fast rANS stream layout (lanes/reserved bytes)");
  }
  const uint64_t n = load_le64(data + 8);
  const uint64_t n_seg = load_le32(data + 16);
  // Every length is checked against the bytes present before anything is allocated from it.
  if (n > static_cast<uint64_t>(INT64_MAX) / 2) throw StreamError("rANS header: symbol count too large");
  if (n_seg > (size - kFixedHeader) / kSegmentEntry) {
    throw StreamError("rANS header: segment table larger than the stream");
  }
  if ((n == 0) != (n_seg == 0) || n_seg > n) throw StreamError("rANS header: bad segment count");
  info.n_symbols = static_cast<int64_t>(n);
  info.header_bytes = kFixedHeader + kSegmentEntry * n_seg;
  info.segment_symbols.resize(n_seg);
  info.segment_bytes.resize(n_seg);
  uint64_t sum_sym = 0;
  size_t remaining = size - info.header_bytes;
  for (uint64_t k = 0; k < n_seg; ++k) {
    const uint32_t m = load_le32(data + kFixedHeader + kSegmentEntry * k);
    const uint32_t b = load_le32(data + kFixedHeader + kSegmentEntry * k + 4);
    if (m == 0) throw StreamError("rANS header: empty segment");
    if (b < kStateBytes || b % 4 != 0) throw StreamError("rANS header: bad segment byte length");
    if (b > remaining) throw StreamError("rANS stream truncated: segment extends past the end");
    remaining -= b;
    sum_sym += m;
    info.segment_symbols[k] = m;
    info.segment_bytes[k] = b;
  }
  if (sum_sym != n) throw StreamError("rANS header: segment symbol counts do not add up");
  if (remaining != 0) throw StreamError("rANS stream has trailing bytes after the last segment");
  return info;
}

void fast_decode(const Tables& tables, const uint8_t* data, size_t size, const int32_t* indexes,
                 int64_t n, int32_t* out, int threads) {
  const FastInfo info = fast_inspect(data, size);
  if (info.n_symbols != n) {
    throw StreamError("rANS stream holds " + std::to_string(info.n_symbols) +
                      " symbols but " + std::to_string(n) + " indexes were given");
  }
  const int64_t n_seg = static_cast<int64_t>(info.segment_symbols.size());
  std::vector<int64_t> sym_begin(n_seg), byte_begin(n_seg);
  int64_t s = 0;
  size_t b = info.header_bytes;
  for (int64_t k = 0; k < n_seg; ++k) {
    sym_begin[k] = s;
    byte_begin[k] = static_cast<int64_t>(b);
    s += info.segment_symbols[k];
    b += static_cast<size_t>(info.segment_bytes[k]);
  }
  cod_fast::parallel_for(n_seg, threads, [&](int64_t k) {
    decode_segment(tables, data + byte_begin[k], static_cast<size_t>(info.segment_bytes[k]),
                   indexes, sym_begin[k], info.segment_symbols[k], out);
  });
}

}  // namespace rans
}  // namespace cod_fast
