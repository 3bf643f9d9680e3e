// SODEC fixed-point layer and scale index (see int_params.hpp for the spec and the bounds).
#include "sodec/int_params.hpp"

#include <algorithm>
#include <vector>

namespace cod_fast::sodec {

void conv_requant(const int32_t* a, int64_t n, int64_t ci, int64_t h, int64_t w,
                  const int32_t* weight, int64_t co, int64_t k,
                  const int64_t* bias, const int64_t* mult, const int64_t* shift,
                  int64_t up, int64_t lo, int64_t hi, int32_t* out) {
  const int64_t H = h * up, W = w * up, r = k / 2;
  std::vector<int64_t> acc(static_cast<size_t>(H * W));
  for (int64_t b = 0; b < n; ++b) {
    for (int64_t o = 0; o < co; ++o) {
      std::fill(acc.begin(), acc.end(), bias[o]);
      for (int64_t i = 0; i < ci; ++i) {
        const int32_t* plane = a + (b * ci + i) * h * w;
        for (int64_t ky = 0; ky < k; ++ky) {
          for (int64_t kx = 0; kx < k; ++kx) {
            const int64_t wv = weight[((o * ci + i) * k + ky) * k + kx];
            if (wv == 0) continue;  // exact: a zero tap adds nothing
            // Output rows/cols whose tap (y + ky - r, x + kx - r) lies inside the upsampled map;
            // the rest read the zero padding.
            const int64_t y0 = std::max<int64_t>(0, r - ky), y1 = std::min<int64_t>(H, H + r - ky);
            const int64_t x0 = std::max<int64_t>(0, r - kx), x1 = std::min<int64_t>(W, W + r - kx);
            for (int64_t y = y0; y < y1; ++y) {
              const int32_t* row = plane + ((y + ky - r) / up) * w;  // index >= 0: plain division
              int64_t* dst = acc.data() + y * W;
              for (int64_t x = x0; x < x1; ++x) dst[x] += wv * row[(x + kx - r) / up];
            }
          }
        }
      }
      const int64_t m = mult[o];
      const int s = static_cast<int>(shift[o]);
      const int64_t half = int64_t{1} << (s - 1);  // shift >= 1
      int32_t* dst = out + (b * co + o) * H * W;
      for (int64_t p = 0; p < H * W; ++p) {
        const int64_t q = floor_shift(acc[p] * m + half, s);
        dst[p] = static_cast<int32_t>(std::clamp(q, lo, hi));  // lo, hi are int32 values
      }
    }
  }
}

void scale_index(const int32_t* s, size_t count, const int64_t* thresholds, size_t n_thresholds,
                 int32_t* out) {
  for (size_t j = 0; j < count; ++j) {
    // lower_bound: first threshold >= s, i.e. the number of thresholds strictly below s.
    const int64_t v = s[j];
    out[j] = static_cast<int32_t>(std::lower_bound(thresholds, thresholds + n_thresholds, v) - thresholds);
  }
}

}  // namespace cod_fast::sodec
