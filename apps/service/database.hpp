// procpool-service - the store, reached from the event loop without blocking it.
#pragma once

#include <boost/asio/awaitable.hpp>
#include <boost/asio/thread_pool.hpp>
#include <procpool/to_thread.hpp>
#include <utility>

#include "store.hpp"

namespace service {

/// Runs store operations on one dedicated thread (SQLite calls block; one thread keeps them in
/// order and needs no locking) and resumes the caller on its own executor:
///
///     job_change c = co_await db.run([j](store& s) { return s.insert(j); });
///
/// A store exception is rethrown at the co_await.
class database {
 public:
  explicit database(store& s) : store_(s), thread_(1) {}
  ~database() { thread_.join(); }
  database(const database&) = delete;
  auto operator=(const database&) -> database& = delete;

  template <class F>
  auto run(F f) {
    return procpool::to_thread_on(thread_.get_executor(),
                                  [s = &store_, f = std::move(f)]() mutable { return f(*s); });
  }

  [[nodiscard]] auto service_id() const -> const std::string& { return store_.service_id(); }

 private:
  store& store_;
  boost::asio::thread_pool thread_;
};

}  // namespace service
