// Shared worker pool of the native code: runs job(k) for k in [0, count) on up to `threads`
// threads (the caller's thread included) and never lets a C++ exception or a failed thread
// creation reach std::terminate.
//
//  * If std::thread creation throws (std::system_error when the OS refuses a thread, bad_alloc for
//    its stack or state), the threads already started are joined (or, for the persistent pool,
//    kept idle) and a ThreadStartError (a std::runtime_error, which pybind11 turns into
//    RuntimeError) is thrown on the caller's thread. Jobs not yet taken are abandoned (the call
//    fails as a whole, so its outputs are not used).
//  * Any exception thrown by a job (bad_alloc included) is caught on its worker and rethrown on the
//    caller's thread after every worker has left the call; with several failures the one of the
//    lowest k wins (deterministic whatever the scheduling).
//
// Threads. Up to one helper per extra CPU come from a persistent pool (detail::WorkerPool): they
// are started on first use and then wait for work, spinning briefly after each call so that
// back-to-back calls (the layers of a network, the segments of a stream) find them awake. Starting
// a std::thread per call cost up to 3 ms on a 2-core VM (the new thread often waited on the
// caller's busy core), more than a whole SODEC layer. Calls that cannot use the pool fall back to
// threads started for the call: more threads than the pool holds, a call nested inside a job, or
// another thread's call already using the pool (concurrent decodes stay correct, just not
// pooled). Which thread runs which k never changes the result: jobs write disjoint outputs.
//
// Plain C++17 + POSIX getpid, no Python: the native tests and fuzz drivers use it too.
#pragma once

#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <exception>
#include <functional>
#include <mutex>
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
// Test hook: when > 0, creating the worker thread with this 1-based number (among the threads a
// call or the pool starts) fails as if the OS refused it. Lets the native self-test exercise the
// failure path without resource limits; while it is set, calls bypass the pool (so each call
// starts its own threads and meets the failure). Not used in production code.
inline std::atomic<int>& fail_thread_creation_at() {
  static std::atomic<int> v{0};
  return v;
}

// True on a thread while it runs jobs of a parallel_for: a nested call runs inline.
inline bool& inside_parallel_job() {
  thread_local bool v = false;
  return v;
}

inline std::thread start_thread(int number, std::function<void()> fn) {
  const int fail_at = fail_thread_creation_at().load();
  if (fail_at > 0 && number == fail_at) {
    throw std::system_error(std::make_error_code(std::errc::resource_unavailable_try_again),
                            "simulated thread creation failure");
  }
  return std::thread(std::move(fn));
}

inline std::string start_error_message(size_t started, size_t wanted, const char* what) {
  try {
    return "could not start worker thread " + std::to_string(started + 1) + " of " +
           std::to_string(wanted) + " (" + what + "); retry with fewer threads";
  } catch (...) {
    return std::string();
  }
}

// Persistent helper threads. Invariants (all guarded by mu_ except gen_, which is also read
// without the lock while spinning):
//  * one call at a time owns the pool (call_mu_, taken with try_lock);
//  * a call publishes body_ and wanted_ and bumps gen_; a helper that sees the new gen_ joins
//    while joined_ < wanted_, so at most wanted_ helpers run body_;
//  * before the call returns it sets wanted_ = joined_ (no late joiner can still see body_,
//    which points into the caller's stack) and waits until running_ == 0.
// The pool is never destroyed (helpers would otherwise be joined or killed during static
// destruction while blocked on its members); a forked child, which has none of the parent's
// threads, builds a new one (pid check) and leaks the parent's copy.
class WorkerPool {
 public:
  static constexpr int kMaxHelpers = 63;
  // How long a helper spins on gen_ after a call before it sleeps on the condition variable.
  static constexpr std::chrono::microseconds kSpin{200};

  static WorkerPool& instance() {
    static std::atomic<WorkerPool*> current{nullptr};
    const pid_t pid = getpid();
    WorkerPool* p = current.load(std::memory_order_acquire);
    while (p == nullptr || p->pid_ != pid) {
      auto* fresh = new WorkerPool(pid);
      if (current.compare_exchange_strong(p, fresh, std::memory_order_acq_rel)) return *fresh;
      delete fresh;  // another thread installed one; p now holds it
    }
    return *p;
  }

  static int capacity() {
    const unsigned hc = std::thread::hardware_concurrency();
    return std::clamp(static_cast<int>(hc) - 1, 0, kMaxHelpers);
  }

  // Runs body() on `helpers` pool threads and on the caller, returning when all have finished.
  // Returns false without running anything when another call owns the pool. Throws
  // ThreadStartError when a helper cannot be started (nothing has run then).
  bool run(int helpers, const std::function<void()>& body) {
    std::unique_lock<std::mutex> call(call_mu_, std::try_to_lock);
    if (!call.owns_lock()) return false;
    start_helpers(helpers);
    {
      std::lock_guard<std::mutex> lk(mu_);
      body_ = &body;
      wanted_ = helpers;
      joined_ = 0;
      gen_.fetch_add(1, std::memory_order_release);
    }
    wake_.notify_all();
    body();
    std::unique_lock<std::mutex> lk(mu_);
    wanted_ = joined_;  // close the call: helpers that arrive now skip it
    done_.wait(lk, [&] { return running_ == 0; });
    body_ = nullptr;
    return true;
  }

