// SODEC fixed-point layer and scale index (see int_params.hpp for the spec and the bounds).
//
// conv_requant as a blocked integer GEMM: out[o, p] = requant(bias[o] + sum_k W[o, k] * B[k, p])
// with K = CI * k * k taps in (i, ky, kx) order and B the im2col of the upsampled, zero-padded
// input. Activations (|a| <= 32767) and weights (|w| <= 127) are int16; taps are taken in pairs,
// so one 32-bit lane multiplies and adds two taps at once (pmaddwd on AVX2, vpdpwssd on
// AVX-512 VNNI): |w0 a0 + w1 a1| <= 2 * 127 * 32767 = 8,322,818 < 2^23. A lane's int32 partial
// sum over at most kChunkPairs = 256 pairs stays below 256 * 8,322,818 = 2,130,641,408 < 2^31, so
// the int32 arithmetic is exact; after every chunk the partial sums are added into int64
// accumulators. Hence the result equals the spec's int64 sum exactly, in any order.
//
// Work is cut into panels of NR output positions; a task packs one panel of B (layout
// [pair][position][2] int16, so that one vector load holds the pairs of NR/8 or NR/16 positions)
// and multiplies it with a block of output channels, MR rows at a time (W packed as int32 pairs,
// broadcast per row). Requantisation (int64, the spec's floor shift) and the clamp are fused into
// the store. The kernel (AVX-512 VNNI, AVX2, or portable C++) is chosen at run time.
#include "sodec/int_params.hpp"

#include <algorithm>
#include <cstring>
#include <memory>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "common/parallel.hpp"

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define COD_FAST_X86 1
#endif

namespace cod_fast::sodec {

namespace {

constexpr int64_t kChunkPairs = 256;  // see the overflow bound above
constexpr int kMR = 4;                // output channels per microkernel call
constexpr int kMaxNR = 64;            // positions per panel (AVX-512: 4 vectors of 16)
// Pairs per K slice (<= kChunkPairs): 128 x 64 positions x 4 bytes = 32 KiB of panel in L1.
constexpr int64_t kSlicePairs = 128;
static_assert(kSlicePairs <= kChunkPairs, "a slice is summed in one int32 chunk");

struct Geometry {
  int64_t ci, k, H, W, Hp, Wp, r, kpairs;
};

// One microkernel call: acc64[m][j] += sum over pairs [0, kpairs) of wpair[m][pp] . bpanel[pp][j]
// for m < kMR, j < NR, with kpairs <= kChunkPairs (one int32 chunk). wpair rows have stride
// `wstride` int32 pairs; bpanel is [kpairs][NR][2].
using Kernel = void (*)(const int32_t* wpair, int64_t wstride, const int16_t* bpanel, int64_t kpairs,
                        int64_t* acc64);

template <int NR>
void kernel_portable(const int32_t* wpair, int64_t wstride, const int16_t* bpanel, int64_t kpairs,
                     int64_t* acc64) {
  {
    const int64_t c0 = 0, c1 = kpairs;
    int32_t acc[kMR][NR] = {};
    for (int64_t pp = c0; pp < c1; ++pp) {
      const int16_t* b = bpanel + pp * NR * 2;
      for (int m = 0; m < kMR; ++m) {
        const int32_t wp = wpair[m * wstride + pp];
        const int32_t w0 = static_cast<int16_t>(wp & 0xffff);
        const int32_t w1 = static_cast<int16_t>(static_cast<uint32_t>(wp) >> 16);
        for (int j = 0; j < NR; ++j) acc[m][j] += w0 * b[2 * j] + w1 * b[2 * j + 1];
      }
    }
    for (int m = 0; m < kMR; ++m)
      for (int j = 0; j < NR; ++j) acc64[m * NR + j] += acc[m][j];
  }
}

#ifdef COD_FAST_X86
// AVX2: NR = 24 (3 vectors of 8 positions), 12 int32 accumulators.
__attribute__((target("avx2"))) void kernel_avx2(const int32_t* wpair, int64_t wstride,
                                                 const int16_t* bpanel, int64_t kpairs,
                                                 int64_t* acc64) {
  constexpr int NR = 24;
  {
    const int64_t c0 = 0, c1 = kpairs;
    __m256i acc[kMR][3];
    for (int m = 0; m < kMR; ++m)
      for (int v = 0; v < 3; ++v) acc[m][v] = _mm256_setzero_si256();
    for (int64_t pp = c0; pp < c1; ++pp) {
      const int16_t* b = bpanel + pp * NR * 2;
      const __m256i b0 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(b));
      const __m256i b1 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(b + 16));
      const __m256i b2 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(b + 32));
      for (int m = 0; m < kMR; ++m) {
        const __m256i w = _mm256_set1_epi32(wpair[m * wstride + pp]);
        acc[m][0] = _mm256_add_epi32(acc[m][0], _mm256_madd_epi16(w, b0));
        acc[m][1] = _mm256_add_epi32(acc[m][1], _mm256_madd_epi16(w, b1));
        acc[m][2] = _mm256_add_epi32(acc[m][2], _mm256_madd_epi16(w, b2));
      }
    }
    for (int m = 0; m < kMR; ++m) {
      for (int v = 0; v < 3; ++v) {
        int64_t* dst = acc64 + m * NR + 8 * v;
        const __m256i lo = _mm256_cvtepi32_epi64(_mm256_castsi256_si128(acc[m][v]));
        const __m256i hi = _mm256_cvtepi32_epi64(_mm256_extracti128_si256(acc[m][v], 1));
        __m256i* d = reinterpret_cast<__m256i*>(dst);
        _mm256_storeu_si256(d, _mm256_add_epi64(_mm256_loadu_si256(d), lo));
        _mm256_storeu_si256(d + 1, _mm256_add_epi64(_mm256_loadu_si256(d + 1), hi));
      }
    }
  }
}

