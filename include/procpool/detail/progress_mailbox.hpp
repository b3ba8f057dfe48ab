// procpool - hands one task's progress reports to its on_progress callback, in order, and its
// completion only after the last callback has run.
#pragma once

#include <boost/asio/post.hpp>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <utility>

#include "procpool/detail/unique_function.hpp"
#include "procpool/progress.hpp"

namespace procpool::detail {

/// What the pool hands a task's progress reports to (task_request::progress). `deliver` is
/// called with no lock of the pool's held and must only hand the report on.
class progress_listener {
 public:
  virtual ~progress_listener() = default;
  virtual void deliver(progress p) = 0;
};

/// One post in flight at a time: a report that arrives while the callback is pending or running
/// replaces the one not yet shown (latest wins, so a slow callback never queues a backlog), and
/// the callbacks run one after another even on a multi-threaded executor. `finish` runs the
/// completion at once when nothing is in flight, else after the in-flight callbacks; reports
/// after it are dropped (one the pool read before the outcome but handed on after it is stale).
template <class Executor>
class progress_mailbox final : public progress_listener,
                               public std::enable_shared_from_this<progress_mailbox<Executor>> {
 public:
  progress_mailbox(Executor ex, std::function<void(const progress&)> callback)
      : ex_(std::move(ex)), callback_(std::move(callback)) {}

  void deliver(progress p) override {
    std::unique_lock lock(mutex_);
    if (finished_) return;
    latest_ = std::move(p);
    if (in_flight_) return;
    in_flight_ = true;
    lock.unlock();
    boost::asio::post(ex_, [self = this->shared_from_this()] { self->drain(); });
  }

  /// Runs `then` once every report delivered so far has been shown.
  void finish(unique_function<void()> then) {
    std::unique_lock lock(mutex_);
    finished_ = true;
    if (in_flight_) {
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
  bool in_flight_ = false;
  bool finished_ = false;
  unique_function<void()> then_;
};

}  // namespace procpool::detail
