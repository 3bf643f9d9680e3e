// Self-test of the shared worker pool (csrc/common/parallel.hpp): every job runs exactly once,
// job exceptions (bad_alloc included) come back on the caller after the join, the lowest failing
// job wins, and a failed thread creation ends in ThreadStartError instead of std::terminate.
// Run by tools/asan.sh under AddressSanitizer + UBSan (and ThreadSanitizer-clean by design).
#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <new>
#include <stdexcept>
#include <vector>

#include "common/parallel.hpp"

namespace {

int failures = 0;

void check(bool ok, const char* what) {
  if (!ok) {
    std::fprintf(stderr, "FAIL: %s\n", what);
    ++failures;
  }
}

}  // namespace

int main() {
  using cod_fast::parallel_for;
  // Every job exactly once, for several thread counts (more threads than jobs included).
  for (int threads : {1, 2, 3, 8, 64}) {
    for (int64_t count : {0, 1, 5, 1000}) {
      std::vector<std::atomic<int>> hits(static_cast<size_t>(count));
      parallel_for(count, threads, [&](int64_t k) { hits[static_cast<size_t>(k)].fetch_add(1); });
      bool ok = true;
      for (auto& h : hits) ok = ok && h.load() == 1;
      check(ok, "every job runs exactly once");
    }
  }
  // The lowest failing job's exception is rethrown after the join.
  for (int threads : {1, 4}) {
    try {
      parallel_for(100, threads, [&](int64_t k) {
        if (k == 17 || k == 60) throw std::runtime_error(k == 17 ? "17" : "60");
      });
      check(false, "a job exception propagates");
    } catch (const std::runtime_error& e) {
      check(std::string(e.what()) == "17", "the lowest failing job wins");
    }
    try {
      parallel_for(10, threads, [&](int64_t k) {
        if (k == 3) throw std::bad_alloc();
      });
      check(false, "bad_alloc propagates");
    } catch (const std::bad_alloc&) {
    }
  }
  // Simulated thread-creation failure at the 1st and the 3rd worker: ThreadStartError, joined.
  for (int at : {1, 3}) {
    cod_fast::detail::fail_thread_creation_at().store(at);
    std::atomic<int> ran{0};
    try {
      parallel_for(1000, 8, [&](int64_t) { ran.fetch_add(1); });
      check(false, "thread-creation failure is reported");
    } catch (const cod_fast::ThreadStartError&) {
    }
    cod_fast::detail::fail_thread_creation_at().store(0);
    check(ran.load() <= 1000, "no job runs twice");
  }
  // The pool still works afterwards.
  std::atomic<int64_t> sum{0};
  parallel_for(100, 4, [&](int64_t k) { sum.fetch_add(k); });
  check(sum.load() == 4950, "pool works after a failure");
  if (failures) return 1;
  std::printf("parallel_selftest: all checks passed\n");
  return 0;
}
