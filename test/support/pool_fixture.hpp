// Test support: an io_context running on its own thread, and hang-guarded waits.
#pragma once

#include <gtest/gtest.h>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/use_future.hpp>
#include <cerrno>
#include <chrono>
#include <csignal>
#include <future>
#include <stdexcept>
#include <thread>

namespace procpool::test {

namespace asio = boost::asio;
using namespace std::chrono_literals;

/// Hang guard for a single wait; generous, because a loaded 2-core CI machine is slow, and never
/// the thing a test measures.
inline constexpr auto hang_guard = 60s;

template <class T>
auto get(std::future<T>& f) -> T {
  if (f.wait_for(hang_guard) != std::future_status::ready) {
    throw std::runtime_error("hang guard: operation did not complete");
  }
  return f.get();
}

template <class T>
auto get(std::future<T>&& f) -> T {
  return get(f);
}

/// True once `pid` no longer exists (reaped by its parent): the process and its CPU are gone.
inline auto process_gone(int pid) -> bool {
  return ::kill(pid, 0) == -1 && errno == ESRCH;
}

class PoolTest : public ::testing::Test {
 protected:
  ~PoolTest() override {
    work_.reset();
    io_.stop();
    runner_.join();
  }

  /// Runs a coroutine on the io thread and waits (hang-guarded) for its result.
  template <class Awaitable>
  auto run(Awaitable aw) {
    return get(asio::co_spawn(io_, std::move(aw), asio::use_future));
  }

  asio::io_context io_;
  asio::executor_work_guard<asio::io_context::executor_type> work_ = asio::make_work_guard(io_);
  std::thread runner_{[this] { io_.run(); }};
};

}  // namespace procpool::test
