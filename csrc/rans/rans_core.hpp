// rANS entropy coding shared by cod_fast's two stream formats.
//
//  * "compat": byte-exact CompressAI `RansEncoder.encode_with_indexes` streams (ryg rans64, one
//    state, 32-bit words, precision 16, escape symbol + 4-bit bypass nibbles). CompressAI writes
//    host-endian words; we always write little-endian, which is the same bytes on x86/ARM hosts.
//  * "fast": cod_fast's own format: the symbols are cut into independent segments (decodable on
//    any number of threads); inside a segment kLanes rans64 states are interleaved in one word
//    stream so that consecutive symbols do not wait on each other. Layout in rans_fast.cpp.
//
// Everything here is plain C++17 with no Python dependency, so the native tests and the fuzz
// driver link it without pybind11.
#pragma once

#include <cstddef>
#include <cstdint>
#include <stdexcept>
#include <string>
#include <vector>

namespace cod_fast {
namespace rans {

constexpr int kPrecision = 16;                    // CDFs sum to 1 << kPrecision
constexpr uint32_t kTotal = 1u << kPrecision;     // 65536
constexpr uint64_t kRansL = 1ull << 31;           // rans64 lower bound; states live in [L, 2^63)
constexpr int kBypassBits = 4;                    // escape payload travels in 4-bit nibbles
constexpr uint32_t kMaxBypassVal = (1u << kBypassBits) - 1;  // 15 = "count continues"
// Escaped values carry raw = zigzag(value) < 2^31 (CompressAI's decoder builds raw in int32, so
// larger values cannot round-trip there either); 31 bits need at most 8 nibbles.
constexpr uint32_t kMaxRaw = 0x7fffffffu;
constexpr int kMaxRawNibbles = 8;
// Longest CDF accepted (symbols incl. the escape entry + 1): symbol indices must fit in uint16.
constexpr int32_t kMaxCdfLength = 65537;
// Bucketed symbol search: the 16-bit slot's top bits pick a bucket that stores the first symbol
// it overlaps; a short forward scan over the CDF finishes the search. Each table gets 2^b buckets
// with 2^b >= 2 * (symbols in the table), clamped to [2^kMinBucketBits, 2^kMaxBucketBits]: the
// expected scan is then <= 1/4 step, and small tables stay small (the default Gaussian tables
// need ~110 KB of buckets instead of 512 KB for a fixed 4096 per table).
// Measured on the 64 default Gaussian tables (1 thread, CPU time, noisy shared VM): a full 64K
// slot->symbol table per table (8 MiB, misses L2) decoded 17 Msym/s, fixed 2^10 / 2^12 buckets
// 83-109 / 97-112, these adaptive buckets 100-126.
constexpr int kMinBucketBits = 6;
constexpr int kMaxBucketBits = 14;

// A malformed, truncated or hostile stream (mapped to cod_fast.errors.BitstreamError).
struct StreamError : std::runtime_error {
  using std::runtime_error::runtime_error;
};
// Bad caller arguments (mapped to ValueError).
struct ArgError : std::invalid_argument {
  using std::invalid_argument::invalid_argument;
};

// Encoder-side description of one symbol (ryg's reciprocal form: x / freq by a multiply-high).
// rcp_shift == kZeroFreq marks a symbol with frequency 0, which cannot be encoded.
struct EncSym {
  uint64_t rcp_freq;   // fixed-point reciprocal of freq
  uint32_t bias;       // start (+ M - 1 when freq == 1)
  uint32_t freq;       // frequency, 1..65536 (0 for impossible symbols)
  uint32_t cmpl_freq;  // M - freq
  uint32_t rcp_shift;  // reciprocal shift, or kZeroFreq
};
constexpr uint32_t kZeroFreq = 0xffffffffu;

struct TableView;

// Validated integer CDF tables plus the derived encoder/decoder lookup structures.
// Invariants established by build(): for every table t, cdf[0] == 0, cdf[len-1] == 65536,
// cdf is non-decreasing, 2 <= len <= kMaxCdfLength; max_value[t] = len - 2 is the escape symbol.
class Tables {
 public:
  // cdfs: n_tables rows of `stride` int32 entries; lengths[t] entries of row t are used.
  Tables(const int32_t* cdfs, int64_t n_tables, int64_t stride, const int32_t* lengths,
         const int32_t* offsets);

  // Per-table facts packed together so that one cache line serves a symbol's lookups.
  struct Info {
    uint32_t base;      // first entry of the table in cum_ / enc_
    int32_t offset;     // value = symbol - offset
    int32_t max_value;  // index of the escape symbol = cdf_length - 2
    uint32_t bucket_base : 26;  // first bucket of the table in bucket_
    uint32_t bucket_shift : 6;  // slot >> bucket_shift = bucket within the table
  };

