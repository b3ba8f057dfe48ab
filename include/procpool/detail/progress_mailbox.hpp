// procpool - hands one task's progress reports to its on_progress callback, in order, and its
// completion only after the last callback has run.
#pragma once

#include <atomic>
#include <boost/asio/post.hpp>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <utility>

#include "procpool/detail/unique_function.hpp"
#include "procpool/progress.hpp"

namespace procpool::detail {

/// What the pool hands a task's progress reports to (task_request::progress). `deliver` is
/// called with no lock of the pool's held and must only hand the report on. `sequence` numbers
/// the reports in the order the pool received them, from 1. Each thread that reads frames hands
/// them on after releasing the pool's lock, so reports read on one thread may be handed on after
/// a newer report, or after the task's outcome, read on another: an older report must not replace
/// a newer one, and the outcome must wait for the reports received before it.
class progress_listener {
 public:
  virtual ~progress_listener() = default;
  virtual void deliver(progress p, std::uint64_t sequence) = 0;

  /// Called by the pool, under its lock, as the task ends: how many reports it received. The
  /// task's completion runs after this on the same thread.
  void set_reports_received(std::uint64_t n) noexcept {
    reports_received_.store(n, std::memory_order_relaxed);
  }

 protected:
  std::atomic<std::uint64_t> reports_received_{0};
};

/// One post in flight at a time: a report that arrives while the callback is pending or running
/// replaces the one not yet shown (latest wins, so a slow callback never queues a backlog), and
/// the callbacks run one after another even on a multi-threaded executor. `finish` runs the
/// completion once every report received before the outcome has been shown or superseded: at
/// once when that is already so, else after the last callback. A report older than one already
/// taken, or newer than the outcome, is dropped.
template <class Executor>
class progress_mailbox final : public progress_listener,
                               public std::enable_shared_from_this<progress_mailbox<Executor>> {
 public:
  progress_mailbox(Executor ex, std::function<void(const progress&)> callback)
      : ex_(std::move(ex)), callback_(std::move(callback)) {}

  void deliver(progress p, std::uint64_t sequence) override {
    std::unique_lock lock(mutex_);
    if (sequence <= newest_sequence_ || (finished_ && sequence > final_sequence_)) return;
    newest_sequence_ = sequence;
    latest_ = std::move(p);
    if (in_flight_) return;
    in_flight_ = true;
    lock.unlock();
    try {
      boost::asio::post(ex_, [self = this->shared_from_this()] { self->drain(); });
    } catch (...) {
      // Out of memory: this report is lost, but a completion waiting for it must still run.
      lock.lock();
      latest_.reset();
      in_flight_ = false;
      auto then = std::move(then_);
      lock.unlock();
      if (then) std::move(then)();
      throw;
    }
  }

  /// Runs `then` once every report received before the task's outcome has been shown.
  void finish(unique_function<void()> then) {
    std::unique_lock lock(mutex_);
    finished_ = true;
    final_sequence_ = reports_received_.load(std::memory_order_relaxed);
    if (in_flight_ || newest_sequence_ < final_sequence_) {
      then_ = std::move(then);
      return;
    }
    lock.unlock();
    std::move(then)();
  }

 private:
  void drain() {
    for (;;) {
      std::unique_lock lock(mutex_);
      if (!latest_) {
        in_flight_ = false;
        if (newest_sequence_ < final_sequence_)
          return;  // one received before the outcome is on its way
        auto then = std::move(then_);
        lock.unlock();
        if (then) std::move(then)();
        return;
      }
      progress p = std::move(*latest_);
      latest_.reset();
      lock.unlock();
      try {
        callback_(p);
      } catch (...) {
        // It propagates out of the executor's run(), like any handler's exception; the task's
        // completion must still come, and no callback after it.
        lock.lock();
        finished_ = true;
        final_sequence_ = newest_sequence_ = ~std::uint64_t{0};
        in_flight_ = false;
        auto then = std::move(then_);
        lock.unlock();
        if (then) std::move(then)();
        throw;
      }
    }
  }

  Executor ex_;
  std::function<void(const progress&)> callback_;
  std::mutex mutex_;
  std::optional<progress> latest_;
  std::uint64_t newest_sequence_ = 0;  // of the newest report taken
  std::uint64_t final_sequence_ = 0;   // of the last report received before the outcome
  bool in_flight_ = false;
  bool finished_ = false;
  unique_function<void()> then_;
};

}  // namespace procpool::detail