 private:
  explicit WorkerPool(pid_t pid) : pid_(pid) {}

  void start_helpers(int helpers) {
    while (static_cast<int>(n_threads_) < helpers) {
      const size_t number = n_threads_ + 1;
      try {
        start_thread(static_cast<int>(number), [this] { loop(); }).detach();
      } catch (const std::exception& e) {
        throw ThreadStartError(start_error_message(n_threads_, static_cast<size_t>(helpers), e.what()));
      } catch (...) {
        throw ThreadStartError("could not start a worker thread");
      }
      ++n_threads_;
    }
  }

  void loop() {
    uint64_t seen = gen_.load(std::memory_order_acquire);
    for (;;) {
      const auto until = std::chrono::steady_clock::now() + kSpin;
      while (gen_.load(std::memory_order_acquire) == seen && std::chrono::steady_clock::now() < until) {
        std::this_thread::yield();
      }
      std::unique_lock<std::mutex> lk(mu_);
      wake_.wait(lk, [&] { return gen_.load(std::memory_order_relaxed) != seen; });
      seen = gen_.load(std::memory_order_relaxed);
      if (joined_ >= wanted_) continue;  // this call has all the helpers it asked for
      ++joined_;
      ++running_;
      const std::function<void()>* body = body_;
      lk.unlock();
      (*body)();  // noexcept: parallel_for's worker catches every job exception
      lk.lock();
      if (--running_ == 0) done_.notify_all();
    }
  }

  const pid_t pid_;
  std::mutex call_mu_;
  std::mutex mu_;
  std::condition_variable wake_, done_;
  std::atomic<uint64_t> gen_{0};
  const std::function<void()>* body_ = nullptr;
  int wanted_ = 0, joined_ = 0, running_ = 0;
  size_t n_threads_ = 0;  // only the pool's owner (call_mu_) changes it
};
}  // namespace detail

// Thread count of a call: `threads` when > 0, else one per CPU (at least 1). Callers reject
// negative values before this (the bindings raise ValueError).
inline int resolve_threads(int threads) {
  if (threads > 0) return threads;
  const unsigned hc = std::thread::hardware_concurrency();
  return hc == 0 ? 1 : static_cast<int>(hc);
}

template <class Job>
void parallel_for(int64_t count, int threads, const Job& job) {
  if (count <= 0) return;
  int nt = static_cast<int>(std::min<int64_t>(std::max(threads, 1), count));
  if (detail::inside_parallel_job()) nt = 1;  // nested: the outer call already uses the threads
  std::atomic<int64_t> next{0};
  // Lowest failing k and its exception.
  std::mutex fail_mu;
  int64_t fail_k = INT64_MAX;
  std::exception_ptr fail_e;
  const std::function<void()> worker = [&]() noexcept {
    bool& inside = detail::inside_parallel_job();
    const bool was_inside = inside;
    inside = true;
    for (int64_t k = next.fetch_add(1); k < count; k = next.fetch_add(1)) {
      try {
        job(k);
      } catch (...) {
        std::lock_guard<std::mutex> lk(fail_mu);
        if (k < fail_k) {
          fail_k = k;
          fail_e = std::current_exception();
        }
      }
    }
    inside = was_inside;
  };
  auto finish = [&] {
    if (fail_e) std::rethrow_exception(fail_e);
  };
  if (nt == 1) {
    worker();
    return finish();
  }
  if (nt - 1 <= detail::WorkerPool::capacity() && detail::fail_thread_creation_at().load() == 0 &&
      detail::WorkerPool::instance().run(nt - 1, worker)) {
    return finish();
  }
  // Threads of this call only. A started thread takes jobs at once; if a later one fails to
  // start, `next` is closed so that no further job starts (the call fails as a whole).
  bool start_failed = false;
  std::string start_error;
  std::vector<std::thread> pool;
  try {
    pool.reserve(static_cast<size_t>(nt - 1));
    for (int i = 0; i < nt - 1; ++i) pool.push_back(detail::start_thread(i + 1, worker));
  } catch (const std::exception& e) {
    start_failed = true;
    start_error = detail::start_error_message(pool.size(), static_cast<size_t>(nt - 1), e.what());
  } catch (...) {
    start_failed = true;
  }
  if (start_failed) next.store(count);  // no further job starts
  if (!start_failed) worker();          // the caller works too
  for (auto& th : pool) th.join();
  finish();
  if (start_failed) {
    throw ThreadStartError(start_error.empty() ? "could not start a worker thread" : start_error);
  }
}

}  // namespace cod_fast
