// Validation of integer CDF tables and construction of the encoder / decoder lookup structures.
#include <string>

#include "rans/rans_core.hpp"

namespace cod_fast {
namespace rans {

namespace {

// Reciprocal form of (start, freq) so that the encoder computes x / freq with one multiply-high:
//   q = mulhi(x, rcp_freq) >> rcp_shift,  x_new = x + bias + q * cmpl_freq
// equals (x / freq) * M + x % freq + start for every 63-bit x (Alverson's method: rcp_freq is
// ceil(2^(63 + shift) / freq) with shift = ceil(log2 freq); freq == 1 needs the special case
// below because its reciprocal does not fit in 64 bits).
EncSym make_enc_sym(uint32_t start, uint32_t freq) {
  EncSym e{};
  e.freq = freq;
  e.cmpl_freq = kTotal - freq;
  if (freq == 0) {
    e.rcp_shift = kZeroFreq;
    e.bias = start;
    e.rcp_freq = 0;
  } else if (freq == 1) {
    // q = mulhi(x, 2^64 - 1) = x - 1 for x >= 1; then x + bias + (x - 1)(M - 1) = x*M + start
    // requires bias = start + M - 1.
    e.rcp_freq = ~0ull;
    e.rcp_shift = 0;
    e.bias = start + kTotal - 1;
  } else {
    uint32_t shift = 0;
    while (freq > (1u << shift)) ++shift;
    const unsigned __int128 num = (static_cast<unsigned __int128>(1) << (shift + 63)) + (freq - 1);
    e.rcp_freq = static_cast<uint64_t>(num / freq);
    e.rcp_shift = shift - 1;
    e.bias = start;
  }
  return e;
}

}  // namespace

Tables::Tables(const int32_t* cdfs, int64_t n_tables, int64_t stride, const int32_t* lengths,
               const int32_t* offsets) {
  if (n_tables < 1) throw ArgError("rANS tables: need at least one CDF table");
  if (n_tables > (int64_t(1) << 20)) throw ArgError("rANS tables: more than 2^20 CDF tables");
  if (stride < 2) throw ArgError("rANS tables: CDF rows need at least 2 entries");
  info_.resize(n_tables);
  size_t total = 0;
  size_t total_buckets = 0;
  for (int64_t t = 0; t < n_tables; ++t) {
    const int32_t len = lengths[t];
    if (len < 2 || len > stride || len > kMaxCdfLength) {
      throw ArgError("rANS tables: cdf_length[" + std::to_string(t) + "] = " +
                     std::to_string(len) + " outside [2, min(row width, 65537)]");
    }
    int bits = kMinBucketBits;
    while (bits < kMaxBucketBits && (1 << bits) < 2 * (len - 1)) ++bits;
    info_[t] = Info{static_cast<uint32_t>(total), offsets[t], len - 2,
                    static_cast<uint32_t>(total_buckets), static_cast<uint32_t>(kPrecision - bits)};
    total += static_cast<size_t>(len);
    total_buckets += size_t(1) << bits;
  }
  // n_tables <= 2^20 and len <= 65537 bound both sums; bucket_base has 26 bits.
  if (total > (size_t(1) << 31) || total_buckets >= (size_t(1) << 26)) {
    throw ArgError("rANS tables: too many CDF entries in total");
  }
  cum_.resize(total);
  enc_.resize(total);
  bucket_.resize(total_buckets);
  dec_.resize(n_tables);

  for (int64_t t = 0; t < n_tables; ++t) {
    const int32_t* row = cdfs + t * stride;
    const int32_t len = lengths[t];
    uint32_t* c = cum_.data() + info_[t].base;
    if (row[0] != 0 || row[len - 1] != static_cast<int32_t>(kTotal)) {
      throw ArgError("rANS tables: CDF " + std::to_string(t) +
                     " must start at 0 and end at 65536 (precision 16)");
    }
    for (int32_t j = 0; j < len; ++j) {
      if (j > 0 && row[j] < row[j - 1]) {
        throw ArgError("rANS tables: CDF " + std::to_string(t) + " decreases at entry " +
                       std::to_string(j));
      }
      c[j] = static_cast<uint32_t>(row[j]);
    }
    EncSym* e = enc_.data() + info_[t].base;
    for (int32_t j = 0; j + 1 < len; ++j) e[j] = make_enc_sym(c[j], c[j + 1] - c[j]);
    e[len - 1] = make_enc_sym(0, 0);  // sentinel entry past the escape symbol: never encoded

    // Bucket b covers slots [b << shift, (b + 1) << shift); store the symbol holding its first
    // slot. Symbols with frequency 0 own no slot and are skipped automatically.
    uint16_t* bk = bucket_.data() + info_[t].bucket_base;
    const int shift = static_cast<int>(info_[t].bucket_shift);
    dec_[t] = DecInfo{c, bk, info_[t].offset, info_[t].max_value, info_[t].bucket_shift, 0};
    uint32_t s = 0;
    for (uint32_t b = 0; b < (1u << (kPrecision - shift)); ++b) {
      const uint32_t pos = b << shift;
      while (c[s + 1] <= pos) ++s;  // terminates: c[len-1] = 65536 > pos
      bk[b] = static_cast<uint16_t>(s);
    }
  }
}

}  // namespace rans
}  // namespace cod_fast
