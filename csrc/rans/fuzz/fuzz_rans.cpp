// Fuzz target of the rANS decoders (and encoder round trips).
//
// Built two ways (csrc/rans/CMakeLists.txt, COD_FAST_TESTS=ON):
//  * libFuzzer (clang, -DCOD_FAST_LIBFUZZER=ON): run ./rans_fuzz [corpus] -max_total_time=60
//  * standalone (any compiler, COD_FAST_FUZZ_STANDALONE): ./rans_fuzz SECONDS [SEED] mutates
//    valid streams (bit flips, byte writes, truncation, splices, random bytes) and feeds them to
//    the same entry point; it prints how many inputs ran clean.
// Any input may only decode or throw StreamError / ArgError: a crash, sanitizer report, hang or a
// failed round trip is a bug.
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "rans/rans_core.hpp"

using namespace cod_fast::rans;

namespace {

// Three fixed tables: a peaked one, a flat one with a zero-frequency symbol, and an
// escape-only table (cdf_length 2).
const Tables& fuzz_tables() {
  static const int32_t cdfs[3][6] = {
      {0, 2, 60000, 65000, 65535, 65536},
      {0, 16384, 16384, 40000, 65530, 65536},
      {0, 65536, 0, 0, 0, 0},
  };
  static const int32_t lengths[3] = {6, 6, 2};
  static const int32_t offsets[3] = {-2, 7, 0};
  static const Tables t(&cdfs[0][0], 3, 6, lengths, offsets);
  return t;
}

// Input layout: byte 0 = mode, byte 1 = symbol count, then `count` index bytes (mod 3), then the
// stream (decode modes) or symbols (round-trip mode).
int run_one(const uint8_t* data, size_t size) {
  if (size < 2) return 0;
  const Tables& t = fuzz_tables();
  const int mode = data[0] % 3;
  const size_t n = data[1];
  if (size < 2 + n) return 0;
  std::vector<int32_t> idx(n), out(n);
  for (size_t i = 0; i < n; ++i) idx[i] = data[2 + i] % 3;
  const uint8_t* rest = data + 2 + n;
  const size_t rest_size = size - 2 - n;
  try {
    if (mode == 0) {
      compat_decode(t, rest, rest_size, idx.data(), static_cast<int64_t>(n), out.data());
    } else if (mode == 1) {
      fast_decode(t, rest, rest_size, idx.data(), static_cast<int64_t>(n), out.data(), 2);
    } else {
      // Round trip: symbols from the remaining bytes (wrapping), both formats must invert.
      std::vector<int32_t> sym(n);
      for (size_t i = 0; i < n; ++i) {
        const uint8_t b = rest_size ? rest[i % rest_size] : 0;
        sym[i] = static_cast<int32_t>(static_cast<int8_t>(b)) * (b & 1 ? 1 : 4096);
      }
      const std::string c = compat_encode(t, sym.data(), idx.data(), static_cast<int64_t>(n));
      compat_decode(t, reinterpret_cast<const uint8_t*>(c.data()), c.size(), idx.data(),
                    static_cast<int64_t>(n), out.data());
      if (out != sym) std::abort();
      const std::string f = fast_encode(t, sym.data(), idx.data(), static_cast<int64_t>(n), 7, 2);
      fast_decode(t, reinterpret_cast<const uint8_t*>(f.data()), f.size(), idx.data(),
                  static_cast<int64_t>(n), out.data(), 3);
      if (out != sym) std::abort();
    }
  } catch (const StreamError&) {
  } catch (const ArgError&) {  // e.g. a symbol of probability 0 in round-trip mode
  }
  return 0;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  return run_one(data, size);
}

#ifdef COD_FAST_FUZZ_STANDALONE
// A valid input of a decode mode: header bytes + a stream encoded from random symbols.
static std::vector<uint8_t> seed_input(std::mt19937_64& rng) {
  const int mode = static_cast<int>(rng() % 3);
  const size_t n = rng() % 256;
  std::vector<int32_t> idx(n), sym(n);
  for (size_t i = 0; i < n; ++i) {
    idx[i] = static_cast<int32_t>(rng() % 3);
    const uint64_t r = rng();
    if (idx[i] == 0) sym[i] = (r % 10 == 0) ? static_cast<int32_t>(r >> 40) - (1 << 22) : static_cast<int32_t>(r % 4) - 2;
    else if (idx[i] == 1) sym[i] = 7 + static_cast<int32_t>(r % 4 == 1 ? 0 : r % 4);
    else sym[i] = static_cast<int32_t>(r >> 44);
  }
  std::vector<uint8_t> in{static_cast<uint8_t>(mode), static_cast<uint8_t>(n)};
  for (size_t i = 0; i < n; ++i) in.push_back(static_cast<uint8_t>(idx[i]));
  if (mode == 2) {
    for (size_t i = 0; i < n; ++i) in.push_back(static_cast<uint8_t>(rng()));
    return in;
  }
  const std::string s = mode == 0 ? compat_encode(fuzz_tables(), sym.data(), idx.data(), n)
                                  : fast_encode(fuzz_tables(), sym.data(), idx.data(), n,
                                                1 + static_cast<int64_t>(rng() % 64), 1);
  in.insert(in.end(), s.begin(), s.end());
  return in;
}

static void mutate(std::vector<uint8_t>& in, std::mt19937_64& rng) {
  const int edits = 1 + static_cast<int>(rng() % 4);
  for (int e = 0; e < edits && !in.empty(); ++e) {
    switch (rng() % 6) {
      case 0: in[rng() % in.size()] ^= static_cast<uint8_t>(1u << (rng() % 8)); break;
      case 1: in[rng() % in.size()] = static_cast<uint8_t>(rng()); break;
      case 2: in.resize(rng() % (in.size() + 1)); break;
      case 3: in.insert(in.begin() + static_cast<long>(rng() % (in.size() + 1)), static_cast<uint8_t>(rng())); break;
      case 4: {  // overwrite a 32-bit little-endian field with an extreme value
        if (in.size() >= 4) {
          const uint32_t v[] = {0u, 1u, 0x7fffffffu, 0x80000000u, 0xffffffffu, 4u, 8u};
          const uint32_t x = v[rng() % 7];
          std::memcpy(&in[rng() % (in.size() - 3)], &x, 4);
        }
        break;
      }
      default: in[0] = static_cast<uint8_t>(rng()); break;  // change the mode
    }
  }
}

int main(int argc, char** argv) {
  const double seconds = argc > 1 ? std::atof(argv[1]) : 10.0;
  const uint64_t seed = argc > 2 ? std::strtoull(argv[2], nullptr, 10) : 1;
  std::mt19937_64 rng(seed);
  const auto t0 = std::chrono::steady_clock::now();
  uint64_t count = 0;
  while (std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count() < seconds) {
    for (int k = 0; k < 64; ++k, ++count) {
      std::vector<uint8_t> in = seed_input(rng);
      if (rng() % 8 != 0) mutate(in, rng);  // 1 in 8 stays valid (round trips must decode)
      if (rng() % 64 == 0) {                // pure noise
        in.resize(rng() % 300);
        for (auto& b : in) b = static_cast<uint8_t>(rng());
      }
      run_one(in.data(), in.size());
    }
  }
  std::printf("rans_fuzz: %llu inputs ran clean in %.0f s (seed %llu)\n",
              static_cast<unsigned long long>(count), seconds, static_cast<unsigned long long>(seed));
  return 0;
}
#endif
