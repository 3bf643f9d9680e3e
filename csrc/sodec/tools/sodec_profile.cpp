// Phase profile of the SODEC fixed-point entropy parameters on a real parameter set (dumped by
// bench/sodec_profile_dump.py): per layer and for the whole network, the wall time of each call
// (min and median over reps) and, when built with COD_FAST_SODEC_PROFILE, the CPU time of each
// section (pad, pack, GEMM, store, ...) summed over threads, per call.
// Usage: sodec_profile PARAMS.bin [THREADS=0] [REPS=200] [IMPL=auto]
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <functional>
#include <stdexcept>
#include <string>
#include <vector>

#include "sodec/entropy_plan.hpp"
#include "sodec/int_params.hpp"
#include "sodec/profile.hpp"

using namespace cod_fast::sodec;

namespace {

struct Layer {
  int64_t co, ci, k, up, lo, hi;
  std::vector<int32_t> w;
  std::vector<int64_t> bias, mult, shift;
};

template <class T>
void read(std::ifstream& f, T* p, size_t n) {
  f.read(reinterpret_cast<char*>(p), static_cast<std::streamsize>(n * sizeof(T)));
  if (!f) throw std::runtime_error("truncated parameter file");
}

double now() { return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count(); }

#ifdef COD_FAST_SODEC_PROFILE
double tsc_hz() {
  const double t0 = now();
  const uint64_t c0 = __rdtsc();
  while (now() - t0 < 0.05) {
  }
  return static_cast<double>(__rdtsc() - c0) / (now() - t0);
}
#endif

// Per rep: wall seconds and, with COD_FAST_SODEC_PROFILE, each section's TSC cycles.
struct Rep {
  double wall;
  uint64_t cyc[16];
};

template <class Fn>
Rep time_one(const Fn& fn) {
  Rep r{};
#ifdef COD_FAST_SODEC_PROFILE
  for (int s = 0; s < profile::kSections; ++s) profile::counter(s).store(0);
#endif
  const double t0 = now();
  fn();
  r.wall = now() - t0;
#ifdef COD_FAST_SODEC_PROFILE
  for (int s = 0; s < profile::kSections; ++s) r.cyc[s] = profile::counter(s).load();
#endif
  return r;
}

// Medians over reps (robust to the preemptions of a loaded machine, unlike means).
void report(const char* name, std::vector<Rep>& t) {
  std::vector<double> v;
  for (auto& r : t) v.push_back(r.wall);
  std::sort(v.begin(), v.end());
  std::printf("%-30s wall min %7.3f ms  median %7.3f ms\n", name, 1e3 * v.front(), 1e3 * v[v.size() / 2]);
#ifdef COD_FAST_SODEC_PROFILE
  static const double hz = tsc_hz();
  for (int s = 0; s < profile::kSections; ++s) {
    std::vector<uint64_t> c;
    for (auto& r : t) c.push_back(r.cyc[s]);
    std::sort(c.begin(), c.end());
    if (c.back()) {
      std::printf("    %-22s CPU per call: min %7.3f ms  median %7.3f ms\n", profile::kNames[s],
                  1e3 * static_cast<double>(c.front()) / hz, 1e3 * static_cast<double>(c[c.size() / 2]) / hz);
    }
  }
#endif
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2) {
    std::fprintf(stderr, "usage: %s PARAMS.bin [THREADS] [REPS] [IMPL]\n", argv[0]);
    return 2;
  }
  const int threads = argc > 2 ? std::atoi(argv[2]) : 0;
  const int reps = argc > 3 ? std::atoi(argv[3]) : 200;
  const std::string impl_name = argc > 4 ? argv[4] : "auto";
  const Impl impl = impl_name == "portable" ? Impl::kPortable : impl_name == "avx2" ? Impl::kAvx2
                    : impl_name == "avx512" ? Impl::kAvx512 : impl_name == "amx" ? Impl::kAmx : Impl::kAuto;
  std::ifstream f(argv[1], std::ios::binary);
  int64_t head[3];
  read(f, head, 3);
  std::vector<Layer> layers(static_cast<size_t>(head[0]));
  for (auto& L : layers) {
    int64_t m[6];
    read(f, m, 6);
    L.co = m[0], L.ci = m[1], L.k = m[2], L.up = m[3], L.lo = m[4], L.hi = m[5];
    L.w.resize(static_cast<size_t>(L.co * L.ci * L.k * L.k));
    read(f, L.w.data(), L.w.size());
    for (auto* v : {&L.bias, &L.mult, &L.shift}) {
      v->resize(static_cast<size_t>(L.co));
      read(f, v->data(), v->size());
    }
  }
  const int64_t n_ch = head[1];
  std::vector<int64_t> thr(static_cast<size_t>(head[2]));
  read(f, thr.data(), thr.size());
  int64_t zs[4];
  read(f, zs, 4);
  std::vector<int32_t> z(static_cast<size_t>(zs[0] * zs[1] * zs[2] * zs[3]));
  read(f, z.data(), z.size());

