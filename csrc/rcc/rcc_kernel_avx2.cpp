// AVX2 instance of the encoder hot loop (same contract as rcc_cpu_kernel.h, written with
// intrinsics). This file alone is compiled with -mavx2 (never -mfma, so nothing can be contracted);
// it is called only after a runtime check that the CPU supports AVX2.
//
// Bit-exactness invariant: every vector operation below is the lane-wise twin of one scalar
// operation of rcc_math.h in the same order (integer ops exact; _mm256_add/sub/mul_ps and
// _mm256_cvtepi32_ps correctly rounded under the default MXCSR, round-to-nearest-even, no FTZ/DAZ
// changes made here). Lanes in the erfinv tail branch are patched with the scalar function.
#include <stdint.h>

#include "rcc/rcc_cpu.h"

#if defined(__AVX2__)
#include <immintrin.h>

#include <vector>

#include "rcc/rcc_math.h"

namespace rcc {
namespace cpu {

namespace {

inline __m256 vmul(__m256 a, __m256 b) { return _mm256_mul_ps(a, b); }
inline __m256 vadd(__m256 a, __m256 b) { return _mm256_add_ps(a, b); }
inline __m256 vsub(__m256 a, __m256 b) { return _mm256_sub_ps(a, b); }
inline __m256 vset(float f) { return _mm256_set1_ps(f); }

// hi and lo 32 bits of m * x for 8 lanes (m broadcast).
inline void mulhilo8(__m256i m, __m256i x, __m256i& hi, __m256i& lo) {
  const __m256i pe = _mm256_mul_epu32(x, m);                         // lanes 0,2,4,6
  const __m256i po = _mm256_mul_epu32(_mm256_srli_epi64(x, 32), m);  // lanes 1,3,5,7
  hi = _mm256_blend_epi32(_mm256_srli_epi64(pe, 32), po, 0xAA);
  lo = _mm256_blend_epi32(pe, _mm256_slli_epi64(po, 32), 0xAA);
}

// The four output words of a Philox block row are transformed together: every step below runs on
// 4 independent vectors, so the long polynomial dependency chains overlap instead of stalling on
// the latency of each multiply and add.
constexpr int kV = 4;  // vectors per Philox block row (words 0..3)

// Rare (0.34% of draws): the lanes with w >= 5 take the scalar tail branch.
__attribute__((noinline)) __m256 patch_tail(__m256 p, __m256 w, int central) {
  alignas(32) float pa[8], wa[8];
  _mm256_store_ps(pa, p);
  _mm256_store_ps(wa, w);
  for (int l = 0; l < 8; ++l)
    if (!((central >> l) & 1)) pa[l] = erfinv_tail(wa[l]);
  return _mm256_load_ps(pa);
}

#define RCC_FOR4(stmt)           \
  for (int q = 0; q < N; ++q) { \
    stmt;                        \
  }

// rcc::log_pos, lane-wise, on 4 vectors.
template <int N>
inline void log_pos8xN(const __m256 a[N], __m256 out[N]) {
  __m256 f[N], ef[N], z[N], p[N];
  RCC_FOR4({
    const __m256i ia = _mm256_castps_si256(a[q]);
    const __m256i e = _mm256_srai_epi32(_mm256_sub_epi32(ia, _mm256_set1_epi32(0x3F3504F3)), 23);
    f[q] = vsub(_mm256_castsi256_ps(_mm256_sub_epi32(ia, _mm256_slli_epi32(e, 23))), vset(1.0f));
    ef[q] = _mm256_cvtepi32_ps(e);
    z[q] = vmul(f[q], f[q]);
    p[q] = vset(7.0376836292e-2f);
  })
  RCC_FOR4(p[q] = vadd(vmul(p[q], f[q]), vset(-1.1514610310e-1f)))
  RCC_FOR4(p[q] = vadd(vmul(p[q], f[q]), vset(1.1676998740e-1f)))
  RCC_FOR4(p[q] = vadd(vmul(p[q], f[q]), vset(-1.2420140846e-1f)))
  RCC_FOR4(p[q] = vadd(vmul(p[q], f[q]), vset(1.4249322787e-1f)))
  RCC_FOR4(p[q] = vadd(vmul(p[q], f[q]), vset(-1.6668057665e-1f)))
  RCC_FOR4(p[q] = vadd(vmul(p[q], f[q]), vset(2.0000714765e-1f)))
  RCC_FOR4(p[q] = vadd(vmul(p[q], f[q]), vset(-2.4999993993e-1f)))
  RCC_FOR4(p[q] = vadd(vmul(p[q], f[q]), vset(3.3333331174e-1f)))
  RCC_FOR4({
    __m256 y = vmul(vmul(p[q], f[q]), z[q]);
    y = vadd(y, vmul(ef[q], vset(-2.12194440e-4f)));
    y = vsub(y, vmul(vset(0.5f), z[q]));
    out[q] = vadd(vadd(f[q], y), vmul(ef[q], vset(0.693359375f)));
  })
}

// rcc::normal_from_u32 for 4 x 8 words, lane-wise.
template <int N>
inline void normal8xN(const __m256i r[N], __m256 zout[N]) {
  const __m256i sign_mask = _mm256_set1_epi32((int)0x80000000u);
  __m256 t[N], a[N], w[N], v[N], p[N];
  RCC_FOR4({
    const __m256i m = _mm256_or_si256(_mm256_srli_epi32(r[q], 1), _mm256_set1_epi32(1));
    t[q] = vmul(_mm256_cvtepi32_ps(m), vset(kTwoPowMinus31));
    a[q] = vmul(t[q], vsub(vset(2.0f), t[q]));
  })
  log_pos8xN<N>(a, w);
  RCC_FOR4({
    // w = -log_pos(t * (2 - t)); the negation is an exact sign flip.
    w[q] = _mm256_xor_ps(w[q], _mm256_castsi256_ps(sign_mask));
    v[q] = vsub(w[q], vset(2.5f));
    p[q] = vset(2.81022636e-08f);
  })
  RCC_FOR4(p[q] = vadd(vset(3.43273939e-07f), vmul(p[q], v[q])))
  RCC_FOR4(p[q] = vadd(vset(-3.5233877e-06f), vmul(p[q], v[q])))
  RCC_FOR4(p[q] = vadd(vset(-4.39150654e-06f), vmul(p[q], v[q])))
  RCC_FOR4(p[q] = vadd(vset(0.00021858087f), vmul(p[q], v[q])))
  RCC_FOR4(p[q] = vadd(vset(-0.00125372503f), vmul(p[q], v[q])))
  RCC_FOR4(p[q] = vadd(vset(-0.00417768164f), vmul(p[q], v[q])))
  RCC_FOR4(p[q] = vadd(vset(0.246640727f), vmul(p[q], v[q])))
  RCC_FOR4(p[q] = vadd(vset(1.50140941f), vmul(p[q], v[q])))
  RCC_FOR4({
    const int central = _mm256_movemask_ps(_mm256_cmp_ps(w[q], vset(kTailW), _CMP_LT_OQ));
    if (central != 0xFF) p[q] = patch_tail(p[q], w[q], central);
    const __m256i sbit = _mm256_slli_epi32(_mm256_and_si256(r[q], _mm256_set1_epi32(1)), 31);
    const __m256 x = _mm256_xor_ps(vsub(vset(1.0f), t[q]), _mm256_castsi256_ps(sbit));
    zout[q] = vmul(vmul(p[q], x), vset(kSqrt2));
  })
}

#undef RCC_FOR4


// Rounds 1..9 of the 8 Philox instances of one block, from the precomputed round-0 state (words
// 2 and 3 per block; words 0 and 1 and round 1's M0 product are the same in every lane).
// Word w of lane l is dimension 32 b + 4 l + w; mu_lay stores it at 32 b + 8 w + l.
inline void philox_row(const uint32_t* r0x2_p, const uint32_t* r0x3_p, const uint32_t rk0[10],
                       const uint32_t rk1[10], uint32_t ls, uint32_t h1s, uint32_t l1s,
                       __m256i out[kV]) {
  const __m256i m0 = _mm256_set1_epi32((int)kPhiloxM0);
  const __m256i m1 = _mm256_set1_epi32((int)kPhiloxM1);
  const __m256i r0x2 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(r0x2_p));
  const __m256i r0x3 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(r0x3_p));
  __m256i hi1, lo1;
  mulhilo8(m1, r0x2, hi1, lo1);
  __m256i x0 = _mm256_xor_si256(hi1, _mm256_set1_epi32((int)(ls ^ rk0[1])));
  __m256i x1 = lo1;
  __m256i x2 = _mm256_xor_si256(r0x3, _mm256_set1_epi32((int)(h1s ^ rk1[1])));
  __m256i x3 = _mm256_set1_epi32((int)l1s);
  for (int r = 2; r < 10; ++r) {
    __m256i h0, l0, h2, l2;
    mulhilo8(m0, x0, h0, l0);
    mulhilo8(m1, x2, h2, l2);
    x0 = _mm256_xor_si256(_mm256_xor_si256(h2, x1), _mm256_set1_epi32((int)rk0[r]));
    x2 = _mm256_xor_si256(_mm256_xor_si256(h0, x3), _mm256_set1_epi32((int)rk1[r]));
    x1 = l2;
    x3 = l0;
  }
  out[0] = x0;
  out[1] = x1;
  out[2] = x2;
  out[3] = x3;
}

}  // namespace