// AVX-512 VNNI: NR = 64 (4 vectors of 16 positions), 16 int32 accumulators, vpdpwssd (exact here:
// the true sums fit int32, see the bound above).
__attribute__((target("avx512f,avx512bw,avx512vnni"))) void kernel_avx512(
    const int32_t* wpair, int64_t wstride, const int16_t* bpanel, int64_t kpairs, int64_t* acc64) {
  constexpr int NR = 64;
  {
    const int64_t c0 = 0, c1 = kpairs;
    __m512i acc[kMR][4];
    for (int m = 0; m < kMR; ++m)
      for (int v = 0; v < 4; ++v) acc[m][v] = _mm512_setzero_si512();
    for (int64_t pp = c0; pp < c1; ++pp) {
      const int16_t* b = bpanel + pp * NR * 2;
      const __m512i b0 = _mm512_loadu_si512(b);
      const __m512i b1 = _mm512_loadu_si512(b + 32);
      const __m512i b2 = _mm512_loadu_si512(b + 64);
      const __m512i b3 = _mm512_loadu_si512(b + 96);
      for (int m = 0; m < kMR; ++m) {
        const __m512i w = _mm512_set1_epi32(wpair[m * wstride + pp]);
        acc[m][0] = _mm512_dpwssd_epi32(acc[m][0], w, b0);
        acc[m][1] = _mm512_dpwssd_epi32(acc[m][1], w, b1);
        acc[m][2] = _mm512_dpwssd_epi32(acc[m][2], w, b2);
        acc[m][3] = _mm512_dpwssd_epi32(acc[m][3], w, b3);
      }
    }
    for (int m = 0; m < kMR; ++m) {
      for (int v = 0; v < 4; ++v) {
        int64_t* dst = acc64 + m * NR + 16 * v;
        const __m512i lo = _mm512_cvtepi32_epi64(_mm512_castsi512_si256(acc[m][v]));
        const __m512i hi = _mm512_cvtepi32_epi64(_mm512_extracti64x4_epi64(acc[m][v], 1));
        _mm512_storeu_si512(dst, _mm512_add_epi64(_mm512_loadu_si512(dst), lo));
        _mm512_storeu_si512(dst + 8, _mm512_add_epi64(_mm512_loadu_si512(dst + 8), hi));
      }
    }
  }
}
#endif

bool cpu_has_avx2() {
#ifdef COD_FAST_X86
  return __builtin_cpu_supports("avx2");
#else
  return false;
#endif
}

bool cpu_has_avx512() {
#ifdef COD_FAST_X86
  return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
         __builtin_cpu_supports("avx512vnni");
#else
  return false;
#endif
}

struct KernelChoice {
  Kernel fn;
  int nr;
};

KernelChoice choose(Impl impl) {
  if (impl == Impl::kAuto) impl = cpu_has_avx512() ? Impl::kAvx512 : cpu_has_avx2() ? Impl::kAvx2 : Impl::kPortable;
#ifdef COD_FAST_X86
  if (impl == Impl::kAvx512) {
    if (!cpu_has_avx512()) throw std::invalid_argument("this CPU lacks AVX-512 VNNI");
    return {&kernel_avx512, 64};
  }
  if (impl == Impl::kAvx2) {
    if (!cpu_has_avx2()) throw std::invalid_argument("this CPU lacks AVX2");
    return {&kernel_avx2, 24};
  }
#else
  if (impl != Impl::kPortable) throw std::invalid_argument("SIMD kernels need an x86-64 CPU");
#endif
  return {&kernel_portable<16>, 16};
}

