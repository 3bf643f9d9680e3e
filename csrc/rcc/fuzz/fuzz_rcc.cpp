// Standalone fuzz driver of the CPU reverse-channel coder (csrc/rcc) with hostile arguments: chunk
// layouts with wrong sums, zero or negative sizes, bits outside [0, 16], huge dims; indices out of
// range; random seeds, steps, thread counts (including more threads than chunks) and kernels.
// Valid calls must round-trip (decode(encode) gives the encoder's sample bit for bit, the generic
// and AVX2 kernels pick the same winners); invalid ones may only throw std::invalid_argument /
// std::out_of_range. Usage: ./rcc_fuzz SECONDS [SEED]
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <stdexcept>
#include <vector>

#include "common/fuzz_util.hpp"

#include "rcc/rcc_cpu.h"

namespace {

using cod_fast::fuzz::pick;

bool run_one(std::mt19937_64& rng) {
  using namespace rcc::cpu;
  const int64_t dim = rng() % 16 == 0 ? pick(rng, -3, 0) : pick(rng, 1, 400);
  const int64_t n_chunks = rng() % 16 == 0 ? pick(rng, -1, 0) : pick(rng, 1, 12);
  std::vector<int32_t> bits(static_cast<size_t>(std::max<int64_t>(n_chunks, 0)));
  std::vector<int64_t> dims(bits.size());
  const bool hostile = rng() % 4 == 0;
  int64_t left = dim;
  for (size_t c = 0; c < bits.size(); ++c) {
    bits[c] = hostile && rng() % 3 == 0 ? static_cast<int32_t>(pick(rng, -5, 40)) : static_cast<int32_t>(pick(rng, 0, 7));
    const int64_t rest = static_cast<int64_t>(bits.size() - c - 1);
    dims[c] = c + 1 == bits.size() ? left : std::max<int64_t>(1, std::min<int64_t>(left - rest, pick(rng, 1, 40)));
    if (hostile && rng() % 3 == 0) dims[c] = pick(rng, -2, 2 * dim + 1);
    left -= dims[c];
  }
  const uint64_t seed = rng();
  const uint32_t step = static_cast<uint32_t>(rng());
  const int threads = static_cast<int>(pick(rng, 0, 20));
  ChunkLayout layout;
  try {
    layout = make_layout(dim, bits.data(), dims.data(), n_chunks);
  } catch (const std::invalid_argument&) {
    return true;  // rejected before any work: fine
  }
  std::vector<float> mu(static_cast<size_t>(dim));
  for (auto& v : mu) v = static_cast<float>(static_cast<int64_t>(rng() % 2001) - 1000) / 100.0f;
  if (rng() % 8 == 0) mu[rng() % mu.size()] = 1e30f;
  std::vector<int64_t> idx(layout.dims.size()), idx2(layout.dims.size());
  std::vector<float> sample(static_cast<size_t>(dim)), sample2(static_cast<size_t>(dim));
  encode(mu.data(), layout, seed, step, threads, Impl::kGeneric, idx.data(), sample.data());
  if (avx2_supported()) {
    encode(mu.data(), layout, seed, step, threads, Impl::kAvx2, idx2.data(), sample2.data());
    if (idx2 != idx) {
      std::fprintf(stderr, "generic and AVX2 kernels picked different winners\n");
      return false;
    }
  }
  decode(idx.data(), layout, seed, step, threads, sample2.data());
  if (std::memcmp(sample.data(), sample2.data(), sample.size() * sizeof(float)) != 0) {
    std::fprintf(stderr, "decode(encode) differs from the encoder's sample\n");
    return false;
  }
  // Hostile indices: out of range must throw, never read out of bounds.
  const size_t c = rng() % idx.size();
  idx[c] = rng() % 2 ? -1 - static_cast<int64_t>(rng() % 5) : (int64_t{1} << layout.bits[c]) + static_cast<int64_t>(rng() % 5);
  try {
    decode(idx.data(), layout, seed, step, threads, sample2.data());
    std::fprintf(stderr, "an out-of-range index was accepted\n");
    return false;
  } catch (const std::out_of_range&) {
  }
  // Log-weights of a random candidate range of a random chunk.
  const uint32_t kb = static_cast<uint32_t>(rng() % 70000), ke = kb + static_cast<uint32_t>(rng() % 64);
  if (ke <= (1u << kMaxChunkBits)) {
    std::vector<float> out(ke - kb);
    log_weights(mu.data(), std::min<int64_t>(dim, 50), seed, step, 0, kb, ke, Impl::kAuto, out.data());
  }
  return true;
}

}  // namespace

int main(int argc, char** argv) {
  const long runs = cod_fast::fuzz::run_for(argc, argv, [](std::mt19937_64& rng) { return run_one(rng); });
  if (runs < 0) return 1;
  std::printf("rcc_fuzz: %ld hostile-argument calls ran clean\n", runs);
  return 0;
}
