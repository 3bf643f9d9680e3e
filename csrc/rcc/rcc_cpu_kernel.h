// The CPU hot loop of the encoder: log-weights <z_k, mu> for a range of candidates of one chunk.
// Written as fixed-width lane loops (8 Philox instances = 32 normals at a time) that the compiler
// vectorises; included by rcc_kernel_generic.cpp (baseline ISA) and rcc_kernel_avx2.cpp
// (-mavx2, no FMA), which give the function different names. Everything here has internal
// linkage, so the two copies never meet at link time.
//
// Bit-exactness invariant: each lane performs exactly the operations of rcc::normal_from_u32 and
// of the canonical dot-product order documented in rcc_math.h; vectorisation only changes how many
// lanes run at once, never the operations of a lane (no FMA: -ffp-contract=off and no -mfma).
#pragma once

#include <stdint.h>

#include "rcc/rcc_math.h"

namespace {

constexpr int kLanes = 8;                   // Philox instances per block
constexpr int kBlockDims = 4 * kLanes;      // = rcc::kDotLanes = 32 dimensions per block
static_assert(kBlockDims == rcc::kDotLanes, "a block must cover the 32 canonical accumulators");

// mu_lay holds the chunk's mu in "lane layout": for block b, mu_lay[32 b + 8 w + l] is the mu of
// dimension 32 b + 4 l + w (Philox instance l of the block, output word w), zero past the chunk.
// out[k - k_begin] receives the folded dot product of candidate k.
static void log_weights_impl(const float* mu_lay, int64_t n_blocks, uint32_t k_begin,
                             uint32_t k_end, uint32_t key0, uint32_t key1, uint32_t step,
                             uint32_t stream, float* out) {
  // Round keys are the same for every block: precompute them.
  uint32_t rk0[10], rk1[10];
  rk0[0] = key0;
  rk1[0] = key1;
  for (int r = 1; r < 10; ++r) {
    rk0[r] = rk0[r - 1] + rcc::kPhiloxW0;
    rk1[r] = rk1[r - 1] + rcc::kPhiloxW1;
  }
  for (uint32_t k = k_begin; k < k_end; ++k) {
    float acc[kBlockDims];  // acc[8 w + l] accumulates dimension residue 4 l + w (mod 32)
    for (int i = 0; i < kBlockDims; ++i) acc[i] = 0.0f;
    for (int64_t b = 0; b < n_blocks; ++b) {
      uint32_t x0[kLanes], x1[kLanes], x2[kLanes], x3[kLanes];
      for (int l = 0; l < kLanes; ++l) {
        x0[l] = (uint32_t)(b * kLanes + l);  // c0 = j / 4 (< 2^30 since dim < 2^31)
        x1[l] = k;
        x2[l] = step;
        x3[l] = stream;
      }
      for (int r = 0; r < 10; ++r) {
        for (int l = 0; l < kLanes; ++l) {
          const uint64_t p0 = (uint64_t)rcc::kPhiloxM0 * x0[l];
          const uint64_t p1 = (uint64_t)rcc::kPhiloxM1 * x2[l];
          const uint32_t n0 = (uint32_t)(p1 >> 32) ^ x1[l] ^ rk0[r];
          const uint32_t n2 = (uint32_t)(p0 >> 32) ^ x3[l] ^ rk1[r];
          x1[l] = (uint32_t)p1;
          x3[l] = (uint32_t)p0;
          x0[l] = n0;
          x2[l] = n2;
        }
      }
      uint32_t rw[kBlockDims];
      for (int l = 0; l < kLanes; ++l) {
        rw[0 * kLanes + l] = x0[l];
        rw[1 * kLanes + l] = x1[l];
        rw[2 * kLanes + l] = x2[l];
        rw[3 * kLanes + l] = x3[l];
      }
      float t[kBlockDims], w[kBlockDims], p[kBlockDims];
      for (int i = 0; i < kBlockDims; ++i) {
        t[i] = rcc::uniform_open0_closed1(rw[i]);
        w[i] = rcc::normal_w(t[i]);
        p[i] = rcc::erfinv_central(w[i]);
      }
      // The tail branch (w >= 5, probability 0.34% per draw) is patched lane by lane.
      for (int i = 0; i < kBlockDims; ++i) {
        if (!(w[i] < rcc::kTailW)) p[i] = rcc::erfinv_tail(w[i]);
      }
      const float* m = mu_lay + b * kBlockDims;
      for (int i = 0; i < kBlockDims; ++i) {
        const float z = rcc::normal_finish(p[i], t[i], rw[i]);
        acc[i] = acc[i] + z * m[i];
      }
    }
    // Canonical fold over dimension residues: canon[4 l + w] = acc[8 w + l].
    float canon[kBlockDims];
    for (int l = 0; l < kLanes; ++l)
      for (int w = 0; w < 4; ++w) canon[4 * l + w] = acc[w * kLanes + l];
    for (int h = kBlockDims / 2; h >= 1; h /= 2)
      for (int i = 0; i < h; ++i) canon[i] = canon[i] + canon[i + h];
    out[k - k_begin] = canon[0];
  }
}

}  // namespace