// Upsampled (nearest, by up), zero-padded input of one image as int16 [ci][Hp][Wp].
void pad_input(const int32_t* a, int64_t h, int64_t w, int64_t up, const Geometry& g, int16_t* xp) {
  std::fill(xp, xp + g.ci * g.Hp * g.Wp, int16_t{0});
  for (int64_t i = 0; i < g.ci; ++i) {
    const int32_t* plane = a + i * h * w;
    int16_t* dst = xp + i * g.Hp * g.Wp;
    for (int64_t y = 0; y < g.H; ++y) {
      const int32_t* row = plane + (y / up) * w;
      int16_t* d = dst + (y + g.r) * g.Wp + g.r;
      if (up == 1) {
        for (int64_t x = 0; x < g.W; ++x) d[x] = static_cast<int16_t>(row[x]);
      } else {
        for (int64_t x = 0; x < g.W; ++x) d[x] = static_cast<int16_t>(row[x / up]);
      }
    }
  }
}

// Packs positions [p0, p0 + nr) (flattened y * W + x; those >= H*W are zero) of the im2col into
// panel [kpairs][nr][2].
void pack_panel(const int16_t* xp, const Geometry& g, int64_t p0, int nr, int16_t* panel) {
  int64_t base[kMaxNR];
  int valid = 0;
  for (int j = 0; j < nr; ++j) {
    const int64_t p = p0 + j;
    if (p < g.H * g.W) {
      base[j] = (p / g.W) * g.Wp + (p % g.W);
      valid = j + 1;
    }
  }
  const int64_t kk = g.k * g.k, K = g.ci * kk;
  for (int64_t kidx = 0; kidx < 2 * g.kpairs; ++kidx) {
    int16_t* dst = panel + (kidx >> 1) * nr * 2 + (kidx & 1);
    if (kidx >= K) {
      for (int j = 0; j < nr; ++j) dst[2 * j] = 0;
      continue;
    }
    const int64_t i = kidx / kk, t = kidx % kk, ky = t / g.k, kx = t % g.k;
    const int16_t* src = xp + i * g.Hp * g.Wp + ky * g.Wp + kx;
    for (int j = 0; j < valid; ++j) dst[2 * j] = src[base[j]];
    for (int j = valid; j < nr; ++j) dst[2 * j] = 0;
  }
}

}  // namespace

bool impl_supported(Impl impl) {
  switch (impl) {
    case Impl::kAuto:
    case Impl::kPortable:
      return true;
    case Impl::kAvx2:
      return cpu_has_avx2();
    case Impl::kAvx512:
      return cpu_has_avx512();
  }
  return false;
}

