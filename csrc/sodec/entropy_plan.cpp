// The whole integer hyper synthesis in one call (see entropy_plan.hpp).
#include "sodec/entropy_plan.hpp"

#include <algorithm>
#include <stdexcept>
#include <utility>

#include "sodec/profile.hpp"

namespace cod_fast::sodec {

namespace {

// This thread's ping-pong buffers for the padded int16 activations (contents unspecified), grown
// on demand and kept for the thread's life: allocating and page-faulting them per call cost more
// than the small layers.
int16_t* activation_buffer(int which, size_t n) {
  thread_local std::vector<int16_t> buf[2];
  std::vector<int16_t>& b = buf[which];
  if (b.size() < n) b.resize(n);
  return b.data();
}

// Zeroes the pad-wide border of every channel of a [c][h + 2 pad][w + 2 pad] buffer.
void zero_borders(int16_t* xp, int64_t c, int64_t h, int64_t w, int64_t pad) {
  if (pad == 0) return;
  const int64_t hp = h + 2 * pad, wp = w + 2 * pad;
  for (int64_t i = 0; i < c; ++i) {
    int16_t* plane = xp + i * hp * wp;
    std::fill(plane, plane + pad * wp, int16_t{0});
    for (int64_t y = pad; y < pad + h; ++y) {
      std::fill(plane + y * wp, plane + y * wp + pad, int16_t{0});
      std::fill(plane + y * wp + pad + w, plane + (y + 1) * wp, int16_t{0});
    }
    std::fill(plane + (pad + h) * wp, plane + hp * wp, int16_t{0});
  }
}

}  // namespace

std::shared_ptr<EntropyPlan> make_entropy_plan(std::vector<EntropyLayer> layers,
                                               std::shared_ptr<ScaleIndexer> index, int64_t n_channels) {
  if (layers.empty()) throw std::invalid_argument("at least one layer is needed");
  if (!index) throw std::invalid_argument("a scale index is needed");
  for (size_t l = 0; l < layers.size(); ++l) {
    const EntropyLayer& L = layers[l];
    if (!L.prep) throw std::invalid_argument("layer without prepared weights");
    const auto co = static_cast<size_t>(L.prep->co);
    if (L.bias.size() != co || L.mult.size() != co || L.shift.size() != co) {
      throw std::invalid_argument("bias, mult and shift must have one entry per output channel");
    }
    if (L.lo > L.hi || L.lo < INT32_MIN || L.hi > INT32_MAX) throw std::invalid_argument("clamp must be an int32 interval");
    if (l + 1 < layers.size()) {
      if (L.lo < -ACT_MAX || L.hi > ACT_MAX) throw std::invalid_argument("hidden layers must clamp into int16 range");
      if (layers[l + 1].prep->ci != L.prep->co) throw std::invalid_argument("layer channels do not chain");
    }
  }
  if (n_channels < 1 || layers.back().prep->co != 2 * n_channels) {
    throw std::invalid_argument("the last layer must output 2 * n_channels channels");
  }
  auto plan = std::make_shared<EntropyPlan>();
  plan->layers = std::move(layers);
  plan->index = std::move(index);
  plan->n_channels = n_channels;
  return plan;
}

void entropy_parameters(const EntropyPlan& plan, const void* z, ZType zt, int64_t n, int64_t h, int64_t w,
                        int32_t* indexes, int32_t* means, int threads, Impl impl) {
  if (n <= 0 || h <= 0 || w <= 0) return;
  const int64_t ci0 = plan.in_channels(), m = plan.n_channels, f = plan.upsampling();
  const int64_t HW = h * f * w * f;
  const size_t n_layers = plan.layers.size();
  for (int64_t b = 0; b < n; ++b) {
    // Layer 0's padded input, straight from z's dtype.
    int64_t ch = h, cw = w;
    const int64_t pad = plan.layers[0].prep->k / 2;
    int16_t* cur = activation_buffer(0, static_cast<size_t>(ci0 * (h + 2 * pad) * (w + 2 * pad)));
    {
      SODEC_PROFILE(kPad);
      const int64_t off = b * ci0 * h * w;
      switch (zt) {
        case ZType::kInt16: pad_clamped(static_cast<const int16_t*>(z) + off, ci0, h, w, pad, cur); break;
        case ZType::kInt32: pad_clamped(static_cast<const int32_t*>(z) + off, ci0, h, w, pad, cur); break;
        case ZType::kInt64: pad_clamped(static_cast<const int64_t*>(z) + off, ci0, h, w, pad, cur); break;
      }
    }
    for (size_t l = 0; l < n_layers; ++l) {
      const EntropyLayer& L = plan.layers[l];
      const PreparedConv& prep = *L.prep;
      const int64_t H = ch * prep.up, W = cw * prep.up;
      OutView view;
      int16_t* next = nullptr;
      int64_t next_pad = 0;
      if (l + 1 < n_layers) {  // int16 straight into the next layer's padded input
        next_pad = plan.layers[l + 1].prep->k / 2;
        const int64_t hp = H + 2 * next_pad, wp = W + 2 * next_pad;
        next = activation_buffer(static_cast<int>((l + 1) % 2), static_cast<size_t>(prep.co * hp * wp));
        zero_borders(next, prep.co, H, W, next_pad);
        view.base0 = next + next_pad * wp + next_pad;
        view.split = prep.co;
        view.chan_stride = hp * wp;
        view.row_stride = wp;
        view.i16 = true;
      } else if (indexes != nullptr) {  // scale indexes and means, each [n][M][H][W]
        view.base0 = indexes + b * m * HW;
        view.base1 = means + b * m * HW;
        view.split = m;
        view.chan_stride = HW;
        view.row_stride = W;
      } else {  // the raw head [n][2M][H][W]
        view.base0 = means + b * 2 * m * HW;
        view.split = 2 * m;
        view.chan_stride = HW;
        view.row_stride = W;
      }
      const bool fuse_index = l + 1 == n_layers && indexes != nullptr;
      conv_requant_padded(prep, cur, ch, cw, L.bias.data(), L.mult.data(), L.shift.data(), L.lo, L.hi, view,
                          threads, impl, fuse_index ? plan.index.get() : nullptr, fuse_index ? m : 0);
      cur = next;
      ch = H;
      cw = W;
    }
  }
}

}  // namespace cod_fast::sodec
