// CUDA reverse-channel coding: one step = four launches on the caller's stream, no host sync.
//   gather      mu in chunk order (mu_c[off_c + j] = mu[perm[off_c + j]])
//   tile_sums   per (chunk, tile of 256 candidates): sum of the fixed-point Exp(1) arrival gaps
//   select      per (chunk, tile): log-weights, arrival times (tile prefix + block scan), scores,
//               block minimum, atomicMin of the packed key into the chunk's slot (segmented argmin)
//   regenerate  per chunk: the winner's normals, written back in dimension order (also decode)
// The maths comes from rcc_math.h, so a candidate's normals, its log-weight (canonical order of 32
// accumulators) and its score are bit-identical to the CPU backends. All offsets that combine a
// candidate or chunk with a dimension are 64-bit (DiffC's idx * dim overflowed int32).
#include <cuda_runtime.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>  // chunk_bits / chunk_dims arrive as Python lists (std::vector)

#include <stdexcept>
#include <string>
#include <vector>

#include "rcc/rcc_math.h"

namespace py = pybind11;

namespace {

constexpr int kTile = 256;  // candidates per block (2^bits is a multiple of it or smaller)

struct ChunkMeta {
  int64_t offset;      // first element of the chunk in the permutation
  int64_t dims;        // dimensions of the chunk
  int64_t first_task;  // first (chunk, tile) task of the chunk
  int32_t bits;        // log2 of the number of candidates
};

__device__ int find_chunk(const ChunkMeta* meta, int n_chunks, int64_t task) {
  int lo = 0, hi = n_chunks - 1;  // last chunk whose first_task <= task
  while (lo < hi) {
    const int mid = (lo + hi + 1) / 2;
    if (meta[mid].first_task <= task) lo = mid; else hi = mid - 1;
  }
  return lo;
}

__global__ void gather_kernel(const float* mu, const int64_t* perm, int64_t dim, float* mu_c) {
  const int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
  if (i < dim) mu_c[i] = mu[perm[i]];
}

__global__ void tile_sums_kernel(const ChunkMeta* meta, int n_chunks, uint32_t key0, uint32_t key1,
                                 uint32_t step, unsigned long long* tile_sum) {
  __shared__ unsigned long long part[kTile];
  const int64_t task = blockIdx.x;
  const int c = find_chunk(meta, n_chunks, task);
  const uint32_t k_count = 1u << meta[c].bits;
  const uint32_t k = (uint32_t)(task - meta[c].first_task) * kTile + threadIdx.x;
  unsigned long long e = 0;
  if (k < k_count) {
    uint32_t w[4];
    rcc::philox4x32_10(k >> 2, rcc::kArrivalCounterHi, step, (uint32_t)c, key0, key1, w);
    e = rcc::exp1_fixed(w[k & 3]);
  }
  part[threadIdx.x] = e;
  __syncthreads();
  for (int h = kTile / 2; h >= 1; h /= 2) {  // integer sums: order does not matter
    if ((int)threadIdx.x < h) part[threadIdx.x] += part[threadIdx.x + h];
    __syncthreads();
  }
  if (threadIdx.x == 0) tile_sum[task] = part[0];
}

__global__ void select_kernel(const ChunkMeta* meta, int n_chunks, const float* mu_c,
                              const unsigned long long* tile_sum, uint32_t key0, uint32_t key1,
                              uint32_t step, unsigned long long* best) {
  __shared__ unsigned long long scan[kTile];
  __shared__ unsigned long long red[kTile];
  const int64_t task = blockIdx.x;
  const int c = find_chunk(meta, n_chunks, task);
  const ChunkMeta m = meta[c];
  const uint32_t k_count = 1u << m.bits;
  const uint32_t tile = (uint32_t)(task - m.first_task);
  const uint32_t k = tile * kTile + threadIdx.x;
  const bool active = k < k_count;

  // Arrival time T_k = 1 + (gaps of earlier tiles) + inclusive scan of this tile's gaps.
  unsigned long long e = 0;
  if (active) {
    uint32_t w[4];
    rcc::philox4x32_10(k >> 2, rcc::kArrivalCounterHi, step, (uint32_t)c, key0, key1, w);
    e = rcc::exp1_fixed(w[k & 3]);
  }
  scan[threadIdx.x] = e;
  __syncthreads();
  for (int off = 1; off < kTile; off *= 2) {  // Hillis-Steele inclusive scan (exact integers)
    const unsigned long long add = (int)threadIdx.x >= off ? scan[threadIdx.x - off] : 0ull;
    __syncthreads();
    scan[threadIdx.x] += add;
    __syncthreads();
  }
  unsigned long long before = 1;
  for (uint32_t t = 0; t < tile; ++t) before += tile_sum[m.first_task + t];
  const unsigned long long t_fixed = before + scan[threadIdx.x];

  unsigned long long key = ~0ull;
  if (active) {
    // Log-weight in the canonical order: acc[j % 32] over blocks of 32 dims, mu zero past d.
    float acc[rcc::kDotLanes];
#pragma unroll
    for (int i = 0; i < rcc::kDotLanes; ++i) acc[i] = 0.0f;
    const float* mu = mu_c + m.offset;
    const int64_t n_blocks = (m.dims + rcc::kDotLanes - 1) / rcc::kDotLanes;
    for (int64_t b = 0; b < n_blocks; ++b) {
#pragma unroll
      for (int l = 0; l < 8; ++l) {
        uint32_t w[4];
        rcc::philox4x32_10((uint32_t)(b * 8 + l), k, step, (uint32_t)c, key0, key1, w);
#pragma unroll
        for (int q = 0; q < 4; ++q) {
          const int64_t j = b * rcc::kDotLanes + 4 * l + q;
          const float mj = j < m.dims ? __ldg(mu + j) : 0.0f;
          acc[4 * l + q] = rcc::f_add(acc[4 * l + q], rcc::f_mul(rcc::normal_from_u32(w[q]), mj));
        }
      }
    }
#pragma unroll
    for (int h = rcc::kDotLanes / 2; h >= 1; h /= 2)
#pragma unroll
      for (int i = 0; i < h; ++i) acc[i] = rcc::f_add(acc[i], acc[i + h]);
    const float s = rcc::f_sub(rcc::log_arrival(t_fixed), acc[0]);
    key = rcc::pack_score(s, k);
  }
  red[threadIdx.x] = key;
  __syncthreads();
  for (int h = kTile / 2; h >= 1; h /= 2) {
    if ((int)threadIdx.x < h) red[threadIdx.x] = min(red[threadIdx.x], red[threadIdx.x + h]);
    __syncthreads();
  }
  if (threadIdx.x == 0) atomicMin(best + c, red[0]);
}

// One block per chunk; threads stride over groups of 4 dimensions (one Philox block each).
__global__ void regenerate_kernel(const ChunkMeta* meta, const unsigned long long* best,
                                  const int64_t* perm, uint32_t key0, uint32_t key1, uint32_t step,
                                  int64_t* indices, float* sample) {
  const int c = blockIdx.x;
  const ChunkMeta m = meta[c];
  const uint32_t k = (uint32_t)(best[c] & 0xFFFFFFFFull);
  if (threadIdx.x == 0 && indices != nullptr) indices[c] = (int64_t)k;
  const int64_t groups = (m.dims + 3) / 4;
  for (int64_t g = threadIdx.x; g < groups; g += blockDim.x) {
    uint32_t w[4];
    rcc::philox4x32_10((uint32_t)g, k, step, (uint32_t)c, key0, key1, w);
    for (int q = 0; q < 4; ++q) {
      const int64_t j = 4 * g + q;
      if (j < m.dims) sample[perm[m.offset + j]] = rcc::normal_from_u32(w[q]);
    }
  }
}

__global__ void set_best_kernel(const int64_t* indices, int n, unsigned long long* best) {
  const int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i < n) best[i] = (unsigned long long)indices[i];
}

