// SODEC's whole integer hyper synthesis in one native call (spec: cod_fast/int_params/reference.py):
// z -> layer 0 -> ... -> layer L-1 -> (scale index of the first M channels, mean codes of the
// others). Weights are prepared once (EntropyPlan); a call pads z straight from its own dtype
// (int16, int32 or int64, clamped to [-32767, 32767] as the spec's check_z does; no widening copy),
// stores every hidden layer's requantised output as int16 directly into the next layer's zero-
// padded input, and the last layer's into the two output planes (indexes through the scale index,
// fused into the store). Plain C++, no Python: the bindings validate every argument.
#pragma once

#include <cstdint>
#include <memory>
#include <vector>

#include "sodec/int_params.hpp"

namespace cod_fast::sodec {

struct EntropyLayer {
  std::shared_ptr<PreparedConv> prep;
  std::vector<int64_t> bias, mult, shift;  // [prep->co] each, within the spec's bounds
  int64_t lo = 0, hi = 0;                  // hidden layers: within [-ACT_MAX, ACT_MAX]
};

struct EntropyPlan {
  std::vector<EntropyLayer> layers;     // layer l + 1 takes layer l's channels; the last has 2M
  std::shared_ptr<ScaleIndexer> index;  // the thresholds of the scale index
  int64_t n_channels = 0;               // M

  int64_t in_channels() const { return layers.front().prep->ci; }
  int64_t upsampling() const {
    int64_t f = 1;
    for (const auto& l : layers) f *= l.prep->up;
    return f;
  }
};

// Throws std::invalid_argument unless the layers chain (channels, hidden clamps within int16
// range, last layer 2 * n_channels outputs) and an index is given. The bounds of each layer's
// values (weights, bias, mult, shift) are the caller's to check (the bindings do).
std::shared_ptr<EntropyPlan> make_entropy_plan(std::vector<EntropyLayer> layers,
                                               std::shared_ptr<ScaleIndexer> index, int64_t n_channels);

enum class ZType { kInt16, kInt32, kInt64 };

// z: [n][plan.in_channels()][h][w] of type zt (any values: clamped to [-ACT_MAX, ACT_MAX]). With
// F = plan.upsampling(), H = h * F, W = w * F:
//  * indexes != nullptr: indexes [n][M][H][W] and means [n][M][H][W] (int32), the spec's
//    entropy_parameters_reference;
//  * indexes == nullptr: head [n][2M][H][W] (int32, written to `means`), the last layer's raw
//    output before the scale index (entropy_head).
// threads: <= 0 one per CPU; impl: the GEMM kernel (every kernel gives the same integers).
void entropy_parameters(const EntropyPlan& plan, const void* z, ZType zt, int64_t n, int64_t h, int64_t w,
                        int32_t* indexes, int32_t* means, int threads = 0, Impl impl = Impl::kAuto);

}  // namespace cod_fast::sodec
