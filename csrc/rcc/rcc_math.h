// Shared randomness for reverse-channel coding: Philox4x32-10, the uniform construction, a
// deterministic natural logarithm, the standard-normal and Exp(1) transforms, and the score key
// used for the segmented argmin. Header-only; compiled by the host C++ compiler and by nvcc.
//
// Determinism invariant: every floating-point value below is produced by a fixed sequence of
// IEEE-754 binary32 operations that are correctly rounded (+, -, *, sqrt, int->float conversion
// with round-to-nearest-even) and by exact bit manipulation. No operation may be contracted into
// an FMA: the host build uses -ffp-contract=off, and device code goes through the explicit
// __fadd_rn/__fmul_rn/__fsqrt_rn intrinsics (which nvcc never contracts). The plain-torch port in
// cod_fast/rcc/reference.py performs the same operations in the same order, so all backends
// produce the same bits.
#pragma once

#include <stdint.h>
#if !defined(__CUDACC__)
#include <cmath>
#include <cstring>
#endif

#if defined(__CUDACC__)
#define RCC_HD __host__ __device__ __forceinline__
#else
// static: internal linkage, so that translation units compiled for different ISAs (baseline and
// -mavx2) never share an out-of-line copy through the linker.
#define RCC_HD static inline
#endif

namespace rcc {

// ---- Philox4x32-10 (Salmon et al. 2011; Random123's constants) --------------------------------
constexpr uint32_t kPhiloxM0 = 0xD2511F53u;
constexpr uint32_t kPhiloxM1 = 0xCD9E8D57u;
constexpr uint32_t kPhiloxW0 = 0x9E3779B9u;
constexpr uint32_t kPhiloxW1 = 0xBB67AE85u;

// Key and counter layout shared by every backend:
//   key     = (seed & 0xffffffff, seed >> 32)
//   counter = (c0, c1, step, stream), where (c1:c0) is a 64-bit counter inside the stream.
// Candidate normals of chunk `c`: stream = c, c1 = candidate index k, c0 = j / 4, word j % 4 gives
// dimension j of the candidate. Arrival times of chunk `c`: stream = c, c1 = kArrivalCounterHi,
// c0 = k / 4, word k % 4. The dimension shuffle of a step: stream = kShuffleStream, c1 = 0.
constexpr uint32_t kArrivalCounterHi = 0xFFFFFFFFu;  // never a candidate index (k < 2^16)
constexpr uint32_t kShuffleStream = 0xFFFFFFFFu;     // never a chunk index (chunks < dim < 2^31)

RCC_HD void philox_mulhilo(uint32_t a, uint32_t b, uint32_t& hi, uint32_t& lo) {
  const uint64_t p = (uint64_t)a * (uint64_t)b;
  hi = (uint32_t)(p >> 32);
  lo = (uint32_t)p;
}

// One Philox4x32-10 block: 10 rounds, key bumped between rounds.
RCC_HD void philox4x32_10(uint32_t c0, uint32_t c1, uint32_t c2, uint32_t c3, uint32_t k0,
                          uint32_t k1, uint32_t out[4]) {
  for (int r = 0; r < 10; ++r) {
    if (r > 0) {
      k0 += kPhiloxW0;
      k1 += kPhiloxW1;
    }
    uint32_t hi0, lo0, hi1, lo1;
    philox_mulhilo(kPhiloxM0, c0, hi0, lo0);
    philox_mulhilo(kPhiloxM1, c2, hi1, lo1);
    const uint32_t n0 = hi1 ^ c1 ^ k0;
    const uint32_t n2 = hi0 ^ c3 ^ k1;
    c0 = n0;
    c1 = lo1;
    c2 = n2;
    c3 = lo0;
  }
  out[0] = c0;
  out[1] = c1;
  out[2] = c2;
  out[3] = c3;
}

// ---- correctly rounded binary32 primitives ------------------------------------------------------
RCC_HD float f_add(float a, float b) {
#if defined(__CUDA_ARCH__)
  return __fadd_rn(a, b);
#else
  return a + b;
#endif
}
RCC_HD float f_sub(float a, float b) {
#if defined(__CUDA_ARCH__)
  return __fsub_rn(a, b);
#else
  return a - b;
#endif
}
RCC_HD float f_mul(float a, float b) {
#if defined(__CUDA_ARCH__)
  return __fmul_rn(a, b);
#else
  return a * b;
#endif
}
RCC_HD float f_sqrt(float a) {
#if defined(__CUDA_ARCH__)
  return __fsqrt_rn(a);
#else
  return std::sqrt(a);
#endif
}
// int32 -> float, round to nearest even (exact for |i| < 2^24).
RCC_HD float f_from_i32(int32_t i) {
#if defined(__CUDA_ARCH__)
  return __int2float_rn(i);
#else
  return (float)i;
#endif
}
RCC_HD uint32_t f_bits(float f) {
#if defined(__CUDA_ARCH__)
  return __float_as_uint(f);
#else
  uint32_t u;
  std::memcpy(&u, &f, 4);
  return u;
#endif
}
RCC_HD float f_from_bits(uint32_t u) {
#if defined(__CUDA_ARCH__)
  return __uint_as_float(u);
#else
  float f;
  std::memcpy(&f, &u, 4);
  return f;
#endif
}

// ---- uniform construction -------------------------------------------------------------------
// From a 32-bit word r: m = (r >> 1) | 1 (odd, 1 .. 2^31-1), t = float(m) * 2^-31 in (0, 1]
// (the int->float conversion rounds to nearest even; the scaling by 2^-31 is exact). Bit 0 of r
// is the sign used by the normal transform. t is never 0, so log(t) is always finite.
constexpr float kTwoPowMinus31 = 4.656612873077392578125e-10f;  // 2^-31, exact

RCC_HD float uniform_open0_closed1(uint32_t r) {
  return f_mul(f_from_i32((int32_t)((r >> 1) | 1u)), kTwoPowMinus31);
}

// ---- natural log for positive normal binary32 inputs ------------------------------------------
// a = 2^e * m with m in [sqrt(1/2), sqrt(2)) found by exact integer operations on the bits; then
// log(a) = f + (f^3 P(f) - f^2/2) + e*ln2 with f = m - 1 (exact by Sterbenz's lemma), P a
// degree-8 minimax polynomial (the coefficients of Cephes' logf) and ln2 split in two parts.
// Accuracy: within 2 ulp of log(a) for the inputs used here (2^-31 <= a <= 2^53); the point is
// not the accuracy but that the result is the same fixed sequence of correctly rounded operations
// on every backend.
RCC_HD float log_pos(float a) {
  const uint32_t ia = f_bits(a);
  // Arithmetic shift of a signed difference: e = floor((bits(a) - bits(sqrt(1/2))) / 2^23).
  const int32_t e = ((int32_t)(ia - 0x3F3504F3u)) >> 23;
  const float m = f_from_bits(ia - ((uint32_t)e << 23));
  const float f = f_sub(m, 1.0f);
  const float ef = f_from_i32(e);
  const float z = f_mul(f, f);
  float p = 7.0376836292e-2f;
  p = f_add(f_mul(p, f), -1.1514610310e-1f);
  p = f_add(f_mul(p, f), 1.1676998740e-1f);
  p = f_add(f_mul(p, f), -1.2420140846e-1f);
  p = f_add(f_mul(p, f), 1.4249322787e-1f);
  p = f_add(f_mul(p, f), -1.6668057665e-1f);
  p = f_add(f_mul(p, f), 2.0000714765e-1f);
  p = f_add(f_mul(p, f), -2.4999993993e-1f);
  p = f_add(f_mul(p, f), 3.3333331174e-1f);
  float y = f_mul(f_mul(p, f), z);
  y = f_add(y, f_mul(ef, -2.12194440e-4f));
  y = f_sub(y, f_mul(0.5f, z));
  float r = f_add(f, y);
  r = f_add(r, f_mul(ef, 0.693359375f));
  return r;
}

// ---- standard normal via the inverse error function -----------------------------------------
// z = sqrt(2) * erfinv(x), x = +-(1 - t), t = uniform_open0_closed1(r), sign from bit 0 of r.
// erfinv uses Giles' single-precision approximation (M. Giles, "Approximating the erfinv function",
// GPU Computing Gems, 2011): w = -log((1-x)(1+x)) = -log(t (2 - t)); a degree-8 polynomial in
// w - 2.5 when w < 5 (the central 99.66% of draws) and in sqrt(w) - 3 otherwise.
// |z| <= 6.1 (t >= 2^-31); the relative error against the exact inverse CDF of x is below 1e-6
// in the central branch (tests/rcc checks moments and a Kolmogorov-Smirnov statistic).
constexpr float kTailW = 5.0f;
constexpr float kSqrt2 = 1.41421356237309504880f;

RCC_HD float erfinv_central(float w) {  // w < 5
  const float v = f_sub(w, 2.5f);
  float p = 2.81022636e-08f;
  p = f_add(3.43273939e-07f, f_mul(p, v));
  p = f_add(-3.5233877e-06f, f_mul(p, v));
  p = f_add(-4.39150654e-06f, f_mul(p, v));
  p = f_add(0.00021858087f, f_mul(p, v));
  p = f_add(-0.00125372503f, f_mul(p, v));
  p = f_add(-0.00417768164f, f_mul(p, v));
  p = f_add(0.246640727f, f_mul(p, v));
  p = f_add(1.50140941f, f_mul(p, v));
  return p;
}

RCC_HD float erfinv_tail(float w) {  // w >= 5
  const float v = f_sub(f_sqrt(w), 3.0f);
  float p = -0.000200214257f;
  p = f_add(0.000100950558f, f_mul(p, v));
  p = f_add(0.00134934322f, f_mul(p, v));
  p = f_add(-0.00367342844f, f_mul(p, v));
  p = f_add(0.00573950773f, f_mul(p, v));
  p = f_add(-0.0076224613f, f_mul(p, v));
  p = f_add(0.00943887047f, f_mul(p, v));
  p = f_add(1.00167406f, f_mul(p, v));
  p = f_add(2.83297682f, f_mul(p, v));
  return p;
}

// w for the normal transform (shared by the scalar and the lane-parallel code).
RCC_HD float normal_w(float t) { return -log_pos(f_mul(t, f_sub(2.0f, t))); }

// Final step: z = (p * x) * sqrt(2), x = 1 - t with the sign of bit 0 of r (exact sign flip).
RCC_HD float normal_finish(float p, float t, uint32_t r) {
  const float x = f_from_bits(f_bits(f_sub(1.0f, t)) ^ ((r & 1u) << 31));
  return f_mul(f_mul(p, x), kSqrt2);
}

RCC_HD float normal_from_u32(uint32_t r) {
  const float t = uniform_open0_closed1(r);
  const float w = normal_w(t);
  const float p = (w < kTailW) ? erfinv_central(w) : erfinv_tail(w);
  return normal_finish(p, t, r);
}

// ---- arrival times ----------------------------------------------------------------------------
// E = -log(t) ~ Exp(1) (t as above), turned into fixed point with 32 fractional bits by an exact
// scaling and truncation: E_fx = trunc(E * 2^32) < 2^37. The arrival time of candidate k is
// T_k = 1 + sum_{i<=k} E_fx(i), an exact integer (< 2^53 for 2^16 candidates), so its value does
// not depend on the summation order of a backend; log T_k = log_pos(float(double(T_k))) where the
// conversion through double is exact and double->float rounds to nearest even.
RCC_HD uint64_t exp1_fixed(uint32_t r) {
  const float e = f_mul(-log_pos(uniform_open0_closed1(r)), 4294967296.0f);
  // e is a non-negative binary32 value; values >= 2^24 are integers, so truncation is exact.
#if defined(__CUDA_ARCH__)
  return (uint64_t)__float2ull_rz(e);
#else
  return (uint64_t)e;
#endif
}

RCC_HD float log_arrival(uint64_t t_fixed) {
#if defined(__CUDA_ARCH__)
  const float tf = __double2float_rn(__ull2double_rn(t_fixed));
#else
  const float tf = (float)(double)t_fixed;
#endif
  return log_pos(tf);
}

// ---- argmin key ---------------------------------------------------------------------------------
// Maps a finite binary32 score to a uint32 whose unsigned order is the float order (-0 and +0 map
// to adjacent keys; a score is never compared across zero signs in a way that changes the winner
// because both backends compute identical bits). The packed key (order << 32 | k) makes the minimum
// over candidates pick the lowest score and, among equal scores, the lowest index.
RCC_HD uint32_t score_order(float s) {
  const uint32_t u = f_bits(s);
  return (u & 0x80000000u) ? ~u : (u | 0x80000000u);
}
RCC_HD uint64_t pack_score(float s, uint32_t k) {
  return ((uint64_t)score_order(s) << 32) | (uint64_t)k;
}

// The dot product <z_k, mu> is accumulated in a canonical order: 32 binary32 accumulators,
// acc[j % 32] += z_j * mu_j for j = 0, 1, ... over the chunk padded with mu = 0 to a multiple of
// 32 dimensions, then folded by halves (acc[i] += acc[i + h] for h = 16, 8, 4, 2, 1).
constexpr int kDotLanes = 32;

}  // namespace rcc
