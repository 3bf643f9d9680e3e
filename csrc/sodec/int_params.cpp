// SODEC fixed-point layer and scale index (see int_params.hpp for the spec and the bounds).
//
// conv_requant as a blocked integer GEMM: out[o, p] = requant(bias[o] + sum_k W[o, k] * B[k, p])
// with K taps in (i, ey, ex) order and B the im2col of the zero-padded input. Upsampling by 2 is
// folded into the weights: each of the 4 output phases is a GEMM on the low-resolution grid with
// merged effective weights (see Phase in int_params.hpp). Activations (|a| <= 32767) and
// (effective) weights (|w| <= 127, merged |w| <= 508) are int16; taps are taken in pairs, so one
// 32-bit lane multiplies and adds two taps at once (pmaddwd on AVX2, vpdpwssd on AVX-512 VNNI).
// A lane sums its pairs in int32 over a chunk of at most Phase::chunk pairs, chosen so that
// ACT_MAX * sum(|w|) over the chunk's taps stays <= INT32_MAX in every weight row (at worst
// 2 * 127 * 32767 per pair: 256 pairs for plain weights, 64 for merged ones; usually 128 pairs
// either way): every int32 value is exact. After each chunk the partial sums are added into int64
// accumulators, so the result equals the spec's int64 sum exactly, in any order.
//
// Work is cut into panels of NR output positions; a task packs one panel of B (layout
// [pair][position][2] int16, so that one vector load holds the pairs of NR/8 or NR/16 positions)
// and multiplies it with a block of output channels, MR rows at a time (W packed as int32 pairs,
// broadcast per row), K sliced so that a slice of the panel stays in L1. Requantisation (int64,
// the spec's floor shift) and the clamp are fused into the store. The kernel (AVX-512 VNNI, AVX2,
// or portable C++) is chosen at run time; all give the same integers.
#include "sodec/int_params.hpp"

#include <algorithm>
#include <cstring>
#include <memory>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "common/parallel.hpp"
#include "sodec/amx_conv.hpp"
#include "sodec/profile.hpp"
#include "sodec/requant_store.hpp"

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define COD_FAST_X86 1
#endif

