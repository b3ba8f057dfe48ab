// Recycling workers after N tasks, and a bounded queue.
#include "procpool/pool_options.hpp"

#include "procpool/process_pool.hpp"
#include "support/pool_fixture.hpp"
#include "support/tasks.hpp"

namespace procpool::test {
namespace {

using Limits = PoolTest;

TEST_F(Limits, AWorkerIsReplacedAfterMaxTasksPerWorker) {
  process_pool pool{io_.get_executor(), {.workers = 1, .max_tasks_per_worker = 3}};
  std::vector<int> pids;
  for (int i = 0; i < 7; ++i) pids.push_back(get(pool.async_submit(my_pid, asio::use_future)));
  EXPECT_EQ(pids[0], pids[1]);
  EXPECT_EQ(pids[1], pids[2]);
  EXPECT_NE(pids[2], pids[3]);
  EXPECT_EQ(pids[3], pids[4]);
  EXPECT_EQ(pids[4], pids[5]);
  EXPECT_NE(pids[5], pids[6]);
  EXPECT_EQ(pool.stats().recycled, 2U);
}

TEST_F(Limits, SubmitsBeyondMaxQueueFailWithQueueFull) {
  std::future<int> running, queued1, queued2;
  {
    process_pool pool{io_.get_executor(), {.workers = 1, .max_queue = 2}};
    get(pool.async_submit(square, 1, asio::use_future));             // the worker is up and idle
    running = pool.async_submit(spin_forever, 0, asio::use_future);  // taken at once
    queued1 = pool.async_submit(square, 2, asio::use_future);
    queued2 = pool.async_submit(square, 3, asio::use_future);
    try {
      get(pool.async_submit(square, 4, asio::use_future));
      FAIL() << "expected queue_full";
    } catch (const queue_full& e) {
      EXPECT_EQ(e.advice(), advice::retry);
    }
    EXPECT_EQ(pool.stats().rejected, 1U);
    EXPECT_EQ(pool.stats().queued, 2U);
  }
  EXPECT_THROW(get(running), pool_closed);
  EXPECT_THROW(get(queued1), pool_closed);
  EXPECT_THROW(get(queued2), pool_closed);
}

}  // namespace
}  // namespace procpool::test