void log_weights_avx2(const float* mu_lay, int64_t n_blocks, uint32_t k_begin, uint32_t k_end,
                      uint32_t key0, uint32_t key1, uint32_t step, uint32_t stream, float* out) {
  uint32_t rk0[10], rk1[10];
  rk0[0] = key0;
  rk1[0] = key1;
  for (int r = 1; r < 10; ++r) {
    rk0[r] = rk0[r - 1] + kPhiloxW0;
    rk1[r] = rk1[r - 1] + kPhiloxW1;
  }
  // Round 0 does not depend on the candidate for words 2 and 3 (they come from c0 = block lane,
  // step and stream), and words 0 and 1 depend only on the candidate: precompute both.
  uint32_t hs, ls;
  philox_mulhilo(kPhiloxM1, step, hs, ls);
  std::vector<uint32_t> r0_x2((size_t)n_blocks * 8), r0_x3((size_t)n_blocks * 8);
  const __m256i m0 = _mm256_set1_epi32((int)kPhiloxM0);
  const __m256i lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
  for (int64_t b = 0; b < n_blocks; ++b) {
    const __m256i c0 = _mm256_add_epi32(_mm256_set1_epi32((int)(uint32_t)(b * 8)), lane);
    __m256i hi, lo;
    mulhilo8(m0, c0, hi, lo);
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(&r0_x2[(size_t)b * 8]),
                        _mm256_xor_si256(hi, _mm256_set1_epi32((int)(stream ^ rk1[0]))));
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(&r0_x3[(size_t)b * 8]), lo);
  }
  for (uint32_t k = k_begin; k < k_end; ++k) {
    // After round 0: x0 = hi(M1*step) ^ k ^ key0, x1 = lo(M1*step): the same in every lane.
    const uint32_t s0 = hs ^ k ^ rk0[0];
    uint32_t h1s, l1s;
    philox_mulhilo(kPhiloxM0, s0, h1s, l1s);  // round 1's M0 * x0, also lane-invariant
    __m256 acc0 = _mm256_setzero_ps(), acc1 = _mm256_setzero_ps();
    __m256 acc2 = _mm256_setzero_ps(), acc3 = _mm256_setzero_ps();
    // Blocks are taken two at a time (8 independent vectors in flight); the accumulation order
    // stays block by block, as the canonical order requires.
    int64_t b = 0;
    for (; b + 2 <= n_blocks; b += 2) {
      __m256i words[2 * kV];
      philox_row(&r0_x2[(size_t)b * 8], &r0_x3[(size_t)b * 8], rk0, rk1, ls, h1s, l1s, words);
      philox_row(&r0_x2[(size_t)(b + 1) * 8], &r0_x3[(size_t)(b + 1) * 8], rk0, rk1, ls, h1s, l1s,
                 words + kV);
      __m256 z[2 * kV];
      normal8xN<2 * kV>(words, z);
      for (int h = 0; h < 2; ++h) {
        const float* m = mu_lay + (b + h) * 32;
        acc0 = vadd(acc0, vmul(z[h * kV + 0], _mm256_loadu_ps(m + 0)));
        acc1 = vadd(acc1, vmul(z[h * kV + 1], _mm256_loadu_ps(m + 8)));
        acc2 = vadd(acc2, vmul(z[h * kV + 2], _mm256_loadu_ps(m + 16)));
        acc3 = vadd(acc3, vmul(z[h * kV + 3], _mm256_loadu_ps(m + 24)));
      }
    }
    if (b < n_blocks) {
      __m256i words[kV];
      philox_row(&r0_x2[(size_t)b * 8], &r0_x3[(size_t)b * 8], rk0, rk1, ls, h1s, l1s, words);
      __m256 z[kV];
      normal8xN<kV>(words, z);
      const float* m = mu_lay + b * 32;
      acc0 = vadd(acc0, vmul(z[0], _mm256_loadu_ps(m + 0)));
      acc1 = vadd(acc1, vmul(z[1], _mm256_loadu_ps(m + 8)));
      acc2 = vadd(acc2, vmul(z[2], _mm256_loadu_ps(m + 16)));
      acc3 = vadd(acc3, vmul(z[3], _mm256_loadu_ps(m + 24)));
    }
    // Canonical fold over dimension residues: canon[4 l + w] = acc_w[l].
    alignas(32) float a[4][8];
    _mm256_store_ps(a[0], acc0);
    _mm256_store_ps(a[1], acc1);
    _mm256_store_ps(a[2], acc2);
    _mm256_store_ps(a[3], acc3);
    float canon[32];
    for (int l = 0; l < 8; ++l)
      for (int w = 0; w < 4; ++w) canon[4 * l + w] = a[w][l];
    for (int h = 16; h >= 1; h /= 2)
      for (int i = 0; i < h; ++i) canon[i] = canon[i] + canon[i + h];
    out[k - k_begin] = canon[0];
  }
}

}  // namespace cpu
}  // namespace rcc

#else  // not an x86 build with -mavx2: avx2_supported() is false there, so this is never selected

namespace rcc {
namespace cpu {

void log_weights_avx2(const float* mu_lay, int64_t n_blocks, uint32_t k_begin, uint32_t k_end,
                      uint32_t key0, uint32_t key1, uint32_t step, uint32_t stream, float* out) {
  log_weights_generic(mu_lay, n_blocks, k_begin, k_end, key0, key1, step, stream, out);
}

}  // namespace cpu
}  // namespace rcc

#endif