void conv_requant(const int32_t* a, int64_t n, int64_t ci, int64_t h, int64_t w,
                  const int32_t* weight, int64_t co, int64_t k,
                  const int64_t* bias, const int64_t* mult, const int64_t* shift,
                  int64_t up, int64_t lo, int64_t hi, int32_t* out, int threads, Impl impl) {
  const KernelChoice kc = choose(impl);
  const int nr = kc.nr;
  Geometry g{};
  g.ci = ci;
  g.k = k;
  g.r = k / 2;
  g.H = h * up;
  g.W = w * up;
  g.Hp = g.H + 2 * g.r;
  g.Wp = g.W + 2 * g.r;
  const int64_t K = ci * k * k;
  g.kpairs = (K + 1) / 2;
  const int64_t HW = g.H * g.W;
  const int64_t co_pad = (co + kMR - 1) / kMR * kMR;

  // Weights as int32 pairs [co_pad][kpairs] (rows past co and the odd tail are zero).
  std::vector<int32_t> wpair(static_cast<size_t>(co_pad * g.kpairs), 0);
  for (int64_t o = 0; o < co; ++o) {
    const int32_t* src = weight + o * K;
    int32_t* dst = wpair.data() + o * g.kpairs;
    for (int64_t pp = 0; pp < g.kpairs; ++pp) {
      const int32_t w0 = src[2 * pp];
      const int32_t w1 = 2 * pp + 1 < K ? src[2 * pp + 1] : 0;
      dst[pp] = static_cast<int32_t>((static_cast<uint32_t>(static_cast<uint16_t>(w0))) |
                                     (static_cast<uint32_t>(static_cast<uint16_t>(w1)) << 16));
    }
  }

  if (threads <= 0) {
    const unsigned hc = std::thread::hardware_concurrency();
    threads = hc == 0 ? 1 : static_cast<int>(hc);
  }
  const int64_t n_panels = (HW + nr - 1) / nr;
  // Channel blocks: whole rows of MR; split the channels when there are too few panels to keep
  // every thread busy (small early layers).
  const int64_t mr_groups = co_pad / kMR;
  int64_t blocks = 1;
  const int64_t want = 4 * static_cast<int64_t>(threads);
  if (n_panels * n < want) blocks = std::min(mr_groups, (want + n_panels * n - 1) / (n_panels * n));
  const int64_t groups_per_block = (mr_groups + blocks - 1) / blocks;
  blocks = (mr_groups + groups_per_block - 1) / groups_per_block;

  std::vector<int16_t> xp(static_cast<size_t>(ci * g.Hp * g.Wp));
  for (int64_t b = 0; b < n; ++b) {
    pad_input(a + b * ci * h * w, h, w, up, g, xp.data());
    int32_t* outb = out + b * co * HW;
    parallel_for(n_panels * blocks, threads, [&](int64_t task) {
      const int64_t panel_idx = task / blocks, blk = task % blocks;
      const int64_t p0 = panel_idx * nr;
      std::unique_ptr<int16_t[]> panel(new int16_t[static_cast<size_t>(g.kpairs * nr * 2)]);
      pack_panel(xp.data(), g, p0, nr, panel.get());
      const int64_t g0 = blk * groups_per_block, g1 = std::min(mr_groups, g0 + groups_per_block);
      std::unique_ptr<int64_t[]> acc(new int64_t[static_cast<size_t>((g1 - g0) * kMR * nr)]());
      // K in slices of kSlicePairs: the panel's slice (kSlicePairs x NR pairs) stays in L1 while
      // every channel group of the block passes over it.
      for (int64_t s0 = 0; s0 < g.kpairs; s0 += kSlicePairs) {
        const int64_t len = std::min(kSlicePairs, g.kpairs - s0);
        const int16_t* bslice = panel.get() + s0 * nr * 2;
        for (int64_t grp = g0; grp < g1; ++grp) {
          kc.fn(wpair.data() + grp * kMR * g.kpairs + s0, g.kpairs, bslice, len,
                acc.get() + (grp - g0) * kMR * nr);
        }
      }
      const int64_t cnt = std::min<int64_t>(nr, HW - p0);
      for (int64_t grp = g0; grp < g1; ++grp) {
        const int64_t* acc64 = acc.get() + (grp - g0) * kMR * nr;
        for (int m = 0; m < kMR; ++m) {
          const int64_t o = grp * kMR + m;
          if (o >= co) break;
          const int64_t bo = bias[o], mo = mult[o];
          const int s = static_cast<int>(shift[o]);
          const int64_t half = int64_t{1} << (s - 1);  // shift >= 1
          int32_t* dst = outb + o * HW + p0;
          for (int64_t j = 0; j < cnt; ++j) {
            const int64_t q = floor_shift((acc64[m * nr + j] + bo) * mo + half, s);
            dst[j] = static_cast<int32_t>(std::clamp(q, lo, hi));  // lo, hi are int32 values
          }
        }
      }
    });
  }
}

namespace {

// cnt[j] += #{k : s[j] > t[k]} for int32 thresholds: one compare per (element, threshold), no
// branch; vectorised by the compiler, cloned for AVX-512 / AVX2 / baseline and picked at load
// time (the thresholds are few: 63 for the default table).
#ifdef COD_FAST_X86
__attribute__((target_clones("avx512f", "avx2", "default")))
#endif
void count_above(const int32_t* s, size_t count, const int32_t* t, size_t n_t, int32_t* cnt) {
  for (size_t k = 0; k < n_t; ++k) {
    const int32_t tk = t[k];
    for (size_t j = 0; j < count; ++j) cnt[j] += s[j] > tk;
  }
}

}  // namespace

void scale_index(const int32_t* s, size_t count, const int64_t* thresholds, size_t n_thresholds,
                 int32_t* out) {
  // #{k : s > T[k]} for int32 s: thresholds below INT32_MIN always count, those >= INT32_MAX never;
  // the rest compare exactly as int32.
  int32_t always = 0;
  std::vector<int32_t> mid;
  mid.reserve(n_thresholds);
  for (size_t k = 0; k < n_thresholds; ++k) {
    if (thresholds[k] < INT32_MIN) {
      ++always;
    } else if (thresholds[k] < INT32_MAX) {
      mid.push_back(static_cast<int32_t>(thresholds[k]));
    }
  }
  std::fill(out, out + count, always);
  // Blocks of elements small enough for L1, every threshold over each block.
  constexpr size_t kBlock = 2048;
  for (size_t j0 = 0; j0 < count; j0 += kBlock) {
    count_above(s + j0, std::min(kBlock, count - j0), mid.data(), mid.size(), out + j0);
  }
}

}  // namespace cod_fast::sodec
