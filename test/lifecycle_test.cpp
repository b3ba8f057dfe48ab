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
#include "support/tasks.hpp"

namespace procpool::test {
namespace {

struct proc_entry {
  int pid, ppid;
  char state;
  std::string name;
};

auto all_processes() -> std::vector<proc_entry> {
  std::vector<proc_entry> out;
  DIR* d = ::opendir("/proc");
  while (const dirent* e = ::readdir(d)) {
    const int pid = std::atoi(e->d_name);
    if (pid <= 0) continue;
    std::ifstream in("/proc/" + std::string(e->d_name) + "/stat");
    std::string line;
    if (!std::getline(in, line)) continue;
    const auto open = line.find('('), close = line.rfind(')');
    proc_entry p{pid, 0, '?', line.substr(open + 1, close - open - 1)};
    std::istringstream rest(line.substr(close + 2));
    rest >> p.state >> p.ppid;
    out.push_back(p);
  }
  ::closedir(d);
  return out;
}

/// Our descendants other than procpool's fork server (which lives as long as the program), and
/// any zombie among our children or the server's.
auto leftover_processes() -> std::vector<proc_entry> {
  auto procs = all_processes();
  std::set<int> ours{::getpid()};
  int zygote = 0;
  for (const auto& p : procs) {
    if (p.ppid == ::getpid() && p.name == "procpool-zygote") zygote = p.pid;
  }
  std::vector<proc_entry> left;
  for (bool grew = true; grew;) {
    grew = false;
    for (const auto& p : procs) {
      if (ours.count(p.ppid) != 0 && ours.insert(p.pid).second) {
        grew = true;
        if (p.pid != zygote) left.push_back(p);
      }
    }
  }
  return left;
}

auto open_fd_count() -> int {
  int n = 0;
  DIR* d = ::opendir("/proc/self/fd");
  while (const dirent* e = ::readdir(d)) n += e->d_name[0] != '.';
  ::closedir(d);
  return n;
}

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
  EXPECT_TRUE(leftover_processes().empty());
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
