// Optional phase timers of the SODEC fixed-point path (csrc/sodec), for profiling only. Compiled in
// with -DCOD_FAST_SODEC_PROFILE (CMake option COD_FAST_SODEC_PROFILE; never in a release wheel):
// each section adds its TSC cycles, summed over threads, to a process-wide counter that
// tools/sodec_profile.cpp reads and resets. Without the define every macro is empty.
#pragma once

#include <cstdint>

#ifdef COD_FAST_SODEC_PROFILE
#include <atomic>
#include <x86intrin.h>

namespace cod_fast::sodec::profile {

enum Section : int { kPad, kPack, kGemm, kStore, kIndex, kPrologue, kCall, kSections };
inline const char* const kNames[kSections] = {"pad input", "pack panels", "GEMM kernel", "requant store",
                                             "scale index", "prologue", "whole call (wall)"};
inline std::atomic<uint64_t>& counter(int s) {
  static std::atomic<uint64_t> c[kSections];
  return c[s];
}
struct Scope {
  int s;
  uint64_t t0;
  explicit Scope(int section) : s(section), t0(__rdtsc()) {}
  ~Scope() { counter(s).fetch_add(__rdtsc() - t0, std::memory_order_relaxed); }
};

}  // namespace cod_fast::sodec::profile

#define SODEC_PROF_CAT2(a, b) a##b
#define SODEC_PROF_CAT(a, b) SODEC_PROF_CAT2(a, b)
#define SODEC_PROFILE(section) \
  ::cod_fast::sodec::profile::Scope SODEC_PROF_CAT(sodec_prof_, __LINE__)(::cod_fast::sodec::profile::section)
#else
#define SODEC_PROFILE(section) \
  do {                         \
  } while (0)
#endif
