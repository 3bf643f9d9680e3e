// Standalone fuzz driver of the SODEC fixed-point layer (csrc/sodec): random shapes and random,
// extreme and overflow-adjacent values within the spec's bounds (the bounds the Python binding
// enforces), every kernel this CPU runs (portable, AVX2, AVX-512 VNNI; each with its requantising
// store: scalar, AVX2, AVX-512; and AMX-INT8 where the CPU and OS run it, with the int32 chunk
// sometimes shortened to reach its int64 path), 1-4 threads, the scale index with random thresholds, and the
// one-call entry point (entropy_plan.cpp: random networks of 1-3 layers, z as int16/int32/int64
// with values beyond the clamp), each against a naive int64 oracle written from the spec.
// Any mismatch, sanitizer report or crash is a bug. Usage: ./sodec_fuzz SECONDS [SEED]
#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <random>
#include <vector>

#include "common/fuzz_util.hpp"

#include "sodec/amx_conv.hpp"
#include "sodec/entropy_plan.hpp"
#include "sodec/int_params.hpp"

using namespace cod_fast::sodec;

namespace {

using cod_fast::fuzz::pick;

// Values: extremes, zero, small, or uniform in [-mag, mag].
int64_t value(std::mt19937_64& rng, int64_t mag, int mode) {
  switch (mode) {
    case 0: return (rng() & 1) ? mag : -mag;  // overflow-adjacent
    case 1: return mag;                       // one sign
    case 2: return pick(rng, -2, 2);
    default: return pick(rng, -mag, mag);
  }
}

void oracle(const std::vector<int32_t>& a, int64_t n, int64_t ci, int64_t h, int64_t w,
            const std::vector<int32_t>& wt, int64_t co, int64_t k, const std::vector<int64_t>& bias,
            const std::vector<int64_t>& mult, const std::vector<int64_t>& shift, int64_t up, int64_t lo,
            int64_t hi, std::vector<int32_t>& out) {
  const int64_t H = h * up, W = w * up, r = k / 2;
  out.assign(static_cast<size_t>(n * co * H * W), 0);
  for (int64_t b = 0; b < n; ++b)
    for (int64_t o = 0; o < co; ++o)
      for (int64_t y = 0; y < H; ++y)
        for (int64_t x = 0; x < W; ++x) {
          int64_t acc = bias[o];
          for (int64_t i = 0; i < ci; ++i)
            for (int64_t ky = 0; ky < k; ++ky)
              for (int64_t kx = 0; kx < k; ++kx) {
                const int64_t yy = y + ky - r, xx = x + kx - r;
                if (yy < 0 || yy >= H || xx < 0 || xx >= W) continue;
                acc += int64_t{wt[((o * ci + i) * k + ky) * k + kx]} *
                       a[((b * ci + i) * h + yy / up) * w + xx / up];
              }
          const int s = static_cast<int>(shift[o]);
          const int64_t q = floor_shift(acc * mult[o] + (int64_t{1} << (s - 1)), s);
          out[((b * co + o) * H + y) * W + x] = static_cast<int32_t>(std::clamp(q, lo, hi));
        }
}

// Sorted random thresholds: int64 extremes, values next to the int32 edges, small values.
std::vector<int64_t> thresholds(std::mt19937_64& rng) {
  // sometimes more than 255: no uint8 lookup table, binary search
  std::vector<int64_t> t(static_cast<size_t>(pick(rng, 0, rng() % 8 == 0 ? 300 : 80)));
  for (auto& v : t) {
    switch (rng() % 4) {
      case 0: v = pick(rng, -(int64_t{1} << 40), int64_t{1} << 40); break;
      case 1: v = (rng() & 1) ? int64_t{INT32_MAX} + pick(rng, -1, 1) : int64_t{INT32_MIN} + pick(rng, -1, 1); break;
      default: v = pick(rng, -100, 100);
    }
  }
  std::sort(t.begin(), t.end());
  return t;
}

bool run_conv(std::mt19937_64& rng) {
  // The AMX kernel's multi-chunk int64 path with small layers: 1-3 tile steps per int32 chunk.
  amx_chunk_steps().store(rng() % 3 == 0 ? pick(rng, 1, 3) : 1024);
  const int64_t n = pick(rng, rng() % 16 == 0 ? 0 : 1, 2), ci = pick(rng, 1, rng() % 4 == 0 ? 80 : 12);
  const int64_t co = pick(rng, 1, 11), k = 2 * pick(rng, 0, 2) + 1, up = pick(rng, 1, 2);
  // Occasionally an empty batch or plane (the binding accepts them: empty output).
  const int64_t h = pick(rng, rng() % 16 == 0 ? 0 : 1, 7), w = pick(rng, rng() % 16 == 0 ? 0 : 1, 7);
  const int amode = static_cast<int>(rng() % 4), wmode = static_cast<int>(rng() % 4);
  std::vector<int32_t> a(static_cast<size_t>(n * ci * h * w)), wt(static_cast<size_t>(co * ci * k * k));
  const int64_t sign = (rng() & 1) ? 1 : -1;
  for (auto& v : a) v = static_cast<int32_t>(sign * value(rng, ACT_MAX, amode));
  for (auto& v : wt) v = static_cast<int32_t>(value(rng, 127, wmode));
  std::vector<int64_t> bias(co), mult(co), shift(co);
  for (int64_t o = 0; o < co; ++o) {
    bias[o] = value(rng, MAX_ABS_BIAS, static_cast<int>(rng() % 4));
    mult[o] = (rng() & 1) ? MAX_MULT - 1 : pick(rng, 1, MAX_MULT - 1);
    shift[o] = pick(rng, 1, MAX_SHIFT);
  }
  int64_t lo = INT32_MIN, hi = INT32_MAX;
  if (rng() % 3 == 0) {
    lo = 0;
    hi = ACT_MAX;
  } else if (rng() % 3 == 0) {
    lo = pick(rng, INT32_MIN, 0);
    hi = pick(rng, lo, INT32_MAX);
  }
  std::vector<int32_t> want, got(static_cast<size_t>(n * co * h * up * w * up));
  oracle(a, n, ci, h, w, wt, co, k, bias, mult, shift, up, lo, hi, want);
  for (Impl impl : {Impl::kPortable, Impl::kAvx2, Impl::kAvx512, Impl::kAmx, Impl::kAuto}) {
    if (!impl_supported(impl)) continue;
    std::fill(got.begin(), got.end(), 0x5a5a5a5a);
    conv_requant(a.data(), n, ci, h, w, wt.data(), co, k, bias.data(), mult.data(), shift.data(), up, lo,
                 hi, got.data(), static_cast<int>(pick(rng, 1, 4)), impl);
    if (got != want) {
      std::fprintf(stderr, "conv mismatch: impl %d n %ld ci %ld co %ld k %ld up %ld h %ld w %ld\n",
                   static_cast<int>(impl), (long)n, (long)ci, (long)co, (long)k, (long)up, (long)h, (long)w);
      return false;
    }
  }
  // The scale index fused into the store (prepared thresholds; with and without lookup table).
  const std::vector<int64_t> t = thresholds(rng);
  const auto indexer = prepare_scale_index(t.data(), t.size(), (rng() & 1) != 0);
  const int64_t index_channels = pick(rng, 0, co);
  const auto prep = prepare_conv(wt.data(), co, ci, k, up, static_cast<int>(pick(rng, 1, 4)));
  std::fill(got.begin(), got.end(), 0x5a5a5a5a);
  conv_requant_prepared(*prep, a.data(), n, h, w, bias.data(), mult.data(), shift.data(), lo, hi, got.data(),
                        static_cast<int>(pick(rng, 1, 4)), Impl::kAuto, indexer.get(), index_channels);
  const int64_t plane = h * up * w * up;
  for (int64_t b = 0; b < n; ++b)
    for (int64_t o = 0; o < index_channels; ++o)
      for (int64_t j = 0; j < plane; ++j) {
        int32_t& v = want[static_cast<size_t>((b * co + o) * plane + j)];
        int32_t c = 0;
        for (int64_t tq : t) c += v > tq;
        v = c;
      }
  if (got != want) {
    std::fprintf(stderr, "fused scale index mismatch: co %ld index_channels %ld\n", (long)co, (long)index_channels);
    return false;
  }
  return true;
}

bool run_scale_index(std::mt19937_64& rng) {
  const size_t count = static_cast<size_t>(pick(rng, 0, 5000));
  const std::vector<int64_t> t = thresholds(rng);
  const size_t nt = t.size();
  std::vector<int32_t> s(count), out(count);
  for (auto& v : s) v = static_cast<int32_t>((rng() & 1) ? pick(rng, -120, 120) : static_cast<int64_t>(static_cast<int32_t>(rng())));
  scale_index(s.data(), count, t.data(), nt, out.data());
  for (size_t j = 0; j < count; ++j) {
    int32_t c = 0;
    for (size_t q = 0; q < nt; ++q) c += s[j] > t[q];
    if (out[j] != c) {
      std::fprintf(stderr, "scale_index mismatch at %zu\n", j);
      return false;
    }
  }
  return true;
}

// Random layer values within the spec's bounds (overflow-adjacent ones included).
void random_requant(std::mt19937_64& rng, int64_t co, std::vector<int64_t>& bias, std::vector<int64_t>& mult,
                    std::vector<int64_t>& shift) {
  bias.resize(static_cast<size_t>(co));
  mult.resize(static_cast<size_t>(co));
  shift.resize(static_cast<size_t>(co));
  for (int64_t o = 0; o < co; ++o) {
    bias[o] = value(rng, MAX_ABS_BIAS, static_cast<int>(rng() % 4));
    mult[o] = (rng() & 1) ? MAX_MULT - 1 : pick(rng, 1, MAX_MULT - 1);
    // Hidden layers need small shifts now and then, or everything clamps to one end.
    shift[o] = (rng() & 1) ? pick(rng, 1, MAX_SHIFT) : pick(rng, 20, 45);
  }
}

// A random network of 1-3 layers through entropy_parameters (both modes) against the oracle chained
// layer by layer.
bool run_plan(std::mt19937_64& rng) {
  amx_chunk_steps().store(rng() % 3 == 0 ? pick(rng, 1, 3) : 1024);
  const int n_layers = static_cast<int>(pick(rng, 1, 3));
  const int64_t m = pick(rng, 1, 5), cz = pick(rng, 1, rng() % 4 == 0 ? 40 : 9);
  const int64_t n = pick(rng, rng() % 16 == 0 ? 0 : 1, 2);
  const int64_t h = pick(rng, rng() % 16 == 0 ? 0 : 1, 5), w = pick(rng, rng() % 16 == 0 ? 0 : 1, 5);
  std::vector<EntropyLayer> layers;
  struct Raw {
    std::vector<int32_t> wt;
    int64_t ci, co, k, up;
  };
  std::vector<Raw> raw;
  int64_t ci = cz;
  for (int l = 0; l < n_layers; ++l) {
    const bool last = l + 1 == n_layers;
    Raw r;
    r.ci = ci;
    r.co = last ? 2 * m : pick(rng, 1, 11);
    r.k = 2 * pick(rng, 0, 2) + 1;
    r.up = pick(rng, 1, 2);
    r.wt.resize(static_cast<size_t>(r.co * ci * r.k * r.k));
    const int wmode = static_cast<int>(rng() % 4);
    for (auto& v : r.wt) v = static_cast<int32_t>(value(rng, 127, wmode));
    EntropyLayer L;
    L.prep = prepare_conv(r.wt.data(), r.co, ci, r.k, r.up, static_cast<int>(pick(rng, 1, 4)));
    random_requant(rng, r.co, L.bias, L.mult, L.shift);
    if (!last) {  // hidden: [0, 32767], [-32767, 32767] or a random interval inside
      const int kind = static_cast<int>(rng() % 3);
      L.lo = kind == 0 ? 0 : kind == 1 ? -ACT_MAX : pick(rng, -ACT_MAX, ACT_MAX);
      L.hi = kind == 2 ? pick(rng, L.lo, ACT_MAX) : ACT_MAX;
    } else {
      L.lo = (rng() & 1) ? int64_t{INT32_MIN} : pick(rng, INT32_MIN, 0);
      L.hi = (rng() & 1) ? int64_t{INT32_MAX} : pick(rng, L.lo, INT32_MAX);
    }
    layers.push_back(L);
    raw.push_back(std::move(r));
    ci = raw.back().co;
  }
  const std::vector<int64_t> t = thresholds(rng);
  const auto plan = make_entropy_plan(layers, prepare_scale_index(t.data(), t.size()), m);
  // z in one of the three dtypes, values up to the dtype's extremes (the entry point clamps).
  const int zt = static_cast<int>(rng() % 3);
  const size_t zn = static_cast<size_t>(n * cz * h * w);
  std::vector<int16_t> z16(zn);
  std::vector<int32_t> z32(zn);
  std::vector<int64_t> z64(zn);
  std::vector<int32_t> a(zn);  // the clamped z, the oracle's input
  const int64_t zmag = zt == 0 ? INT16_MAX : zt == 1 ? INT32_MAX : INT64_MAX;
  const int zmode = static_cast<int>(rng() % 4);
  for (size_t j = 0; j < zn; ++j) {
    int64_t v = (rng() % 3 == 0) ? value(rng, zmag, zmode) : value(rng, ACT_MAX + 2, zmode);
    if (zt == 0 && (rng() & 1) && v == -INT16_MAX) v = INT16_MIN;  // -32768: clamped to -32767
    if (zt == 1 && (rng() % 8 == 0)) v = INT32_MIN;
    if (zt == 2 && (rng() % 8 == 0)) v = INT64_MIN;
    z16[j] = static_cast<int16_t>(std::clamp<int64_t>(v, INT16_MIN, INT16_MAX));
    z32[j] = static_cast<int32_t>(std::clamp<int64_t>(v, INT32_MIN, INT32_MAX));
    z64[j] = v;
    const int64_t zv = zt == 0 ? z16[j] : zt == 1 ? z32[j] : z64[j];
    a[j] = static_cast<int32_t>(std::clamp<int64_t>(zv, -ACT_MAX, ACT_MAX));
  }
  int64_t ch = h, cw = w;
  std::vector<int32_t> cur = a, next;
  for (int l = 0; l < n_layers; ++l) {
    const Raw& r = raw[static_cast<size_t>(l)];
    const EntropyLayer& L = layers[static_cast<size_t>(l)];
    oracle(cur, n, r.ci, ch, cw, r.wt, r.co, r.k, L.bias, L.mult, L.shift, r.up, L.lo, L.hi, next);
    cur.swap(next);
    ch *= r.up;
    cw *= r.up;
  }
  const int64_t HW = ch * cw;
  std::vector<int32_t> want_idx(static_cast<size_t>(n * m * HW)), want_means(want_idx.size());
  for (int64_t b = 0; b < n; ++b)
    for (int64_t o = 0; o < m; ++o)
      for (int64_t j = 0; j < HW; ++j) {
        const int32_t s = cur[static_cast<size_t>((b * 2 * m + o) * HW + j)];
        int32_t c = 0;
        for (int64_t tq : t) c += s > tq;
        want_idx[static_cast<size_t>((b * m + o) * HW + j)] = c;
        want_means[static_cast<size_t>((b * m + o) * HW + j)] = cur[static_cast<size_t>((b * 2 * m + m + o) * HW + j)];
      }
  const void* zp = zt == 0 ? static_cast<const void*>(z16.data()) : zt == 1 ? static_cast<const void*>(z32.data())
                                                                            : static_cast<const void*>(z64.data());
  const ZType ztype = zt == 0 ? ZType::kInt16 : zt == 1 ? ZType::kInt32 : ZType::kInt64;
  std::vector<int32_t> idx(want_idx.size()), means(want_idx.size()), head(cur.size());
  for (Impl impl : {Impl::kPortable, Impl::kAvx2, Impl::kAvx512, Impl::kAmx, Impl::kAuto}) {
    if (!impl_supported(impl)) continue;
    const int threads = static_cast<int>(pick(rng, 1, 4));
    std::fill(idx.begin(), idx.end(), 0x5a5a5a5a);
    std::fill(means.begin(), means.end(), 0x5a5a5a5a);
    entropy_parameters(*plan, zp, ztype, n, h, w, idx.data(), means.data(), threads, impl);
    std::fill(head.begin(), head.end(), 0x5a5a5a5a);
    entropy_parameters(*plan, zp, ztype, n, h, w, nullptr, head.data(), threads, impl);
    if (idx != want_idx || means != want_means || head != cur) {
      std::fprintf(stderr, "entropy_parameters mismatch: impl %d layers %d cz %ld m %ld n %ld h %ld w %ld z type %d\n",
                   static_cast<int>(impl), n_layers, (long)cz, (long)m, (long)n, (long)h, (long)w, zt);
      return false;
    }
  }
  return true;
}

}  // namespace

int main(int argc, char** argv) {
  const long runs = cod_fast::fuzz::run_for(argc, argv, [](std::mt19937_64& rng) {
    return run_conv(rng) && run_scale_index(rng) && run_plan(rng);
  });
  if (runs < 0) return 1;
  std::printf("sodec_fuzz: %ld random layers (every kernel), scale indexes and one-call networks matched the oracle\n",
              runs);
  return 0;
}
