// Native self-test of the rANS core (run by tools/asan.sh under AddressSanitizer/UBSan):
// reciprocal encoding equals exact division, both formats round-trip random tables and symbols
// on several thread counts, and damaged streams raise StreamError. Exit status 0 = pass.
#include <cstdio>
#include <algorithm>
#include <cstdlib>
#include <random>
#include <string>
#include <vector>

#include "rans/rans_ops.hpp"

using namespace cod_fast::rans;

static int failures = 0;
#define CHECK(cond)                                                     \
  do {                                                                  \
    if (!(cond)) {                                                      \
      std::fprintf(stderr, "FAILED %s:%d: %s\n", __FILE__, __LINE__, #cond); \
      ++failures;                                                       \
    }                                                                   \
  } while (0)

// enc_put's multiply-high form against (x / freq) * M + x % freq + start.
static void test_reciprocal(std::mt19937_64& rng) {
  const uint32_t freqs[] = {1, 2, 3, 5, 7, 255, 256, 257, 4095, 4096, 12345, 32768, 65535, 65536};
  for (uint32_t freq : freqs) {
    const uint32_t start = freq == 65536 ? 0 : static_cast<uint32_t>(rng() % (65537 - freq));
    // A one-table set whose symbol 1 is (start, freq); symbols 0 and 2 may have frequency 0.
    std::vector<int32_t> row = {0, static_cast<int32_t>(start), static_cast<int32_t>(start + freq), 65536};
    const int32_t len = 4, off = 0;
    Tables t(row.data(), 1, 4, &len, &off);
    const EncSym& e = t.enc(0)[1];
    for (int k = 0; k < 2000; ++k) {
      const uint64_t x_max = static_cast<uint64_t>(freq) << 47;
      uint64_t x = kRansL + rng() % (x_max - kRansL);
      if (k == 0) x = kRansL;
      if (k == 1) x = x_max - 1;
      const uint64_t want = (x / freq) * kTotal + x % freq + start;
      const uint64_t q = mulhi64(x, e.rcp_freq) >> e.rcp_shift;
      CHECK(x + e.bias + q * e.cmpl_freq == want);
    }
  }
}

// A random table set: n_tables rows with random lengths and frequencies (some zero).
struct RandomTables {
  std::vector<int32_t> cdf, len, off;
  int32_t width = 0;
  int32_t n = 0;
};

static RandomTables random_tables(std::mt19937_64& rng) {
  RandomTables r;
  r.n = 1 + static_cast<int32_t>(rng() % 5);
  r.width = 2 + static_cast<int32_t>(rng() % 300);
  r.cdf.assign(static_cast<size_t>(r.n) * r.width, 0);
  for (int32_t t = 0; t < r.n; ++t) {
    const int32_t len = 2 + static_cast<int32_t>(rng() % (r.width - 1));
    std::vector<uint32_t> w(len - 1);
    for (auto& v : w) v = (rng() % 4 == 0) ? 0 : 1 + static_cast<uint32_t>(rng() % 1000);
    w.back() = std::max<uint32_t>(w.back(), 1);  // the escape stays codable
    uint64_t sum = 0;
    for (auto v : w) sum += v;
    // Scale to 65536 keeping non-zero entries >= 1.
    std::vector<uint32_t> f(len - 1);
    uint64_t acc = 0;
    for (size_t i = 0; i < w.size(); ++i) {
      f[i] = w[i] ? std::max<uint32_t>(1, static_cast<uint32_t>(w[i] * 60000 / sum)) : 0;
      acc += f[i];
    }
    if (acc > 65536) {  // can only happen with many floors of 1 and 65536 - 60000 spare units
      r.n = t;
      break;
    }
    f.back() += static_cast<uint32_t>(65536 - acc);
    int32_t* row = r.cdf.data() + static_cast<size_t>(t) * r.width;
    row[0] = 0;
    for (int32_t i = 0; i + 1 < len; ++i) row[i + 1] = row[i] + static_cast<int32_t>(f[i]);
    r.len.push_back(len);
    r.off.push_back(static_cast<int32_t>(rng() % 200) - 100);
  }
  if (r.n == 0) return random_tables(rng);
  return r;
}

static void test_round_trips(std::mt19937_64& rng) {
  for (int iter = 0; iter < 300; ++iter) {
    RandomTables rt = random_tables(rng);
    Tables t(rt.cdf.data(), rt.n, rt.width, rt.len.data(), rt.off.data());
    const int64_t n = static_cast<int64_t>(rng() % (iter < 250 ? 200 : 20000));
    std::vector<int32_t> sym(n), idx(n), out(n);
    for (int64_t i = 0; i < n; ++i) {
      const int32_t ti = static_cast<int32_t>(rng() % rt.n);
      idx[i] = ti;
      const int32_t* row = rt.cdf.data() + static_cast<size_t>(ti) * rt.width;
      if (rng() % 10 == 0) {  // out of range: escape
        sym[i] = rt.off[ti] + static_cast<int32_t>(rng() % 2000000) - 1000000;
        const int64_t v = static_cast<int64_t>(sym[i]) - rt.off[ti];
        if (v >= 0 && v < rt.len[ti] - 2 && row[v + 1] == row[v]) sym[i] = rt.off[ti] - 1;
      } else {  // a symbol of non-zero frequency
        int32_t v;
        do v = static_cast<int32_t>(rng() % (rt.len[ti] - 1)); while (row[v + 1] == row[v]);
        sym[i] = rt.off[ti] + v;
      }
    }
    const std::string c = compat_encode(t, sym.data(), idx.data(), n);
    compat_decode(t, reinterpret_cast<const uint8_t*>(c.data()), c.size(), idx.data(), n, out.data());
    CHECK(out == sym);
    const int64_t seg = 1 + static_cast<int64_t>(rng() % 5000);
    const std::string f1 = fast_encode(t, sym.data(), idx.data(), n, seg, 1);
    const std::string f3 = fast_encode(t, sym.data(), idx.data(), n, seg, 3);
    CHECK(f1 == f3);
    for (int threads : {1, 2, 4}) {
      std::fill(out.begin(), out.end(), 0);
      fast_decode(t, reinterpret_cast<const uint8_t*>(f1.data()), f1.size(), idx.data(), n, out.data(), threads);
      CHECK(out == sym);
    }
    // Every truncation of a short stream must raise StreamError.
    if (n > 0 && n < 50) {
      for (size_t cut = 0; cut < c.size(); ++cut) {
        bool raised = false;
        try {
          compat_decode(t, reinterpret_cast<const uint8_t*>(c.data()), cut, idx.data(), n, out.data());
        } catch (const StreamError&) {
          raised = true;
        }
        CHECK(raised);
      }
      for (size_t cut = 0; cut < f1.size(); ++cut) {
        bool raised = false;
        try {
          fast_decode(t, reinterpret_cast<const uint8_t*>(f1.data()), cut, idx.data(), n, out.data(), 2);
        } catch (const StreamError&) {
          raised = true;
        }
        CHECK(raised);
      }
    }
  }
}

static void test_bad_arguments() {
  const int32_t row[3] = {0, 65535, 65536};
  const int32_t len = 3, off = 0;
  Tables t(row, 1, 3, &len, &off);
  const int32_t sym[1] = {0}, bad_idx[1] = {1};
  bool raised = false;
  try {
    compat_encode(t, sym, bad_idx, 1);
  } catch (const ArgError&) {
    raised = true;
  }
  CHECK(raised);
  raised = false;
  const int32_t bad_row[3] = {0, 70000, 65536};
  try {
    Tables bad(bad_row, 1, 3, &len, &off);
  } catch (const ArgError&) {
    raised = true;
  }
  CHECK(raised);
}

int main() {
  std::mt19937_64 rng(12345);
  test_reciprocal(rng);
  test_round_trips(rng);
  test_bad_arguments();
  if (failures) {
    std::fprintf(stderr, "rans_selftest: %d check(s) failed\n", failures);
    return 1;
  }
  std::printf("rans_selftest: all checks passed\n");
  return 0;
}
