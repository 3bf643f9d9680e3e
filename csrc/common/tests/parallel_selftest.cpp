// Self-test of the shared worker pool (csrc/common/parallel.hpp): every job runs exactly once,
// job exceptions (bad_alloc included) come back on the caller after the join, the lowest failing
// job wins, a failed thread creation ends in ThreadStartError instead of std::terminate, and the
// persistent pool stays correct under concurrent callers, nested calls and fork.
// Run by tools/asan.sh under AddressSanitizer + UBSan (and ThreadSanitizer-clean by design).
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <new>
#include <stdexcept>
#include <string>
#include <thread>
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

// parallel_for(count, threads) marks every k it runs; true when each k ran exactly once.
bool each_once(int64_t count, int threads) {
  std::vector<std::atomic<int>> hits(static_cast<size_t>(count));
  cod_fast::parallel_for(count, threads, [&](int64_t k) { hits[static_cast<size_t>(k)].fetch_add(1); });
  for (auto& h : hits) {
    if (h.load() != 1) return false;
  }
  return true;
}

}  // namespace

int main() {
  using cod_fast::parallel_for;
  // Every job exactly once, for several thread counts (more threads than jobs, more threads than
  // the pool holds, repeated calls on the warm pool).
  for (int round = 0; round < 3; ++round) {
    for (int threads : {1, 2, 3, 8, 64}) {
      for (int64_t count : {0, 1, 5, 1000}) check(each_once(count, threads), "every job runs exactly once");
    }
  }
  // The lowest failing job's exception is rethrown after the join.
  for (int threads : {1, 2, 4}) {
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
  // Simulated thread-creation failure at the 1st and the 3rd worker: ThreadStartError, joined,
  // and no job ran twice.
  for (int at : {1, 3}) {
    cod_fast::detail::fail_thread_creation_at().store(at);
    std::vector<std::atomic<int>> hits(1000);
    try {
      parallel_for(1000, 8, [&](int64_t k) { hits[static_cast<size_t>(k)].fetch_add(1); });
      check(false, "thread-creation failure is reported");
    } catch (const cod_fast::ThreadStartError&) {
    }
    cod_fast::detail::fail_thread_creation_at().store(0);
    bool twice = false;
    for (auto& h : hits) twice = twice || h.load() > 1;
    check(!twice, "no job runs twice");
  }
  check(each_once(100, 4), "pool works after a failure");
  // Nested calls run inline on the outer call's threads (no deadlock on the pool).
  {
    std::vector<std::atomic<int>> hits(64 * 16);
    parallel_for(64, 2, [&](int64_t i) {
      parallel_for(16, 2, [&](int64_t j) { hits[static_cast<size_t>(i * 16 + j)].fetch_add(1); });
    });
    bool ok = true;
    for (auto& h : hits) ok = ok && h.load() == 1;
    check(ok, "nested calls run every job once");
  }
  // Concurrent callers: one owns the pool, the others fall back to their own threads.
  {
    std::atomic<int> bad{0};
    std::vector<std::thread> callers;
    for (int c = 0; c < 4; ++c) {
      callers.emplace_back([&] {
        for (int r = 0; r < 50; ++r) {
          if (!each_once(257, 2)) bad.fetch_add(1);
        }
      });
    }
    for (auto& t : callers) t.join();
    check(bad.load() == 0, "concurrent callers run every job once");
  }
  // A forked child (which has none of the parent's pool threads) builds its own pool.
  {
    const pid_t pid = fork();
    if (pid == 0) _exit(each_once(1000, 2) && each_once(1000, 3) ? 0 : 1);
    int status = 0;
    check(pid > 0 && waitpid(pid, &status, 0) == pid && WIFEXITED(status) && WEXITSTATUS(status) == 0,
          "a forked child runs parallel_for");
  }
  if (failures) return 1;
  std::printf("parallel_selftest: all checks passed\n");
  return 0;
}
