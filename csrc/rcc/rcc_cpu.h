// CPU reverse-channel coding: the dimension shuffle, the multi-threaded encoder (all chunks of a
// step in one call) and the decoder (winner regeneration). Plain pointers in, no Python here.
#pragma once

#include <stdint.h>

#include <vector>

namespace rcc {
namespace cpu {

// Kernel instances (rcc_kernel_generic.cpp, rcc_kernel_avx2.cpp); see rcc_cpu_kernel.h.
void log_weights_generic(const float* mu_lay, int64_t n_blocks, uint32_t k_begin, uint32_t k_end,
                         uint32_t key0, uint32_t key1, uint32_t step, uint32_t stream, float* out);
void log_weights_avx2(const float* mu_lay, int64_t n_blocks, uint32_t k_begin, uint32_t k_end,
                      uint32_t key0, uint32_t key1, uint32_t step, uint32_t stream, float* out);

// Which kernel instance the encoder uses.
enum class Impl { kAuto = 0, kGeneric = 1, kAvx2 = 2 };
bool avx2_supported();

// Largest supported dimension: c0 = j / 4 must fit 32 bits and sizes are int32 in torch.
constexpr int64_t kMaxDim = (int64_t(1) << 31) - 1;
// Largest chunk size in bits (2^16 candidates): candidate indices stay below kArrivalCounterHi.
constexpr int kMaxChunkBits = 16;

// The step's dimension permutation: Fisher-Yates over 0..dim-1, for i = dim-1 down to 1 swapping
// perm[i] with perm[j], j = (r_i * (i + 1)) >> 32 (Lemire's multiply-shift, bias below
// (i+1)/2^32), r_i = word i % 4 of Philox(c0 = i / 4, c1 = 0, step, kShuffleStream).
// Chunk c owns perm[off_c .. off_c + dims_c) in that order: its element j is dimension
// perm[off_c + j].
std::vector<uint32_t> permutation(uint64_t seed, uint32_t step, int64_t dim);

// A step's chunk layout, validated: throws std::invalid_argument on inconsistent sizes.
struct ChunkLayout {
  int64_t dim = 0;
  std::vector<int32_t> bits;     // chunk sizes in bits, 0..16
  std::vector<int64_t> dims;     // dimensions per chunk, >= 1, summing to dim
  std::vector<int64_t> offsets;  // prefix sums of dims
};
ChunkLayout make_layout(int64_t dim, const int32_t* bits, const int64_t* dims, int64_t n_chunks);

// Encoder: indices_out[c] = winner of chunk c, sample_out[dim] = the winners' candidates put back
// in dimension order. threads <= 0 means hardware concurrency.
void encode(const float* mu, const ChunkLayout& layout, uint64_t seed, uint32_t step, int threads,
            Impl impl, int64_t* indices_out, float* sample_out);

// Decoder: sample_out[dim] from the chunk indices; throws std::out_of_range on an index >= 2^bits.
void decode(const int64_t* indices, const ChunkLayout& layout, uint64_t seed, uint32_t step,
            int threads, float* sample_out);

// Test hooks: raw Philox words and normals of one stream, counters c0 = start/4 ... in order.
void philox_words(uint64_t seed, uint32_t step, uint32_t stream, uint32_t c1, uint64_t start,
                  int64_t n, uint32_t* out);
void normals(uint64_t seed, uint32_t step, uint32_t stream, uint32_t c1, uint64_t start, int64_t n,
             float* out);
// Log-weights of candidates [k_begin, k_end) of a chunk whose mu is given in dimension order.
void log_weights(const float* mu_chunk, int64_t d, uint64_t seed, uint32_t step, uint32_t stream,
                 uint32_t k_begin, uint32_t k_end, Impl impl, float* out);

}  // namespace cpu
}  // namespace rcc