namespace cod_fast::sodec {

namespace {

constexpr int64_t kChunkPairs = 256;  // see the overflow bound above
constexpr int kMR = 4;                // output channels per microkernel call
constexpr int kMaxNR = 64;            // positions per panel (AVX-512: 4 vectors of 16)
// Positions per panel of each kernel; stack arrays in pack_panel and the store hold kMaxNR.
constexpr int kNrAvx512 = 64, kNrAvx2 = 24, kNrPortable = 16;
static_assert(kNrAvx512 <= kMaxNR && kNrAvx2 <= kMaxNR && kNrPortable <= kMaxNR, "panel wider than kMaxNR");
static_assert(kMaxNR <= kStoreMaxPositions, "a panel's store exceeds store_block's limit");
// Pairs per K slice (<= kChunkPairs): 128 x 64 positions x 4 bytes = 32 KiB of panel in L1.
constexpr int64_t kSlicePairs = 128;
static_assert(kSlicePairs <= kChunkPairs, "a slice is summed in one int32 chunk");

struct Geometry {
  int64_t ci, h, w, pad, hp, wp, up, H, W;
};

// One microkernel call: acc64[m][j] += sum over pairs [0, kpairs) of wpair[m][pp] . bpanel[pp][j]
// for m < kMR, j < NR, with kpairs <= the phase's chunk (one exact int32 chunk). wpair rows have stride
// `wstride` int32 pairs; bpanel is [kpairs][NR][2].
using Kernel = void (*)(const int32_t* wpair, int64_t wstride, const int16_t* bpanel, int64_t kpairs,
                        int64_t* acc64);

template <int NR>
void kernel_portable(const int32_t* wpair, int64_t wstride, const int16_t* bpanel, int64_t kpairs,
                     int64_t* acc64) {
  int32_t acc[kMR][NR] = {};
  for (int64_t pp = 0; pp < kpairs; ++pp) {
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

#ifdef COD_FAST_X86
// AVX2: NR = 24 (3 vectors of 8 positions), 12 named int32 accumulators (see kernel_avx512).
__attribute__((target("avx2"))) void kernel_avx2(const int32_t* wpair, int64_t wstride,
                                                 const int16_t* bpanel, int64_t kpairs,
                                                 int64_t* acc64) {
  constexpr int NR = kNrAvx2;
  __m256i c00 = _mm256_setzero_si256(), c01 = c00, c02 = c00;
  __m256i c10 = c00, c11 = c00, c12 = c00;
  __m256i c20 = c00, c21 = c00, c22 = c00;
  __m256i c30 = c00, c31 = c00, c32 = c00;
  const int32_t* w0p = wpair;
  const int32_t* w1p = wpair + wstride;
  const int32_t* w2p = wpair + 2 * wstride;
  const int32_t* w3p = wpair + 3 * wstride;
  for (int64_t pp = 0; pp < kpairs; ++pp) {
    const int16_t* b = bpanel + pp * NR * 2;
    const __m256i b0 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(b));
    const __m256i b1 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(b + 16));
    const __m256i b2 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(b + 32));
    __m256i w = _mm256_set1_epi32(w0p[pp]);
    c00 = _mm256_add_epi32(c00, _mm256_madd_epi16(w, b0));
    c01 = _mm256_add_epi32(c01, _mm256_madd_epi16(w, b1));
    c02 = _mm256_add_epi32(c02, _mm256_madd_epi16(w, b2));
    w = _mm256_set1_epi32(w1p[pp]);
    c10 = _mm256_add_epi32(c10, _mm256_madd_epi16(w, b0));
    c11 = _mm256_add_epi32(c11, _mm256_madd_epi16(w, b1));
    c12 = _mm256_add_epi32(c12, _mm256_madd_epi16(w, b2));
    w = _mm256_set1_epi32(w2p[pp]);
    c20 = _mm256_add_epi32(c20, _mm256_madd_epi16(w, b0));
    c21 = _mm256_add_epi32(c21, _mm256_madd_epi16(w, b1));
    c22 = _mm256_add_epi32(c22, _mm256_madd_epi16(w, b2));
    w = _mm256_set1_epi32(w3p[pp]);
    c30 = _mm256_add_epi32(c30, _mm256_madd_epi16(w, b0));
    c31 = _mm256_add_epi32(c31, _mm256_madd_epi16(w, b1));
    c32 = _mm256_add_epi32(c32, _mm256_madd_epi16(w, b2));
  }
  const __m256i acc[kMR][3] = {{c00, c01, c02}, {c10, c11, c12}, {c20, c21, c22}, {c30, c31, c32}};
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

// AVX-512 VNNI: NR = 64 (4 vectors of 16 positions), 16 int32 accumulators, vpdpwssd (exact here:
// the true sums fit int32, see the bound above).
__attribute__((target("avx512f,avx512bw,avx512vnni"))) void kernel_avx512(
    const int32_t* wpair, int64_t wstride, const int16_t* bpanel, int64_t kpairs, int64_t* acc64) {
  constexpr int NR = kNrAvx512;
  // 16 named accumulators (an array of them made GCC copy registers around every step).
  __m512i c00 = _mm512_setzero_si512(), c01 = c00, c02 = c00, c03 = c00;
  __m512i c10 = c00, c11 = c00, c12 = c00, c13 = c00;
  __m512i c20 = c00, c21 = c00, c22 = c00, c23 = c00;
  __m512i c30 = c00, c31 = c00, c32 = c00, c33 = c00;
  const int32_t* w0p = wpair;
  const int32_t* w1p = wpair + wstride;
  const int32_t* w2p = wpair + 2 * wstride;
  const int32_t* w3p = wpair + 3 * wstride;
  for (int64_t pp = 0; pp < kpairs; ++pp) {
    const int16_t* b = bpanel + pp * NR * 2;
    const __m512i b0 = _mm512_loadu_si512(b);
    const __m512i b1 = _mm512_loadu_si512(b + 32);
    const __m512i b2 = _mm512_loadu_si512(b + 64);
    const __m512i b3 = _mm512_loadu_si512(b + 96);
    __m512i w = _mm512_set1_epi32(w0p[pp]);
    c00 = _mm512_dpwssd_epi32(c00, w, b0);
    c01 = _mm512_dpwssd_epi32(c01, w, b1);
    c02 = _mm512_dpwssd_epi32(c02, w, b2);
    c03 = _mm512_dpwssd_epi32(c03, w, b3);
    w = _mm512_set1_epi32(w1p[pp]);
    c10 = _mm512_dpwssd_epi32(c10, w, b0);
    c11 = _mm512_dpwssd_epi32(c11, w, b1);
    c12 = _mm512_dpwssd_epi32(c12, w, b2);
    c13 = _mm512_dpwssd_epi32(c13, w, b3);
    w = _mm512_set1_epi32(w2p[pp]);
    c20 = _mm512_dpwssd_epi32(c20, w, b0);
    c21 = _mm512_dpwssd_epi32(c21, w, b1);
    c22 = _mm512_dpwssd_epi32(c22, w, b2);
    c23 = _mm512_dpwssd_epi32(c23, w, b3);
    w = _mm512_set1_epi32(w3p[pp]);
    c30 = _mm512_dpwssd_epi32(c30, w, b0);
    c31 = _mm512_dpwssd_epi32(c31, w, b1);
    c32 = _mm512_dpwssd_epi32(c32, w, b2);
    c33 = _mm512_dpwssd_epi32(c33, w, b3);
  }
  const __m512i acc[kMR][4] = {{c00, c01, c02, c03}, {c10, c11, c12, c13}, {c20, c21, c22, c23},
                               {c30, c31, c32, c33}};
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

// kAuto: the fastest kernel this CPU runs (AMX where the OS allows it).
Impl resolve(Impl impl) {
  if (impl != Impl::kAuto) return impl;
  if (amx_available()) return Impl::kAmx;
  return cpu_has_avx512() ? Impl::kAvx512 : cpu_has_avx2() ? Impl::kAvx2 : Impl::kPortable;
}

// The VNNI / pmaddwd / portable GEMM kernel (the AMX kernel has its own task loop, amx_conv.cpp).
KernelChoice choose(Impl impl) {
  impl = resolve(impl);
#ifdef COD_FAST_X86
  if (impl == Impl::kAvx512) {
    if (!cpu_has_avx512()) throw std::invalid_argument("this CPU lacks AVX-512 VNNI");
    return {&kernel_avx512, kNrAvx512};
  }
  if (impl == Impl::kAvx2) {
    if (!cpu_has_avx2()) throw std::invalid_argument("this CPU lacks AVX2");
    return {&kernel_avx2, kNrAvx2};
  }
#else
  if (impl != Impl::kPortable) throw std::invalid_argument("SIMD kernels need an x86-64 CPU");
#endif
  return {&kernel_portable<kNrPortable>, kNrPortable};
}

// This thread's panel buffer, at least n int16 (contents unspecified). Grows only; kept for the
// thread's life (the pool's threads live as long as the process).
int16_t* scratch_panel(size_t n) {
  thread_local std::vector<int16_t> buf;
  if (buf.size() < n) buf.resize(n);
  return buf.data();
}

// This thread's accumulator buffer: n int64, zeroed, followed by kAccSlack readable int64 (the
// vector store reads whole vectors past a run's end).
constexpr size_t kAccSlack = 8;
int64_t* scratch_acc(size_t n) {
  thread_local std::vector<int64_t> buf;
  if (buf.size() < n + kAccSlack) buf.resize(n + kAccSlack);
  std::fill(buf.begin(), buf.begin() + static_cast<std::ptrdiff_t>(n), int64_t{0});
  return buf.data();
}

template <class T>
void pad_clamped_t(const T* a, int64_t ci, int64_t h, int64_t w, int64_t pad, int16_t* xp) {
  const int64_t hp = h + 2 * pad, wp = w + 2 * pad;
  for (int64_t i = 0; i < ci; ++i) {
    int16_t* plane = xp + i * hp * wp;
    std::fill(plane, plane + pad * wp, int16_t{0});
    for (int64_t y = 0; y < h; ++y) {
      const T* row = a + (i * h + y) * w;
      int16_t* d = plane + (y + pad) * wp;
      std::fill(d, d + pad, int16_t{0});
      for (int64_t x = 0; x < w; ++x) {
        const T v = row[x];
        d[pad + x] = static_cast<int16_t>(v < -ACT_MAX ? -ACT_MAX : v > ACT_MAX ? ACT_MAX : v);
      }
      std::fill(d + pad + w, d + wp, int16_t{0});
    }
    std::fill(plane + (h + pad) * wp, plane + hp * wp, int16_t{0});
  }
}

// Packs low-resolution positions [p0, p0 + nr) (flattened Y * w + X; those >= h*w are zero) of the
// phase's im2col into panel [kpairs][nr][2]. Positions of one row are contiguous in the padded
// input, so the panel is filled run by run, both taps of a pair in one loop (vectorisable).
// Only pairs [pp0, pp1) are written (pp1 < 0: to the end), so several threads can pack one panel.
void pack_panel(const int16_t* xp, const Geometry& g, const Phase& ph, int64_t p0, int nr,
                int16_t* panel, int64_t pp0 = 0, int64_t pp1 = -1) {
  if (pp1 < 0) pp1 = ph.kpairs;
  struct Run {
    int j0, len;
    int64_t base;
  };
  Run runs[kMaxNR];
  int n_runs = 0, valid = 0;
  for (int j = 0; j < nr; ++j) {
    const int64_t p = p0 + j;
    if (p >= g.h * g.w) break;
    const int64_t base = (p / g.w + g.pad + ph.ey0) * g.wp + (p % g.w) + g.pad + ph.ex0;
    if (n_runs > 0 && runs[n_runs - 1].base + runs[n_runs - 1].len == base) {
      ++runs[n_runs - 1].len;
    } else {
      runs[n_runs++] = Run{j, 1, base};
    }
    valid = j + 1;
  }
  const int64_t kk = ph.ke_y * ph.ke_x, K = g.ci * kk, plane = g.hp * g.wp;
  auto tap = [&](int64_t kidx) {
    const int64_t i = kidx / kk, t = kidx % kk;
    return xp + i * plane + (t / ph.ke_x) * g.wp + (t % ph.ke_x);
  };
  for (int64_t pp = pp0; pp < pp1; ++pp) {
    int16_t* dst = panel + pp * nr * 2;
    const int16_t* s0 = tap(2 * pp);
    if (2 * pp + 1 < K) {
      const int16_t* s1 = tap(2 * pp + 1);
      for (int r = 0; r < n_runs; ++r) {
        const int16_t* a0 = s0 + runs[r].base;
        const int16_t* a1 = s1 + runs[r].base;
        int16_t* d = dst + 2 * runs[r].j0;
        for (int t = 0; t < runs[r].len; ++t) {
          d[2 * t] = a0[t];
          d[2 * t + 1] = a1[t];
        }
      }
    } else {  // odd K: the last pair's second tap is zero
      for (int r = 0; r < n_runs; ++r) {
        const int16_t* a0 = s0 + runs[r].base;
        int16_t* d = dst + 2 * runs[r].j0;
        for (int t = 0; t < runs[r].len; ++t) {
          d[2 * t] = a0[t];
          d[2 * t + 1] = 0;
        }
      }
    }
    std::fill(dst + 2 * valid, dst + 2 * nr, int16_t{0});
  }
}

// Whether every row's aligned windows of `len` pairs keep ACT_MAX * sum(|w0| + |w1|) <= INT32_MAX.
bool windows_fit(const Phase& ph, int64_t co, int64_t len) {
  for (int64_t o = 0; o < co; ++o) {
    const int32_t* row = ph.wpair.data() + o * ph.kpairs;
    for (int64_t s0 = 0; s0 < ph.kpairs; s0 += len) {
      int64_t sum = 0;
      for (int64_t pp = s0; pp < std::min(ph.kpairs, s0 + len); ++pp) {
        const int32_t w0 = static_cast<int16_t>(row[pp] & 0xffff);
        const int32_t w1 = static_cast<int16_t>(static_cast<uint32_t>(row[pp]) >> 16);
        sum += (w0 < 0 ? -w0 : w0) + (w1 < 0 ? -w1 : w1);
      }
      if (sum * ACT_MAX > INT32_MAX) return false;
    }
  }
  return true;
}

// floor(v / up) for up in {1, 2} and any sign.
inline int64_t floor_div(int64_t v, int64_t up) { return v >= 0 ? v / up : -((-v + up - 1) / up); }

// Geometry of phase (dy, dx); the weights are filled by fill_phase_weights.
Phase make_phase(int64_t ci, int64_t k, int64_t up, int64_t dy, int64_t dx) {
  const int64_t r = k / 2;
  Phase ph;
  ph.dy = dy;
  ph.dx = dx;
  ph.ey0 = floor_div(dy - r, up);
  ph.ex0 = floor_div(dx - r, up);
  ph.ke_y = floor_div(dy + k - 1 - r, up) - ph.ey0 + 1;
  ph.ke_x = floor_div(dx + k - 1 - r, up) - ph.ex0 + 1;
  ph.kpairs = (ci * ph.ke_y * ph.ke_x + 1) / 2;
  ph.chunk = kChunkPairs;
  return ph;
}

// Effective weights of output channels [o0, o1) of a phase as int16 pairs; returns their largest
// magnitude. |w_eff| <= 127 * (taps merged) <= 127 * 4 for up = 2 (two taps per dimension at
// most), so int16 holds them.
int64_t fill_phase_weights(const int32_t* weight, int64_t ci, int64_t k, int64_t up, Phase& ph,
                           int64_t o0, int64_t o1) {
  const int64_t r = k / 2, kk = ph.ke_y * ph.ke_x, K = ci * kk;
  int64_t ey_of[64], ex_of[64];  // k <= 63: ci * k * k <= 2^20 allows larger k only with ci tiny
  std::vector<int64_t> ey_big, ex_big;
  int64_t* eyk = ey_of;
  int64_t* exk = ex_of;
  if (k > 64) {
    ey_big.resize(static_cast<size_t>(k));
    ex_big.resize(static_cast<size_t>(k));
    eyk = ey_big.data();
    exk = ex_big.data();
  }
  for (int64_t t = 0; t < k; ++t) {
    eyk[t] = floor_div(ph.dy + t - r, up) - ph.ey0;
    exk[t] = floor_div(ph.dx + t - r, up) - ph.ex0;
  }
  std::vector<int32_t> eff(static_cast<size_t>(K));
  int64_t maxw = 0;
  for (int64_t o = o0; o < o1; ++o) {
    std::fill(eff.begin(), eff.end(), 0);
    for (int64_t i = 0; i < ci; ++i) {
      const int32_t* wi = weight + (o * ci + i) * k * k;
      int32_t* ei = eff.data() + i * kk;
      for (int64_t ky = 0; ky < k; ++ky)
        for (int64_t kx = 0; kx < k; ++kx) ei[eyk[ky] * ph.ke_x + exk[kx]] += wi[ky * k + kx];
    }
    int32_t* dst = ph.wpair.data() + o * ph.kpairs;
    for (int64_t pp = 0; pp < ph.kpairs; ++pp) {
      const int32_t w0 = eff[static_cast<size_t>(2 * pp)];
      const int32_t w1 = 2 * pp + 1 < K ? eff[static_cast<size_t>(2 * pp + 1)] : 0;
      maxw = std::max<int64_t>(maxw, std::max(w0 < 0 ? -w0 : w0, w1 < 0 ? -w1 : w1));
      dst[pp] = static_cast<int32_t>((static_cast<uint32_t>(static_cast<uint16_t>(w0))) |
                                     (static_cast<uint32_t>(static_cast<uint16_t>(w1)) << 16));
    }
  }
  return maxw;
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
    case Impl::kAmx:
      return amx_available();
  }
  return false;
}

void pad_clamped(const int16_t* a, int64_t ci, int64_t h, int64_t w, int64_t pad, int16_t* xp) {
  pad_clamped_t(a, ci, h, w, pad, xp);
}
void pad_clamped(const int32_t* a, int64_t ci, int64_t h, int64_t w, int64_t pad, int16_t* xp) {
  pad_clamped_t(a, ci, h, w, pad, xp);
}
void pad_clamped(const int64_t* a, int64_t ci, int64_t h, int64_t w, int64_t pad, int16_t* xp) {
  pad_clamped_t(a, ci, h, w, pad, xp);
}

std::shared_ptr<PreparedConv> prepare_conv(const int32_t* weight, int64_t co, int64_t ci, int64_t k,
                                           int64_t up, int threads) {
  if (up != 1 && up != 2) throw std::invalid_argument("up must be 1 or 2");
  threads = resolve_threads(threads);
  auto prep = std::make_shared<PreparedConv>();
  prep->co = co;
  prep->ci = ci;
  prep->k = k;
  prep->up = up;
  prep->co_pad = (co + kMR - 1) / kMR * kMR;
  std::vector<Phase>& phases = prep->phases;
  for (int64_t dy = 0; dy < up; ++dy)
    for (int64_t dx = 0; dx < up; ++dx) phases.push_back(make_phase(ci, k, up, dy, dx));
  const int64_t n_phases = static_cast<int64_t>(phases.size());
  // Effective weights, in parallel over (phase, block of channels).
  constexpr int64_t kPrepBlocks = 8;
  std::vector<int64_t> maxw(static_cast<size_t>(n_phases * kPrepBlocks), 0);
  for (auto& ph : phases) ph.wpair.assign(static_cast<size_t>(prep->co_pad * ph.kpairs), 0);
  parallel_for(n_phases * kPrepBlocks, threads, [&](int64_t task) {
    const int64_t ip = task / kPrepBlocks, bk = task % kPrepBlocks;
    const int64_t per = (co + kPrepBlocks - 1) / kPrepBlocks;
    const int64_t o0 = std::min(co, bk * per), o1 = std::min(co, o0 + per);
    maxw[static_cast<size_t>(task)] =
        fill_phase_weights(weight, ci, k, up, phases[static_cast<size_t>(ip)], o0, o1);
  });
  for (int64_t ip = 0; ip < n_phases; ++ip) {
    Phase& ph = phases[static_cast<size_t>(ip)];
    int64_t mw = 0;
    for (int64_t bk = 0; bk < kPrepBlocks; ++bk) mw = std::max(mw, maxw[static_cast<size_t>(ip * kPrepBlocks + bk)]);
    // Pairs per exact int32 chunk. Always valid: a pair adds at most 2 * mw * ACT_MAX in
    // magnitude. Often longer: a lane's partial sum over pairs [s0, s0 + L) is bounded by
    // ACT_MAX * sum(|w0| + |w1|) over those pairs of its row, so any L whose aligned windows all
    // stay within INT32_MAX in every row is exact too (merged weights of up = 2 reach ~4 * 127,
    // but their sums are far below the worst case; fewer chunks = fewer int64 flushes).
    ph.chunk = mw == 0 ? kChunkPairs : std::min<int64_t>(kChunkPairs, INT32_MAX / (2 * mw * ACT_MAX));
    for (int64_t cand = std::min(kChunkPairs, kSlicePairs); cand > ph.chunk; cand /= 2) {
      if (windows_fit(ph, co, cand)) {
        ph.chunk = cand;
        break;
      }
    }
  }
  // The same weights as AMX tiles where the AMX kernel runs (and is the default).
  if (amx_available()) {
    parallel_for(n_phases, threads, [&](int64_t ip) { amx_prepare_phase(phases[static_cast<size_t>(ip)], ci, co); });
  }
  return prep;
}

void conv_requant(const int32_t* a, int64_t n, int64_t ci, int64_t h, int64_t w,
                  const int32_t* weight, int64_t co, int64_t k,
                  const int64_t* bias, const int64_t* mult, const int64_t* shift,
                  int64_t up, int64_t lo, int64_t hi, int32_t* out, int threads, Impl impl) {
  const auto prep = prepare_conv(weight, co, ci, k, up, threads);
  conv_requant_prepared(*prep, a, n, h, w, bias, mult, shift, lo, hi, out, threads, impl);
}

void conv_requant_prepared(const PreparedConv& prep, const int32_t* a, int64_t n, int64_t h, int64_t w,
                           const int64_t* bias, const int64_t* mult, const int64_t* shift,
                           int64_t lo, int64_t hi, int32_t* out, int threads, Impl impl,
                           const ScaleIndexer* index, int64_t index_channels) {
  if (n <= 0 || h <= 0 || w <= 0) return;  // empty output: nothing to compute
  const int64_t pad = prep.k / 2, hp = h + 2 * pad, wp = w + 2 * pad;
  const int64_t HW = h * prep.up * w * prep.up;
  std::vector<int16_t> xp(static_cast<size_t>(prep.ci * hp * wp));
  for (int64_t b = 0; b < n; ++b) {
    {
      SODEC_PROFILE(kPad);
      pad_clamped(a + b * prep.ci * h * w, prep.ci, h, w, pad, xp.data());
    }
    OutView view;
    view.base0 = out + b * prep.co * HW;
    view.split = prep.co;
    view.chan_stride = HW;
    view.row_stride = w * prep.up;
    conv_requant_padded(prep, xp.data(), h, w, bias, mult, shift, lo, hi, view, threads, impl, index,
                        index_channels);
  }
}

void conv_requant_padded(const PreparedConv& prep, const int16_t* xp, int64_t h, int64_t w,
                         const int64_t* bias, const int64_t* mult, const int64_t* shift, int64_t lo,
                         int64_t hi, const OutView& out, int threads, Impl impl,
                         const ScaleIndexer* index, int64_t index_channels) {
  SODEC_PROFILE(kCall);
  if (index == nullptr) index_channels = 0;
  if (resolve(impl) == Impl::kAmx) {
    return conv_amx(prep, xp, h, w, bias, mult, shift, lo, hi, out, threads, index, index_channels);
  }
  const KernelChoice kc = choose(impl);
  const StoreIsa store_isa = store_isa_for(impl);
  const int nr = kc.nr;
  const int64_t ci = prep.ci, co = prep.co, k = prep.k, up = prep.up, co_pad = prep.co_pad;
  threads = resolve_threads(threads);
  Geometry g{};
  g.ci = ci;
  g.h = h;
  g.w = w;
  g.pad = k / 2;  // covers every phase's offsets: |ey0|, ey0 + ke_y - 1 <= ceil(r / up) <= r
  g.hp = h + 2 * g.pad;
  g.wp = w + 2 * g.pad;
  g.up = up;
  g.H = h * up;
  g.W = w * up;
  const int64_t hw = h * w;
  const std::vector<Phase>& phases = prep.phases;
  const int64_t n_phases = static_cast<int64_t>(phases.size());
  if (hw <= 0) return;  // empty output: nothing to compute (and no task to size)
  const int64_t n_panels = (hw + nr - 1) / nr;
  // Channel blocks: whole rows of MR; split the channels when there are too few panels to keep
  // every thread busy (small early layers).
  const int64_t mr_groups = co_pad / kMR;
  const int64_t units = n_panels * n_phases;
  int64_t blocks = 1;
  const int64_t want = 4 * static_cast<int64_t>(threads);
  if (units < want) blocks = std::min(mr_groups, (want + units - 1) / units);
  const int64_t groups_per_block = (mr_groups + blocks - 1) / blocks;
  blocks = (mr_groups + groups_per_block - 1) / groups_per_block;

  // With channel blocks (a small layer: fewer than 4 units per thread), every unit's panel is
  // packed once, up front, and read by all its blocks; units < 4 * threads bounds this buffer.
  std::vector<int64_t> panel_at;
  std::vector<int16_t> shared;
  if (blocks > 1) {
    panel_at.resize(static_cast<size_t>(units + 1), 0);
    for (int64_t u = 0; u < units; ++u) {
      panel_at[static_cast<size_t>(u + 1)] =
          panel_at[static_cast<size_t>(u)] + phases[static_cast<size_t>(u / n_panels)].kpairs * nr * 2;
    }
    shared.resize(static_cast<size_t>(panel_at.back()));
    // Each panel in kPackSplit ranges of pairs (a small layer may have a single unit).
    constexpr int64_t kPackSplit = 4;
    parallel_for(units * kPackSplit, threads, [&](int64_t task) {
      const int64_t unit = task / kPackSplit, part = task % kPackSplit;
      const Phase& ph = phases[static_cast<size_t>(unit / n_panels)];
      const int64_t per = (ph.kpairs + kPackSplit - 1) / kPackSplit;
      const int64_t pp0 = std::min(ph.kpairs, part * per), pp1 = std::min(ph.kpairs, pp0 + per);
      if (pp0 < pp1) {
        SODEC_PROFILE(kPack);
        pack_panel(xp, g, ph, (unit % n_panels) * nr, nr, shared.data() + panel_at[static_cast<size_t>(unit)],
                   pp0, pp1);
      }
    });
  }
  parallel_for(units * blocks, threads, [&](int64_t task) {
    const int64_t blk = task % blocks, unit = task / blocks;
    // Units are phase-major: consecutive tasks share a phase's weights (kept in L2).
    const Phase& ph = phases[static_cast<size_t>(unit / n_panels)];
    const int64_t p0 = (unit % n_panels) * nr;
    // Per-thread scratch, reused across tasks and calls: allocating (and page-faulting) a fresh
    // panel and accumulator block per task cost more than a small layer's arithmetic.
    int16_t* panel = nullptr;
    if (blocks > 1) {
      panel = shared.data() + panel_at[static_cast<size_t>(unit)];
    } else {
      SODEC_PROFILE(kPack);
      panel = scratch_panel(static_cast<size_t>(ph.kpairs * nr * 2));
      pack_panel(xp, g, ph, p0, nr, panel);
    }
    const int64_t g0 = blk * groups_per_block, g1 = std::min(mr_groups, g0 + groups_per_block);
    int64_t* acc = scratch_acc(static_cast<size_t>((g1 - g0) * kMR * nr));
    // K in slices of at most kSlicePairs (and one exact int32 chunk): the panel's slice stays
    // in L1 while every channel group of the block passes over it.
    const int64_t slice = std::min(kSlicePairs, ph.chunk);
    {
      SODEC_PROFILE(kGemm);
      for (int64_t s0 = 0; s0 < ph.kpairs; s0 += slice) {
        const int64_t len = std::min(slice, ph.kpairs - s0);
        const int16_t* bslice = panel + s0 * nr * 2;
        for (int64_t grp = g0; grp < g1; ++grp) {
          kc.fn(ph.wpair.data() + grp * kMR * ph.kpairs + s0, ph.kpairs, bslice, len,
                acc + (grp - g0) * kMR * nr);
        }
      }
    }
    SODEC_PROFILE(kStore);
    // The panel's positions as runs along output rows (no division per element below).
    StoreRun runs[kMaxNR];
    int n_runs = 0;
    const int64_t cnt = std::min<int64_t>(nr, hw - p0);
    for (int64_t j = 0; j < cnt;) {
      const int64_t p = p0 + j, Y = p / w, X = p % w;
      const int len = static_cast<int>(std::min<int64_t>(cnt - j, w - X));
      runs[n_runs++] = StoreRun{static_cast<int>(j), len, (up * Y + ph.dy) * out.row_stride + up * X + ph.dx};
      j += len;
    }
    store_block(store_isa, acc, nr, g0 * kMR, std::min(co, g1 * kMR), runs, n_runs, up, bias, mult, shift, lo, hi,
                index, index_channels, out);
  });
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

// Thresholds spanning at most this many values use a lookup table (256 KiB of uint8 at most; the
// default scale table spans 28..65536 on the 2^-8 grid).
constexpr int64_t kMaxLutRange = int64_t{1} << 18;

#ifdef COD_FAST_X86
__attribute__((target_clones("avx512f", "avx2", "default")))
#endif
void lookup_counts(const int32_t* s, size_t count, int32_t t_lo, int64_t range, const uint8_t* lut,
                   int32_t always, int32_t* out) {
  for (size_t j = 0; j < count; ++j) {
    // lut has range + 2 entries: [0] for v <= t_lo (0), [range + 1] for v > t_hi (all); the
    // clamped index makes the loop branch-free (a gather when vectorised). int64: no overflow.
    int64_t i = static_cast<int64_t>(s[j]) - t_lo;
    i = i < 0 ? 0 : i > range + 1 ? range + 1 : i;
    out[j] = always + lut[i];
  }
}

}  // namespace

std::shared_ptr<ScaleIndexer> prepare_scale_index(const int64_t* thresholds, size_t n_thresholds,
                                                  bool with_lut) {
  auto idx = std::make_shared<ScaleIndexer>();
  idx->mid.reserve(n_thresholds);
  for (size_t k = 0; k < n_thresholds; ++k) {
    if (thresholds[k] < INT32_MIN) {
      ++idx->always;
    } else if (thresholds[k] < INT32_MAX) {
      idx->mid.push_back(static_cast<int32_t>(thresholds[k]));
    }
  }
  const std::vector<int32_t>& mid = idx->mid;
  if (with_lut && !mid.empty() && mid.size() <= 255 &&
      static_cast<int64_t>(mid.back()) - mid.front() <= kMaxLutRange) {
    // lut[i] = #{k : t_lo + i > T[k]} for i in [0, range + 1], range = t_hi - t_lo: i = 0 counts
    // nothing (v <= t_lo), i = range + 1 everything (v > t_hi). The thresholds are sorted, so one
    // merge pass builds it.
    idx->has_lut = true;
    idx->t_lo = mid.front();
    idx->range = static_cast<int64_t>(mid.back()) - idx->t_lo;
    idx->lut.assign(static_cast<size_t>(idx->range + 2) + ScaleIndexer::kLutPad, 0);
    size_t k = 0;
    for (int64_t i = 0; i <= idx->range + 1; ++i) {
      while (k < mid.size() && mid[k] < idx->t_lo + i) ++k;
      idx->lut[static_cast<size_t>(i)] = static_cast<uint8_t>(k);  // k <= mid.size() <= 255
    }
  }
  return idx;
}

void scale_index(const int32_t* s, size_t count, const int64_t* thresholds, size_t n_thresholds,
                 int32_t* out) {
  const auto idx = prepare_scale_index(thresholds, n_thresholds, count >= 4096);
  if (idx->has_lut) {
    lookup_counts(s, count, idx->t_lo, idx->range, idx->lut.data(), idx->always, out);
    return;
  }
  // Small inputs or wide thresholds: every threshold over blocks of elements small enough for L1.
  std::fill(out, out + count, idx->always);
  constexpr size_t kBlock = 2048;
  for (size_t j0 = 0; j0 < count; j0 += kBlock) {
    count_above(s + j0, std::min(kBlock, count - j0), idx->mid.data(), idx->mid.size(), out + j0);
  }
}

}  // namespace cod_fast::sodec
