// SODEC fixed-point entropy parameters (spec: cod_fast/models/sodec/integer_params.py and
// docs/sodec_integer_params.md). Plain C++, no Python: the bindings validate every argument
// against the spec's bounds before calling these functions.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <vector>

namespace cod_fast::sodec {

// Spec bounds the overflow proof relies on: |a| <= ACT_MAX, |w| <= 127, K = CI*k*k <= MAX_REDUCTION,
// |bias| <= MAX_ABS_BIAS, 1 <= mult < MAX_MULT, 1 <= shift <= MAX_SHIFT. Then |acc| < 2^43,
// |acc * mult| < 2^58 and |acc * mult + 2^(shift-1)| < 2^63: no int64 overflow.
constexpr int64_t ACT_MAX = (1 << 15) - 1;
constexpr int64_t MAX_REDUCTION = int64_t{1} << 20;
constexpr int64_t MAX_ABS_BIAS = int64_t{1} << 40;
constexpr int64_t MAX_MULT = int64_t{1} << 15;
constexpr int64_t MAX_SHIFT = 62;

// floor(v / 2^s) for 0 <= s <= 62 without relying on >> of a negative value (implementation-
// defined before C++20). Requires v > INT64_MIN (true under the bounds above).
inline int64_t floor_shift(int64_t v, int s) {
  return v >= 0 ? (v >> s) : -(((-v) - 1) >> s) - 1;
}

// One IntegerConv layer. a: [n, ci, h, w] activations (|a| <= ACT_MAX); weight: [co, ci, k, k];
// bias, mult, shift: [co]; out: [n, co, h*up, w*up]. All row-major contiguous.
// out = clamp(floor((acc * mult + 2^(shift-1)) / 2^shift), lo, hi) with
// acc = bias + sum_{i,ky,kx} weight * a_up(zero padded), a_up the nearest upsampling of a by up.
// Computed as a blocked int16 x int16 -> int32 (chunked) -> int64 GEMM (int_params.cpp), on up to
// `threads` threads (<= 0: one per CPU), with the kernel `impl` (kAuto: the best this CPU runs).
// Every kernel gives the same integers. Throws std::invalid_argument for an unsupported impl.
// kAmx: Intel AMX-INT8 tiles (amx_conv.cpp; needs the OS's permission, requested on first use).
enum class Impl { kAuto, kPortable, kAvx2, kAvx512, kAmx };
bool impl_supported(Impl impl);
void conv_requant(const int32_t* a, int64_t n, int64_t ci, int64_t h, int64_t w,
                  const int32_t* weight, int64_t co, int64_t k,
                  const int64_t* bias, const int64_t* mult, const int64_t* shift,
                  int64_t up, int64_t lo, int64_t hi, int32_t* out, int threads = 0,
                  Impl impl = Impl::kAuto);

// One phase of the layer. With nearest upsampling by `up`, output (up*Y + dy, up*X + dx) reads
// the low-resolution input only at rows Y + ey0 + ey (ey < ke_y) and columns X + ex0 + ex: the
// taps of the k x k kernel that land on the same input pixel are summed into one effective weight
// (exact integer algebra: sum_t w_t * a = (sum_t w_t) * a), so the GEMM runs on the low-resolution
// grid with K = ci * ke_y * ke_x (for k = 3, up = 2: 4 * ci instead of 9 * ci). up = 1 is a single
// phase with the kernel itself.
// Bytes at a 64-byte aligned address (AMX tile rows are whole cache lines; a tile load from a
// misaligned row splits every row over two lines and ran 3x slower). Copyable: the aligned start
// is recomputed from the storage on every access.
class Aligned64Bytes {
 public:
  void assign(size_t n) {
    raw_.assign(n + 63, 0);
    size_ = n;
  }
  size_t size() const { return size_; }
  int8_t* data() { return raw_.data() + pad(raw_.data()); }
  const int8_t* data() const { return raw_.data() + pad(raw_.data()); }

