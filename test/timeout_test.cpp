// Per-task hard timeouts: counted from dispatch, enforced by killing the worker.
#include "procpool/task_options.hpp"

#include "procpool/process_pool.hpp"
#include "support/pool_fixture.hpp"
#include "support/tasks.hpp"

namespace procpool::test {
namespace {

using TaskTimeout = PoolTest;

TEST_F(TaskTimeout, ATaskPastItsTimeoutIsKilledAndTheCallerGetsTimeoutError) {
  process_pool pool{io_.get_executor(), {.workers = 1}};
  const int pid = get(pool.async_submit(my_pid, asio::use_future));
  try {
    get(pool.async_submit(task_options{.timeout = std::chrono::milliseconds(100)}, spin_forever, 0,
                          asio::use_future));
    FAIL() << "expected timeout_error";
  } catch (const timeout_error& e) {
    EXPECT_NE(std::string(e.what()).find("spin_forever"), std::string::npos) << e.what();
  }
  EXPECT_TRUE(process_gone(pid)) << "the worker outlived its task's timeout";
  EXPECT_EQ(pool.stats().timed_out, 1U);
  EXPECT_EQ(get(pool.async_submit(square, 4, asio::use_future)), 16);
}

TEST_F(TaskTimeout, TimeSpentQueuedDoesNotCount) {
  process_pool pool{io_.get_executor(), {.workers = 1}};
  get(pool.async_submit(square, 1, asio::use_future));
  // The first task keeps the only worker busy for longer than the second task's timeout (on any
  // machine slow enough for the difference to matter); the second must still succeed.
  auto first = pool.async_submit(busy_sum, 1'000'000'000, asio::use_future);
  auto second = pool.async_submit(task_options{.timeout = std::chrono::milliseconds(200)}, square,
                                  5, asio::use_future);
  EXPECT_EQ(get(first), 499'999'999'500'000'000L);
  EXPECT_EQ(get(second), 25);
  EXPECT_EQ(pool.stats().timed_out, 0U);
}

TEST_F(TaskTimeout, ThePoolDefaultAppliesToEveryTask) {
  process_pool pool{io_.get_executor(),
                    {.workers = 2, .task_timeout = std::chrono::milliseconds(100)}};
  EXPECT_EQ(get(pool.async_submit(square, 6, asio::use_future)), 36);
  EXPECT_THROW(get(pool.async_submit(spin_forever, 0, asio::use_future)), timeout_error);
  EXPECT_THROW(
      run([&]() -> asio::awaitable<int> { co_return co_await pool.submit(spin_forever, 1); }),
      timeout_error);
  EXPECT_EQ(pool.stats().timed_out, 2U);
}

}  // namespace
}  // namespace procpool::test