  // The decoder's per-table facts: everything one symbol's search needs behind one pointer, so
  // the decode loop keeps a single table base in a register (with separate CDF and bucket
  // bases the 4-lane loop ran out of registers and spilled its rANS states to the stack).
  // Invariant: the pointers point into this object's cum_ and bucket_, which are never resized
  // after construction; copying is deleted so that no copy keeps pointers into another object.
  struct DecInfo {
    const uint32_t* cdf;      // the table's CDF (cum_ + base)
    const uint16_t* bucket;   // the table's buckets (bucket_ + bucket_base)
    int32_t offset;           // value = symbol - offset
    int32_t max_value;        // index of the escape symbol
    uint32_t bucket_shift;    // slot >> bucket_shift = bucket
    uint32_t unused;
  };

  Tables(const Tables&) = delete;
  Tables& operator=(const Tables&) = delete;

  int32_t n_tables() const { return static_cast<int32_t>(info_.size()); }
  const DecInfo* dec_info() const { return dec_.data(); }
  const Info& info(int32_t t) const { return info_[t]; }
  int32_t offset(int32_t t) const { return info_[t].offset; }
  int32_t max_value(int32_t t) const { return info_[t].max_value; }
  // cdf entries of table t (length max_value + 2), as uint32.
  const uint32_t* cdf(int32_t t) const { return cum_.data() + info_[t].base; }
  const EncSym* enc(int32_t t) const { return enc_.data() + info_[t].base; }

  // Raw pointers for the encoder's hot loop (locals the compiler keeps in registers).
  TableView view() const;

 private:
  std::vector<Info> info_;
  std::vector<uint32_t> cum_;        // concatenated CDFs
  std::vector<EncSym> enc_;          // one per CDF entry (the last entry of a table is unused)
  std::vector<uint16_t> bucket_;     // first symbol of every bucket, tables back to back
  std::vector<DecInfo> dec_;         // per table, pointing into cum_ and bucket_
};

// Symbol s of table `d` with cdf[s] <= slot < cdf[s+1] (slot < 65536).
inline uint32_t dec_find(const Tables::DecInfo& d, uint32_t slot) {
  const uint32_t* c = d.cdf;
  uint32_t s = d.bucket[slot >> d.bucket_shift];
  // First step branch-free (a bucket usually holds at most one symbol boundary, so this step
  // alone finishes the search, and a mispredicted branch here cost more than the whole lookup);
  // the loop then almost never runs. Invariant: cdf[s] <= slot (the bucket's symbol owns the
  // bucket's first slot) and cdf[len-1] = 65536 > slot, so the scan stops at s <= len - 2.
  s += c[s + 1] <= slot;
  while (__builtin_expect(c[s + 1] <= slot, 0)) ++s;
  return s;
}

// Raw-pointer view of a Tables object for the encoder; valid while the Tables object lives.
struct TableView {
  const Tables::Info* info;
  const EncSym* enc;
  uint32_t n_tables;
};

inline TableView Tables::view() const {
  return TableView{info_.data(), enc_.data(), static_cast<uint32_t>(info_.size())};
}

// ---- compat (CompressAI) format ----
// Returns the stream bytes. symbols/indexes have n entries. Throws ArgError on bad arguments.
std::string compat_encode(const Tables& tables, const int32_t* symbols, const int32_t* indexes,
                          int64_t n);
// Decodes n symbols into out. Throws StreamError on a bad stream, ArgError on bad indexes.
void compat_decode(const Tables& tables, const uint8_t* data, size_t size, const int32_t* indexes,
                   int64_t n, int32_t* out);

// ---- fast (cod_fast) format ----
// 4 interleaved rans64 states per segment: 8 measured no faster to decode and slower to encode.
// 2^16-symbol segments cost ~0.1% of rate (32 bytes of states + 8 of header each) and give
// enough independent pieces for a few threads on a 1M-symbol tensor.
constexpr int kLanes = 4;
constexpr int64_t kDefaultSegmentSymbols = 1 << 16;
constexpr int64_t kMaxSegmentSymbols = int64_t(1) << 30;

// Encodes with `threads` worker threads (>= 1); the bytes do not depend on the thread count.
std::string fast_encode(const Tables& tables, const int32_t* symbols, const int32_t* indexes,
                        int64_t n, int64_t segment_symbols, int threads);
void fast_decode(const Tables& tables, const uint8_t* data, size_t size, const int32_t* indexes,
                 int64_t n, int32_t* out, int threads);

// Header facts of a fast stream (validated): used by Python for introspection and by tests.
struct FastInfo {
  int version;
  int lanes;
  int64_t n_symbols;
  std::vector<int64_t> segment_symbols;
  std::vector<int64_t> segment_bytes;
  size_t header_bytes;
};
FastInfo fast_inspect(const uint8_t* data, size_t size);

}  // namespace rans
}  // namespace cod_fast
