// procpool::wait_for: the task's outcome when it is first, a timeout that kills the worker
// otherwise.
#include "procpool/wait_for.hpp"

#include <chrono>
#include <stdexcept>

#include "procpool/process_pool.hpp"
#include "support/pool_fixture.hpp"
#include "support/tasks.hpp"

namespace procpool::test {
namespace {

auto fail_fast(int) -> int {
  throw std::invalid_argument("negative input");
}

using WaitFor = PoolTest;

TEST_F(WaitFor, ReturnsTheValueWhenTheTaskFinishesFirst) {
  process_pool pool{io_.get_executor(), {.workers = 1}};
  int r = run(
      [&]() -> asio::awaitable<int> { co_return co_await wait_for(pool.submit(square, 7), 30s); });
  EXPECT_EQ(r, 49);
}

TEST_F(WaitFor, RethrowsTheTasksExceptionAtOnceNotAtTheDeadline) {
  process_pool pool{io_.get_executor(), {.workers = 1}};
  const auto start = std::chrono::steady_clock::now();
  EXPECT_THROW(run([&]() -> asio::awaitable<int> {
                 co_return co_await wait_for(pool.submit(fail_fast, 1), 60s);
               }),
               std::invalid_argument);
  // Hang guard, not a measurement: waiting for the 60 s timer would be the Boost 1.81 operator||
  // bug.
  EXPECT_LT(std::chrono::steady_clock::now() - start, 30s);
}

TEST_F(WaitFor, ThrowsTimeoutErrorAndKillsTheRunningWorker) {
  process_pool pool{io_.get_executor(), {.workers = 1}};
  const int pid = get(pool.async_submit(my_pid, asio::use_future));  // the worker is up and idle
  const auto start = std::chrono::steady_clock::now();
  try {
    run([&]() -> asio::awaitable<int> {
      co_return co_await wait_for(pool.submit(spin_forever, 0), 200ms);
    });
    FAIL() << "expected timeout_error";
  } catch (const timeout_error& e) {
    EXPECT_EQ(e.advice(), advice::retry_if_idempotent);
  }
  // Hang guard, not a measurement: the spinning task never ends, so only the kill ends the wait.
  EXPECT_LT(std::chrono::steady_clock::now() - start, 30s);
  EXPECT_TRUE(process_gone(pid)) << "the timed-out worker still runs";
  EXPECT_EQ(get(pool.async_submit(square, 3, asio::use_future)), 9);  // a replacement serves
}

TEST_F(WaitFor, WorksWithVoidAwaitables) {
  process_pool pool{io_.get_executor(), {.workers = 1}};
  bool done = run([&]() -> asio::awaitable<bool> {
    co_await wait_for(pool.submit([](int) {}, 1), 30s);
    co_return true;
  });
  EXPECT_TRUE(done);
}

}  // namespace
}  // namespace procpool::test