void check(cudaError_t err, const char* what) {
  if (err != cudaSuccess)
    throw std::runtime_error(std::string("CUDA error in ") + what + ": " + cudaGetErrorString(err));
}

// Host-side plan: chunk metadata and the number of (chunk, tile) tasks.
std::vector<ChunkMeta> make_meta(const std::vector<int>& bits, const std::vector<int64_t>& dims,
                                 int64_t dim, int64_t& n_tasks) {
  if (bits.empty() || bits.size() != dims.size())
    throw std::invalid_argument("need one chunk_bits and one chunk_dims entry per chunk");
  std::vector<ChunkMeta> meta(bits.size());
  int64_t off = 0;
  n_tasks = 0;
  for (size_t c = 0; c < bits.size(); ++c) {
    if (bits[c] < 0 || bits[c] > 16) throw std::invalid_argument("chunk bits must be in [0, 16]");
    if (dims[c] < 1) throw std::invalid_argument("every chunk needs at least one dimension");
    meta[c] = ChunkMeta{off, dims[c], n_tasks, bits[c]};
    off += dims[c];
    n_tasks += ((int64_t(1) << bits[c]) + kTile - 1) / kTile;
  }
  if (off != dim) throw std::invalid_argument("chunk dimensions must sum to dim");
  return meta;
}

struct Scratch {  // device buffers freed on the stream when the call ends
  cudaStream_t stream;
  std::vector<void*> ptrs;
  void* get(size_t bytes) {
    void* p = nullptr;
    check(cudaMallocAsync(&p, bytes, stream), "cudaMallocAsync");
    ptrs.push_back(p);
    return p;
  }
  ~Scratch() {
    for (void* p : ptrs) cudaFreeAsync(p, stream);
  }
};

