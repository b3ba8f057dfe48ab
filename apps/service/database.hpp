// procpool-service - the store, reached from the event loop without blocking it.
#pragma once

#include <algorithm>
#include <boost/asio/associated_executor.hpp>
#include <boost/asio/async_result.hpp>
#include <boost/asio/awaitable.hpp>
#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/thread_pool.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <exception>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <type_traits>
#include <utility>
#include <vector>

#include "store.hpp"

namespace service {

/// Runs store operations on one dedicated thread (SQLite and libpq calls block; one thread keeps
/// them in order and needs no locking) and resumes the caller on its own executor:
///
///     job_change c = co_await db.run([j](store& s) { return s.insert(j); });
///     std::optional<job> j = co_await db.read([id](store& s) { return s.get(id); });
///
/// Operations that arrive while the thread is busy are run together in one transaction (group
/// commit): one sync to disk for many changes, which is what lets a durable service keep up with
/// many clients. Each caller resumes only after the commit that holds its change; a store
/// exception, a failed begin or a failed commit is rethrown at its co_await. Operations run in the
/// order they were called. A batch of reads only takes no write lock (store::begin_batch).
class database {
 public:
  explicit database(store& s) : store_(s), thread_(1) {}
  ~database() { thread_.join(); }
  database(const database&) = delete;
  auto operator=(const database&) -> database& = delete;

  /// An operation that may change the database.
  template <class F>
  auto run(F f) {
    return initiate(std::move(f), true);
  }
  /// An operation that only reads.
  template <class F>
  auto read(F f) {
    return initiate(std::move(f), false);
  }
  /// An operation whose change need not survive a crash of the machine or of PostgreSQL (a
  /// claim: if it is lost, the job is simply queued again, and the fence stops the instance that
  /// had it). It commits without waiting for the disk, in a transaction of its own that runs
  /// before the durable operations queued with it, so that a free worker gets its next job
  /// without waiting for a sync.
  template <class F>
  auto run_without_sync(F f) {
    return initiate(std::move(f), true, false);
  }

  /// `f` is posted to `ex` after every commit that appended to the change log (the change feed
  /// reads it then). Set before the first operation.
  template <class Executor>
  void on_changes(Executor ex, std::function<void()> f) {
    on_changes_ = [ex, f = std::move(f)] { boost::asio::post(ex, f); };
  }

  [[nodiscard]] auto service_id() const -> const std::string& { return store_.service_id(); }

 private:
  template <class F>
  auto initiate(F f, bool writes, bool durable = true) {
    using R = std::invoke_result_t<F&, store&>;
    return boost::asio::async_initiate<const boost::asio::use_awaitable_t<>&,
                                       void(std::exception_ptr, R)>(
        [this, writes, durable](auto handler, F fn) {
          auto o = std::make_unique<op<F, R, decltype(handler)>>(std::move(fn), std::move(handler));
          o->writes = writes;
          o->durable = durable;
          enqueue(std::move(o));
        },
        boost::asio::use_awaitable, std::move(f));
  }

  struct op_base {
    virtual ~op_base() = default;
    virtual void execute(store& s) = 0;
    virtual void complete(std::exception_ptr commit_error) = 0;
    bool writes = true;
    bool durable = true;
    std::exception_ptr error;
  };

  template <class F, class R, class Handler>
  struct op final : op_base {
    op(F fn, Handler h)
        : f(std::move(fn)),
          handler(std::move(h)),
          work(boost::asio::make_work_guard(boost::asio::get_associated_executor(handler))) {}
    void execute(store& s) override {
      try {
        result.emplace(f(s));
      } catch (...) {
        error = std::current_exception();
      }
    }
    void complete(std::exception_ptr commit_error) override {
      if (commit_error && !error) error = commit_error;
      auto ex = work.get_executor();
      boost::asio::post(
          ex, [h = std::move(handler), w = std::move(work), e = error,
               r = std::move(result)]() mutable { std::move(h)(e, e ? R{} : std::move(*r)); });
    }
    F f;
    Handler handler;
    boost::asio::executor_work_guard<boost::asio::associated_executor_t<Handler>> work;
    std::optional<R> result;
  };

  void enqueue(std::unique_ptr<op_base> o) {
    std::lock_guard lock(mutex_);
    pending_.push_back(std::move(o));
    if (!scheduled_) {
      scheduled_ = true;
      boost::asio::post(thread_, [this] { drain(); });
    }
  }

  // On the database thread: everything queued so far, in one transaction (two when some of it
  // need not wait for the disk: that part first).
  void drain() {
    std::vector<std::unique_ptr<op_base>> all, quick, durable;
    {
      std::lock_guard lock(mutex_);
      all.swap(pending_);
      scheduled_ = false;
    }
    for (auto& o : all) (o->durable ? durable : quick).push_back(std::move(o));
    if (!quick.empty()) run_batch(quick, false);
    if (!durable.empty()) run_batch(durable, true);
  }

  void run_batch(std::vector<std::unique_ptr<op_base>>& batch, bool durable) {
    std::exception_ptr batch_error;
    const bool writes = std::any_of(batch.begin(), batch.end(), [](auto& o) { return o->writes; });
    try {
      store_.begin_batch(writes, durable);
    } catch (...) {
      batch_error = std::current_exception();
    }
    if (!batch_error) {
      // Each operation in a savepoint of its own: one that fails (a constraint, a timeout) is
      // undone alone, and does not leave the batch's transaction aborted for the others.
      for (auto& o : batch) {
        try {
          store_.begin_operation();
        } catch (...) {
          o->error = std::current_exception();
          continue;
        }
        o->execute(store_);
        store_.end_operation(!o->error);
      }
      try {
        store_.commit_batch();
      } catch (...) {
        batch_error = std::current_exception();
      }
    }
    if (store_.take_events_appended() && on_changes_) on_changes_();
    for (auto& o : batch) o->complete(batch_error);
  }

  store& store_;
  std::function<void()> on_changes_;
  std::mutex mutex_;
  std::vector<std::unique_ptr<op_base>> pending_;
  bool scheduled_ = false;
  boost::asio::thread_pool thread_;
};

}  // namespace service
