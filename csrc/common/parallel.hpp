// Shared worker pool of the native code: runs job(k) for k in [0, count) on up to `threads`
// threads (the caller's thread included) and never lets a C++ exception or a failed thread
// creation reach std::terminate.
//
//  * If std::thread creation throws (std::system_error when the OS refuses a thread, bad_alloc for
//    its stack or state), the threads already started are joined and a ThreadStartError (a
//    std::runtime_error, which pybind11 turns into RuntimeError) is thrown on the caller's thread.
//    The jobs not yet taken are abandoned (the call fails as a whole, so its outputs are not
//    used); jobs already running finish before the join.
//  * Any exception thrown by a job (bad_alloc included) is caught on its worker and rethrown on the
//    caller's thread after every thread has been joined; with several failures the one of the
//    lowest k wins (deterministic whatever the scheduling).
// Plain C++17, no Python: the native tests and fuzz drivers use it too.
#pragma once

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <exception>
#include <stdexcept>
#include <string>
#include <system_error>
#include <thread>
#include <vector>

namespace cod_fast {

// The OS refused a worker thread (e.g. RLIMIT_AS / RLIMIT_NPROC); the call did not complete.
struct ThreadStartError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

namespace detail {
// Test hook: when > 0, the pool behaves as if creating the thread with this 1-based number (among
// the workers of one call) failed. Lets the native self-test exercise the failure path without
// resource limits. Not used in production code.
inline std::atomic<int>& fail_thread_creation_at() {
  static std::atomic<int> v{0};
  return v;
}
}  // namespace detail

template <class Job>
void parallel_for(int64_t count, int threads, const Job& job) {
  if (count <= 0) return;
  const int nt = static_cast<int>(std::min<int64_t>(std::max(threads, 1), count));
  std::atomic<int64_t> next{0};
  // Lowest failing k and its exception; guarded by a tiny spin on `busy` (failures are rare).
  std::atomic<int64_t> fail_k{INT64_MAX};
  std::exception_ptr fail_e;
  std::atomic<bool> busy{false};
  auto record = [&](int64_t k, std::exception_ptr e) {
    while (busy.exchange(true, std::memory_order_acquire)) {
    }
    if (k < fail_k.load(std::memory_order_relaxed)) {
      fail_k.store(k, std::memory_order_relaxed);
      fail_e = std::move(e);
    }
    busy.store(false, std::memory_order_release);
  };
  auto worker = [&]() noexcept {
    for (int64_t k = next.fetch_add(1); k < count; k = next.fetch_add(1)) {
      try {
        job(k);
      } catch (...) {
        record(k, std::current_exception());
      }
    }
  };
  bool start_failed = false;
  std::string start_error;
  std::vector<std::thread> pool;
  if (nt > 1) {
    try {
      pool.reserve(static_cast<size_t>(nt - 1));
      const int fail_at = detail::fail_thread_creation_at().load();
      for (int i = 0; i < nt - 1; ++i) {
        if (fail_at > 0 && i + 1 == fail_at) {
          throw std::system_error(std::make_error_code(std::errc::resource_unavailable_try_again),
                                  "simulated thread creation failure");
        }
        pool.emplace_back(worker);
      }
    } catch (const std::exception& e) {
      start_failed = true;
      try {
        start_error = "could not start worker thread " + std::to_string(pool.size() + 1) + " of " +
                      std::to_string(nt - 1) + " (" + e.what() + "); retry with fewer threads";
      } catch (...) {
      }
    } catch (...) {
      start_failed = true;
    }
    if (start_failed) next.store(count);  // no further job starts
  }
  if (!start_failed) worker();  // the caller works too
  for (auto& th : pool) th.join();
  if (fail_e) std::rethrow_exception(fail_e);
  if (start_failed) {
    throw ThreadStartError(start_error.empty() ? "could not start a worker thread" : start_error);
  }
}

}  // namespace cod_fast