 private:
  static size_t pad(const int8_t* p) { return (64 - reinterpret_cast<uintptr_t>(p) % 64) % 64; }
  std::vector<int8_t> raw_;
  size_t size_ = 0;
};

struct Phase {
  // (dy, dx): output phase; (ey0, ex0): first input offset; ke_y x ke_x: effective kernel;
  // chunk: pairs per exact int32 partial sum (from the largest effective weight).
  int64_t dy, dx, ey0, ex0, ke_y, ke_x, kpairs, chunk;
  std::vector<int32_t> wpair;  // [co_pad][kpairs] int16 pairs
  // The same effective weights as AMX tiles (filled by prepare_conv where AMX runs, see
  // amx_conv.cpp): taps in cell-major order (t, i), K padded to ksteps * 64, each weight split
  // w = 256 * hi + lo with lo in [-128, 127] and hi in [-2, 2]; [row block of 16][kstep][16][64].
  int64_t amx_ksteps = 0;
  Aligned64Bytes amx_lo, amx_hi;
  std::vector<uint8_t> amx_hi_used;  // [row block][kstep]: 0 when that hi tile is all zero
};

// The scale-index rule out = #{t : s > thresholds[t]} (thresholds sorted non-decreasing) prepared
// once: thresholds below INT32_MIN always count, those >= INT32_MAX never; the rest compare as
// int32, through a lookup table when they span at most 2^18 values.
struct ScaleIndexer {
  int32_t always = 0;          // thresholds below INT32_MIN
  std::vector<int32_t> mid;    // the others below INT32_MAX, as int32, sorted
  // lut[i] = #{t in mid : t_lo + i > t} for i in [0, range + 1]; uint8 (a quarter of int32's
  // cache footprint: 64 KiB for the default table), so only when mid has at most 255 entries.
  // Followed by kLutPad bytes of padding, so that a SIMD 4-byte gather at any index stays inside.
  bool has_lut = false;
  int32_t t_lo = 0;
  int64_t range = 0;
  std::vector<uint8_t> lut;
  static constexpr size_t kLutPad = 3;
  // #{t : s > thresholds[t]}.
  int32_t index(int32_t s) const {
    if (has_lut) {
      int64_t i = static_cast<int64_t>(s) - t_lo;  // int64: no overflow
      i = i < 0 ? 0 : i > range + 1 ? range + 1 : i;
      return always + lut[static_cast<size_t>(i)];
    }
    size_t lo = 0, hi = mid.size();  // first t with mid[t] >= s
    while (lo < hi) {
      const size_t m = (lo + hi) / 2;
      if (mid[m] < s) lo = m + 1; else hi = m;
    }
    return always + static_cast<int32_t>(lo);
  }
};
// with_lut = false skips the table (building it costs more than indexing a few thousand values).
std::shared_ptr<ScaleIndexer> prepare_scale_index(const int64_t* thresholds, size_t n_thresholds,
                                                  bool with_lut = true);

// A layer's weights prepared for conv_requant_prepared (the effective weights of every phase as
// int16 pairs): computing them costs about as much as the layer on a small grid, so callers that
// run the same layer repeatedly prepare it once.
struct PreparedConv {
  int64_t co = 0, ci = 0, k = 0, up = 1, co_pad = 0;
  std::vector<Phase> phases;
};
std::shared_ptr<PreparedConv> prepare_conv(const int32_t* weight, int64_t co, int64_t ci, int64_t k,
                                           int64_t up, int threads = 0);
// conv_requant with prepared weights; a: [n, prep.ci, h, w], out: [n, prep.co, h*up, w*up].
void conv_requant_prepared(const PreparedConv& prep, const int32_t* a, int64_t n, int64_t h, int64_t w,
                           const int64_t* bias, const int64_t* mult, const int64_t* shift,
                           int64_t lo, int64_t hi, int32_t* out, int threads = 0,
                           Impl impl = Impl::kAuto, const ScaleIndexer* index = nullptr,
                           int64_t index_channels = 0);
// With `index`, output channels o < index_channels hold index->index(value) instead of the value
// (the scale index fused into the store: one pass over the output instead of two).

// Where a layer writes its output: channel o < split at base0 + o * chan_stride, channel o >= split
// at base1 + (o - split) * chan_stride; output row Y of a channel starts row_stride elements after
// row Y - 1. Elements are int16_t when i16 (exact: hidden layers clamp into int16 range), else
// int32_t. A plain [CO, H, W] output is {out, nullptr, CO, H * W, W, false}; the next layer's zero-
// padded int16 input, or the head split into scale and mean planes, are views too.
struct OutView {
  void* base0 = nullptr;
  void* base1 = nullptr;
  int64_t split = 0;
  int64_t chan_stride = 0, row_stride = 0;
  bool i16 = false;
};

// One image of the layer on an already zero-padded int16 input xp [prep.ci][h + 2p][w + 2p] with
// p = prep.k / 2 (|values| <= ACT_MAX), output through `out`; otherwise as conv_requant_prepared.
void conv_requant_padded(const PreparedConv& prep, const int16_t* xp, int64_t h, int64_t w,
                         const int64_t* bias, const int64_t* mult, const int64_t* shift, int64_t lo,
                         int64_t hi, const OutView& out, int threads, Impl impl,
                         const ScaleIndexer* index, int64_t index_channels);

// Zero-padded (by pad) copy of one image a [ci][h][w] as int16 [ci][h + 2 pad][w + 2 pad], every
// value clamped to [-ACT_MAX, ACT_MAX] (the spec's clamp of z; a no-op on checked activations).
void pad_clamped(const int16_t* a, int64_t ci, int64_t h, int64_t w, int64_t pad, int16_t* xp);
void pad_clamped(const int32_t* a, int64_t ci, int64_t h, int64_t w, int64_t pad, int16_t* xp);
void pad_clamped(const int64_t* a, int64_t ci, int64_t h, int64_t w, int64_t pad, int16_t* xp);

// out[j] = #{t : s[j] > thresholds[t]} (thresholds sorted non-decreasing).
void scale_index(const int32_t* s, size_t count, const int64_t* thresholds, size_t n_thresholds,
                 int32_t* out);

}  // namespace cod_fast::sodec