void encode(uintptr_t mu_ptr, int64_t dim, const std::vector<int>& bits,
            const std::vector<int64_t>& dims, uintptr_t perm_ptr, uint64_t seed, uint32_t step,
            uintptr_t indices_ptr, uintptr_t sample_ptr, uintptr_t stream_ptr) {
  // Invariant: the host-side checks (make_meta) run before any CUDA call, so bad arguments raise
  // without touching a device; a step of zero dimensions and zero chunks is a no-op.
  if (dim == 0 && bits.empty() && dims.empty()) return;
  int64_t n_tasks = 0;
  const std::vector<ChunkMeta> meta = make_meta(bits, dims, dim, n_tasks);
  const int n_chunks = (int)meta.size();
  cudaStream_t stream = reinterpret_cast<cudaStream_t>(stream_ptr);
  const uint32_t key0 = (uint32_t)seed, key1 = (uint32_t)(seed >> 32);
  Scratch scratch{stream, {}};
  auto* d_meta = static_cast<ChunkMeta*>(scratch.get(sizeof(ChunkMeta) * meta.size()));
  check(cudaMemcpyAsync(d_meta, meta.data(), sizeof(ChunkMeta) * meta.size(),
                        cudaMemcpyHostToDevice, stream), "copy meta");
  auto* mu_c = static_cast<float*>(scratch.get(sizeof(float) * (size_t)dim));
  auto* tile_sum = static_cast<unsigned long long*>(scratch.get(8 * (size_t)n_tasks));
  auto* best = static_cast<unsigned long long*>(scratch.get(8 * (size_t)n_chunks));
  check(cudaMemsetAsync(best, 0xFF, 8 * (size_t)n_chunks, stream), "memset best");
  const auto* perm = reinterpret_cast<const int64_t*>(perm_ptr);
  gather_kernel<<<(unsigned)((dim + 255) / 256), 256, 0, stream>>>(
      reinterpret_cast<const float*>(mu_ptr), perm, dim, mu_c);
  tile_sums_kernel<<<(unsigned)n_tasks, kTile, 0, stream>>>(d_meta, n_chunks, key0, key1, step,
                                                            tile_sum);
  select_kernel<<<(unsigned)n_tasks, kTile, 0, stream>>>(d_meta, n_chunks, mu_c, tile_sum, key0,
                                                         key1, step, best);
  regenerate_kernel<<<n_chunks, 256, 0, stream>>>(d_meta, best, perm, key0, key1, step,
                                                  reinterpret_cast<int64_t*>(indices_ptr),
                                                  reinterpret_cast<float*>(sample_ptr));
  check(cudaGetLastError(), "rcc encode launch");
}

void decode(uintptr_t indices_ptr, int64_t dim, const std::vector<int>& bits,
            const std::vector<int64_t>& dims, uintptr_t perm_ptr, uint64_t seed, uint32_t step,
            uintptr_t sample_ptr, uintptr_t stream_ptr) {
  if (dim == 0 && bits.empty() && dims.empty()) return;  // as in encode: nothing to regenerate
  int64_t n_tasks = 0;
  const std::vector<ChunkMeta> meta = make_meta(bits, dims, dim, n_tasks);
  const int n_chunks = (int)meta.size();
  cudaStream_t stream = reinterpret_cast<cudaStream_t>(stream_ptr);
  Scratch scratch{stream, {}};
  auto* d_meta = static_cast<ChunkMeta*>(scratch.get(sizeof(ChunkMeta) * meta.size()));
  check(cudaMemcpyAsync(d_meta, meta.data(), sizeof(ChunkMeta) * meta.size(),
                        cudaMemcpyHostToDevice, stream), "copy meta");
  auto* best = static_cast<unsigned long long*>(scratch.get(8 * (size_t)n_chunks));
  set_best_kernel<<<(n_chunks + 255) / 256, 256, 0, stream>>>(
      reinterpret_cast<const int64_t*>(indices_ptr), n_chunks, best);
  regenerate_kernel<<<n_chunks, 256, 0, stream>>>(
      d_meta, best, reinterpret_cast<const int64_t*>(perm_ptr), (uint32_t)seed,
      (uint32_t)(seed >> 32), step, nullptr, reinterpret_cast<float*>(sample_ptr));
  check(cudaGetLastError(), "rcc decode launch");
}

}  // namespace

// Pointers are device addresses (torch's data_ptr()); the Python layer (cod_fast/rcc/cuda_backend)
// validates shapes, dtypes and indices and keeps the tensors alive for the call.
PYBIND11_MODULE(_C_cuda, m) {
  m.doc() = "cod_fast CUDA extension (no libtorch: device pointers in, stream-ordered work).";
  py::module_ rcc_mod = m.def_submodule("rcc", "Reverse-channel coding on the GPU.");
  rcc_mod.def("encode", &encode, py::arg("mu_ptr"), py::arg("dim"), py::arg("chunk_bits"),
              py::arg("chunk_dims"), py::arg("perm_ptr"), py::arg("seed"), py::arg("step"),
              py::arg("indices_ptr"), py::arg("sample_ptr"), py::arg("stream_ptr"));
  rcc_mod.def("decode", &decode, py::arg("indices_ptr"), py::arg("dim"), py::arg("chunk_bits"),
              py::arg("chunk_dims"), py::arg("perm_ptr"), py::arg("seed"), py::arg("step"),
              py::arg("sample_ptr"), py::arg("stream_ptr"));
}
