// CPU reverse-channel coding: shuffle, encoder and decoder (see rcc_cpu.h).
#include "rcc/rcc_cpu.h"

#include <algorithm>
#include <atomic>
#include <stdexcept>
#include <string>
#include <thread>

#include "common/parallel.hpp"
#include "rcc/rcc_math.h"

namespace rcc {
namespace cpu {

namespace {

// Candidates per encoder task; also the granularity of the arrival-time prefix offsets.
constexpr uint32_t kTile = 256;

uint32_t key_lo(uint64_t seed) { return (uint32_t)seed; }
uint32_t key_hi(uint64_t seed) { return (uint32_t)(seed >> 32); }

// Word `i` of the stream (seed, step, stream, c1): word i % 4 of block c0 = i / 4.
uint32_t stream_word(uint64_t seed, uint32_t step, uint32_t stream, uint32_t c1, uint64_t i) {
  uint32_t out[4];
  philox4x32_10((uint32_t)(i >> 2), c1, step, stream, key_lo(seed), key_hi(seed), out);
  return out[i & 3];
}

Impl resolve_impl(Impl impl) {
  if (impl == Impl::kAuto) return avx2_supported() ? Impl::kAvx2 : Impl::kGeneric;
  if (impl == Impl::kAvx2 && !avx2_supported())
    throw std::invalid_argument("the AVX2 kernel was requested but this CPU lacks AVX2");
  return impl;
}

void run_kernel(Impl impl, const float* mu_lay, int64_t n_blocks, uint32_t k_begin, uint32_t k_end,
                uint64_t seed, uint32_t step, uint32_t stream, float* out) {
  if (impl == Impl::kAvx2)
    log_weights_avx2(mu_lay, n_blocks, k_begin, k_end, key_lo(seed), key_hi(seed), step, stream,
                     out);
  else
    log_weights_generic(mu_lay, n_blocks, k_begin, k_end, key_lo(seed), key_hi(seed), step, stream,
                        out);
}

int64_t n_blocks_of(int64_t d) { return (d + kDotLanes - 1) / kDotLanes; }

// Writes mu_chunk (d values in chunk order) into lane layout (see rcc_cpu_kernel.h), zero padded.
// get(j) returns the mu of chunk element j.
template <class Get>
void to_lane_layout(int64_t d, const Get& get, float* lay) {
  const int64_t nb = n_blocks_of(d);
  std::fill(lay, lay + nb * kDotLanes, 0.0f);
  for (int64_t j = 0; j < d; ++j) {
    const int64_t b = j / kDotLanes;
    const int r = (int)(j % kDotLanes);
    lay[b * kDotLanes + 8 * (r % 4) + r / 4] = get(j);
  }
}

// Candidate k's normals for chunk elements 0..d-1, written through put(j, z).
template <class Put>
void regenerate(uint64_t seed, uint32_t step, uint32_t stream, uint32_t k, int64_t d,
                const Put& put) {
  uint32_t words[4];
  for (int64_t j = 0; j < d; ++j) {
    if ((j & 3) == 0)
      philox4x32_10((uint32_t)(j >> 2), k, step, stream, key_lo(seed), key_hi(seed), words);
    put(j, normal_from_u32(words[j & 3]));
  }
}

}  // namespace

bool avx2_supported() {
#if defined(__x86_64__) || defined(__i386__)
  return __builtin_cpu_supports("avx2");
#else
  return false;
#endif
}

std::vector<uint32_t> permutation(uint64_t seed, uint32_t step, int64_t dim) {
  if (dim < 1 || dim > kMaxDim) throw std::invalid_argument("dim must be in [1, 2^31 - 1]");
  std::vector<uint32_t> perm((size_t)dim);
  for (int64_t i = 0; i < dim; ++i) perm[(size_t)i] = (uint32_t)i;
  uint32_t words[4];
  for (int64_t i = dim - 1; i >= 1; --i) {
    // Blocks are visited from the top; refresh the 4 words whenever i enters a new block.
    if (i == dim - 1 || (i & 3) == 3)
      philox4x32_10((uint32_t)(i >> 2), 0u, step, kShuffleStream, key_lo(seed), key_hi(seed),
                    words);
    const uint64_t j = ((uint64_t)words[i & 3] * (uint64_t)(i + 1)) >> 32;  // j <= i
    std::swap(perm[(size_t)i], perm[(size_t)j]);
  }
  return perm;
}

ChunkLayout make_layout(int64_t dim, const int32_t* bits, const int64_t* dims, int64_t n_chunks) {
  if (dim < 1 || dim > kMaxDim) throw std::invalid_argument("dim must be in [1, 2^31 - 1]");
  if (n_chunks < 1 || n_chunks > dim)
    throw std::invalid_argument("the number of chunks must be in [1, dim]");
  ChunkLayout lay;
  lay.dim = dim;
  lay.bits.assign(bits, bits + n_chunks);
  lay.dims.assign(dims, dims + n_chunks);
  lay.offsets.resize((size_t)n_chunks);
  int64_t total = 0;
  for (int64_t c = 0; c < n_chunks; ++c) {
    if (bits[c] < 0 || bits[c] > kMaxChunkBits)
      throw std::invalid_argument("chunk bits must be in [0, 16], got " + std::to_string(bits[c]));
    if (dims[c] < 1 || dims[c] > dim)
      throw std::invalid_argument("every chunk needs between 1 and dim dimensions");
    lay.offsets[(size_t)c] = total;
    total += dims[c];
  }
  if (total != dim)
    throw std::invalid_argument("chunk dimensions sum to " + std::to_string(total) +
                                ", expected " + std::to_string(dim));
  return lay;
}

void encode(const float* mu, const ChunkLayout& layout, uint64_t seed, uint32_t step, int threads,
            Impl impl, int64_t* indices_out, float* sample_out) {
  impl = resolve_impl(impl);
  threads = cod_fast::resolve_threads(threads);
  const int64_t n_chunks = (int64_t)layout.dims.size();
  const std::vector<uint32_t> perm = permutation(seed, step, layout.dim);

  // mu of every chunk in lane layout, chunks one after another (block offsets in boff).
  std::vector<int64_t> boff((size_t)n_chunks + 1, 0);
  for (int64_t c = 0; c < n_chunks; ++c) boff[c + 1] = boff[c] + n_blocks_of(layout.dims[c]);
  std::vector<float> mu_lay((size_t)(boff[n_chunks] * kDotLanes));
  for (int64_t c = 0; c < n_chunks; ++c) {
    const uint32_t* p = perm.data() + layout.offsets[c];
    to_lane_layout(layout.dims[c], [&](int64_t j) { return mu[p[j]]; },
                   mu_lay.data() + boff[c] * kDotLanes);
  }

  // Tasks: (chunk, tile of kTile candidates). toff[c] is chunk c's first task.
  std::vector<int64_t> toff((size_t)n_chunks + 1, 0);
  for (int64_t c = 0; c < n_chunks; ++c) {
    const uint32_t k_count = 1u << layout.bits[c];
    toff[c + 1] = toff[c] + (k_count + kTile - 1) / kTile;
  }
  const int64_t n_tasks = toff[n_chunks];

  // Phase 1: arrival-time prefix at the start of every tile (exact integers, see rcc_math.h).
  std::vector<uint64_t> arrival_start((size_t)n_tasks);
  cod_fast::parallel_for(n_chunks, threads, [&](int64_t c) {
    const uint32_t k_count = 1u << layout.bits[c];
    uint64_t t = 1;
    for (uint32_t k = 0; k < k_count; ++k) {
      if (k % kTile == 0) arrival_start[(size_t)(toff[c] + k / kTile)] = t;
      t += exp1_fixed(stream_word(seed, step, (uint32_t)c, kArrivalCounterHi, k));
    }
  });

  // Phase 2: scores of every candidate, minimum packed key per task.
  std::vector<uint64_t> task_best((size_t)n_tasks);
  cod_fast::parallel_for(n_tasks, threads, [&](int64_t task) {
    const int64_t c = std::upper_bound(toff.begin(), toff.end(), task) - toff.begin() - 1;
    const uint32_t k_count = 1u << layout.bits[c];
    const uint32_t k_begin = (uint32_t)(task - toff[c]) * kTile;
    const uint32_t k_end = std::min(k_count, k_begin + kTile);
    float logw[kTile];
    run_kernel(impl, mu_lay.data() + boff[c] * kDotLanes, boff[c + 1] - boff[c], k_begin, k_end,
               seed, step, (uint32_t)c, logw);
    uint64_t t = arrival_start[(size_t)task];
    uint64_t best = ~uint64_t(0);
    uint32_t words[4];
    for (uint32_t k = k_begin; k < k_end; ++k) {
      if (k == k_begin || (k & 3) == 0)
        philox4x32_10(k >> 2, kArrivalCounterHi, step, (uint32_t)c, key_lo(seed), key_hi(seed),
                      words);
      t += exp1_fixed(words[k & 3]);
      const float s = f_sub(log_arrival(t), logw[k - k_begin]);
      best = std::min(best, pack_score(s, k));
    }
    task_best[(size_t)task] = best;
  });

  for (int64_t c = 0; c < n_chunks; ++c) {
    uint64_t best = ~uint64_t(0);
    for (int64_t task = toff[c]; task < toff[c + 1]; ++task) best = std::min(best, task_best[task]);
    indices_out[c] = (int64_t)(uint32_t)best;  // low 32 bits: the candidate index
  }
  decode(indices_out, layout, seed, step, threads, sample_out);
}

void decode(const int64_t* indices, const ChunkLayout& layout, uint64_t seed, uint32_t step,
            int threads, float* sample_out) {
  threads = cod_fast::resolve_threads(threads);
  const int64_t n_chunks = (int64_t)layout.dims.size();
  for (int64_t c = 0; c < n_chunks; ++c) {
    if (indices[c] < 0 || indices[c] >= (int64_t(1) << layout.bits[c]))
      throw std::out_of_range("index " + std::to_string(indices[c]) + " of chunk " +
                              std::to_string(c) + " is outside [0, 2^" +
                              std::to_string(layout.bits[c]) + ")");
  }
  const std::vector<uint32_t> perm = permutation(seed, step, layout.dim);
  cod_fast::parallel_for(n_chunks, threads, [&](int64_t c) {
    const uint32_t* p = perm.data() + layout.offsets[c];
    regenerate(seed, step, (uint32_t)c, (uint32_t)indices[c], layout.dims[c],
               [&](int64_t j, float z) { sample_out[p[j]] = z; });
  });
}

void philox_words(uint64_t seed, uint32_t step, uint32_t stream, uint32_t c1, uint64_t start,
                  int64_t n, uint32_t* out) {
  for (int64_t i = 0; i < n; ++i) out[i] = stream_word(seed, step, stream, c1, start + (uint64_t)i);
}

void normals(uint64_t seed, uint32_t step, uint32_t stream, uint32_t c1, uint64_t start, int64_t n,
             float* out) {
  for (int64_t i = 0; i < n; ++i)
    out[i] = normal_from_u32(stream_word(seed, step, stream, c1, start + (uint64_t)i));
}

void log_weights(const float* mu_chunk, int64_t d, uint64_t seed, uint32_t step, uint32_t stream,
                 uint32_t k_begin, uint32_t k_end, Impl impl, float* out) {
  impl = resolve_impl(impl);
  std::vector<float> lay((size_t)(n_blocks_of(d) * kDotLanes));
  to_lane_layout(d, [&](int64_t j) { return mu_chunk[j]; }, lay.data());
  run_kernel(impl, lay.data(), n_blocks_of(d), k_begin, k_end, seed, step, stream, out);
}

}  // namespace cpu
}  // namespace rcc
