// Shutdown, destruction, and what a pool leaves behind: no processes, no zombies, no descriptors.
#include <dirent.h>
#include <unistd.h>

#include <atomic>
#include <fstream>
#include <set>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "procpool/process_pool.hpp"
#include "support/pool_fixture.hpp"
#include "support/process_inspection.hpp"
#include "support/tasks.hpp"

namespace procpool::test {
namespace {

using Lifecycle = PoolTest;

TEST_F(Lifecycle, GracefulShutdownFinishesQueuedAndRunningTasks) {
  process_pool pool{io_.get_executor(), {.workers = 1}};
  std::vector<std::future<int>> results;
  for (int i = 0; i < 4; ++i) results.push_back(pool.async_submit(square, i, asio::use_future));
  get(pool.async_shutdown(shutdown_mode::graceful, asio::use_future));
  for (int i = 0; i < 4; ++i) EXPECT_EQ(get(results[static_cast<std::size_t>(i)]), i * i);
  EXPECT_TRUE(pool.worker_pids().empty());
  EXPECT_THROW(get(pool.async_submit(square, 1, asio::use_future)), pool_closed);
}

TEST_F(Lifecycle, ImmediateShutdownKillsRunningAndFailsQueued) {
  process_pool pool{io_.get_executor(), {.workers = 1}};
  const int pid = get(pool.async_submit(my_pid, asio::use_future));
  auto running = pool.async_submit(spin_forever, 0, asio::use_future);
  auto queued = pool.async_submit(square, 2, asio::use_future);
  get(pool.async_shutdown(shutdown_mode::immediate, asio::use_future));
  EXPECT_THROW(get(running), pool_closed);
  EXPECT_THROW(get(queued), pool_closed);
  EXPECT_TRUE(process_gone(pid));
  for (const auto& p : leftover_processes())
    ADD_FAILURE() << "left behind: pid " << p.pid << " " << p.name << " state " << p.state;
}

TEST_F(Lifecycle, DestructorStopsABusyPoolAndFailsItsTasks) {
  std::future<int> running;
  int pid = 0;
  {
    process_pool pool{io_.get_executor(),
                      {.workers = 2, .stop_grace = std::chrono::milliseconds(200)}};
    pid = get(pool.async_submit(my_pid, asio::use_future));
    running = pool.async_submit(spin_forever, 0, asio::use_future);
  }
  EXPECT_THROW(get(running), pool_closed);
  EXPECT_TRUE(process_gone(pid));
}

TEST_F(Lifecycle, NoChildProcessOrZombieRemainsAfterThePoolIsDestroyed) {
  {
    process_pool pool{io_.get_executor(), {.workers = 3}};
    EXPECT_EQ(get(pool.async_submit(square, 2, asio::use_future)), 4);
    EXPECT_THROW(get(pool.async_submit(crash_abort, 0, asio::use_future)), worker_crashed);
    EXPECT_EQ(get(pool.async_submit(square, 3, asio::use_future)), 9);
    // While the pool lives its workers are our descendants, so the check below is not vacuous.
    EXPECT_FALSE(leftover_processes().empty());
  }
  auto left = leftover_processes();
  for (const auto& p : left)
    ADD_FAILURE() << "left behind: pid " << p.pid << " " << p.name << " state " << p.state;
}

TEST_F(Lifecycle, DescriptorsReturnToTheirStartingCountAfterAThousandTasks) {
  {
    // Asio opens its reactor's descriptors (epoll, eventfd, timerfd) on first use and keeps them
    // for the io_context's lifetime; a first pool makes them part of the baseline.
    process_pool warm_up{io_.get_executor(), {.workers = 1}};
    get(warm_up.async_submit(square, 1, asio::use_future));
  }
  const int before = open_fd_count();
  {
    process_pool pool{io_.get_executor(), {.workers = 2}};
    long sum = run([&]() -> asio::awaitable<long> {
      long s = 0;
      for (int i = 0; i < 1000; ++i) s += co_await pool.submit(square, i % 100);
      co_return s;
    });
    EXPECT_EQ(sum, 10 * 328350);
    EXPECT_THROW(get(pool.async_submit(crash_exit, 1, asio::use_future)), worker_crashed);
  }
  EXPECT_EQ(open_fd_count(), before);
}

TEST_F(Lifecycle, APoolCreatedAfterFourBusyThreadsWorks) {
  std::atomic<bool> stop{false};
  std::vector<std::thread> busy;
  for (int i = 0; i < 4; ++i) {
    busy.emplace_back([&] {
      while (!stop.load(std::memory_order_relaxed)) {
      }
    });
  }
  {
    process_pool pool{io_.get_executor(), {.workers = 2}};
    EXPECT_EQ(get(pool.async_submit(square, 11, asio::use_future)), 121);
  }
  stop = true;
  for (auto& t : busy) t.join();
}

}  // namespace
}  // namespace procpool::test