  std::vector<std::shared_ptr<PreparedConv>> preps;
  for (auto& L : layers) preps.push_back(prepare_conv(L.w.data(), L.co, L.ci, L.k, L.up, threads));
  const auto indexer = prepare_scale_index(thr.data(), thr.size());
  // Per-layer inputs and outputs.
  std::vector<std::vector<int32_t>> act(layers.size() + 1);
  std::vector<int64_t> hs(layers.size() + 1), ws(layers.size() + 1);
  act[0] = z;
  hs[0] = zs[2], ws[0] = zs[3];
  for (size_t l = 0; l < layers.size(); ++l) {
    hs[l + 1] = hs[l] * layers[l].up, ws[l + 1] = ws[l] * layers[l].up;
    act[l + 1].resize(static_cast<size_t>(zs[0] * layers[l].co * hs[l + 1] * ws[l + 1]));
  }
  auto run_layer = [&](size_t l) {
    const Layer& L = layers[l];
    const bool last = l + 1 == layers.size();
    conv_requant_prepared(*preps[l], act[l].data(), zs[0], hs[l], ws[l], L.bias.data(), L.mult.data(),
                          L.shift.data(), L.lo, L.hi, act[l + 1].data(), threads, impl,
                          last ? indexer.get() : nullptr, last ? n_ch : 0);
  };
  for (int r = 0; r < 5; ++r)
    for (size_t l = 0; l < layers.size(); ++l) run_layer(l);
  for (size_t l = 0; l < layers.size(); ++l) {
    std::vector<Rep> t;
    for (int r = 0; r < reps; ++r) t.push_back(time_one([&] { run_layer(l); }));
    char name[64];
    std::snprintf(name, sizeof name, "layer %zu (%ld->%ld, up %ld)", l, (long)layers[l].ci, (long)layers[l].co,
                  (long)layers[l].up);
    report(name, t);
  }
  std::vector<Rep> t;
  for (int r = 0; r < reps; ++r)
    t.push_back(time_one([&] {
      for (size_t l = 0; l < layers.size(); ++l) run_layer(l);
    }));
  report("all layers, back to back", t);
#ifndef SODEC_PROFILE_OLD_API
  // The fused entry point (entropy_plan.cpp): one call, prepared plan.
  std::vector<EntropyLayer> els;
  for (size_t l = 0; l < layers.size(); ++l) {
    EntropyLayer e;
    e.prep = preps[l];
    e.bias = layers[l].bias;
    e.mult = layers[l].mult;
    e.shift = layers[l].shift;
    e.lo = layers[l].lo;
    e.hi = layers[l].hi;
    els.push_back(std::move(e));
  }
  const auto plan = make_entropy_plan(std::move(els), indexer, n_ch);
  const int64_t H = hs.back(), W = ws.back();
  std::vector<int32_t> idx(static_cast<size_t>(zs[0] * n_ch * H * W)), means(idx.size());
  auto fused = [&] {
    entropy_parameters(*plan, z.data(), ZType::kInt32, zs[0], zs[2], zs[3], idx.data(), means.data(), threads, impl);
  };
  for (int r = 0; r < 5; ++r) fused();
  // Same integers as the layer by layer path.
  for (int64_t b = 0; b < zs[0]; ++b)
    for (int64_t o = 0; o < 2 * n_ch; ++o)
      for (int64_t j = 0; j < H * W; ++j) {
        const int32_t want = act.back()[static_cast<size_t>((b * 2 * n_ch + o) * H * W + j)];
        const int32_t got = (o < n_ch ? idx : means)[static_cast<size_t>((b * n_ch + o % n_ch) * H * W + j)];
        if (want != got) {
          std::fprintf(stderr, "fused path differs at b %ld o %ld j %ld\n", (long)b, (long)o, (long)j);
          return 1;
        }
      }
  t.clear();
  for (int r = 0; r < reps; ++r) t.push_back(time_one(fused));
  report("fused entropy_parameters", t);
#endif
  return 0;
}
