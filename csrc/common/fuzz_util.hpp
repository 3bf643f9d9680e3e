// Helpers shared by the standalone fuzz drivers (csrc/*/fuzz): a bounded random pick and the
// common "run for SECONDS from SEED" main loop. Test code only; never linked into _C.
#pragma once

#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <random>

namespace cod_fast::fuzz {

// Uniform in [lo, hi] (lo when hi < lo); hi - lo + 1 computed in uint64 (no signed overflow).
inline int64_t pick(std::mt19937_64& rng, int64_t lo, int64_t hi) {
  if (hi <= lo) return lo;
  const uint64_t span = static_cast<uint64_t>(hi) - static_cast<uint64_t>(lo) + 1;
  return static_cast<int64_t>(static_cast<uint64_t>(lo) + (span == 0 ? rng() : rng() % span));
}

// Runs one_case(rng) until argv[1] seconds (default 10) have passed, with the generator seeded
// from argv[2] (default 1). Returns the number of cases run, or -1 as soon as one fails.
template <class OneCase>
long run_for(int argc, char** argv, const OneCase& one_case) {
  const double seconds = argc > 1 ? std::atof(argv[1]) : 10.0;
  std::mt19937_64 rng(argc > 2 ? std::strtoull(argv[2], nullptr, 10) : 1);
  const auto end = std::chrono::steady_clock::now() + std::chrono::duration<double>(seconds);
  long runs = 0;
  while (std::chrono::steady_clock::now() < end) {
    if (!one_case(rng)) return -1;
    ++runs;
  }
  return runs;
}

}  // namespace cod_fast::fuzz
