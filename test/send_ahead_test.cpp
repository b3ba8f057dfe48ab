// pool_options::send_ahead: a busy worker holds the next tasks while it runs the current one. What
// must stay exact: tasks held ahead that never started are re-queued in order (not failed, not a
// retry) when their worker dies, is killed for a timeout or cancelled; a result written just before
// the worker died is delivered; a held task the caller cancels is skipped, not run; a worker is
// sent nothing past its recycling point; every outcome of a crash-ridden stream is the right one.
//
// A worker is held at a known point with a FIFO: the task opens it for reading, which blocks until
// the test opens it for writing, and then waits for one byte.
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <boost/asio/bind_cancellation_slot.hpp>
#include <boost/asio/cancellation_signal.hpp>
#include <cstdio>
#include <cstdlib>
#include <ctime>
#include <map>
#include <string>
#include <vector>

#include "procpool/process_pool.hpp"
#include "support/pool_fixture.hpp"
#include "support/tasks.hpp"

namespace procpool::test {
namespace {

using SendAhead = PoolTest;

// Waits at the gate, then returns x * x (or aborts when x < 0).
auto gated(std::string fifo, int x) -> int {
  const int fd = ::open(fifo.c_str(), O_RDONLY);
  char byte = 0;
  if (fd < 0 || ::read(fd, &byte, 1) != 1) std::_Exit(9);
  ::close(fd);
  if (x < 0) std::abort();
  return x * x;
}

auto crash_if_negative(int x) -> int {
  if (x < 0) std::abort();
  return x * x;
}

// A FIFO the test holds a worker at: open() returns once a task is waiting at it.
class gate {
 public:
  gate() : path_(::testing::TempDir() + "procpool_gate_" + std::to_string(::getpid())) {
    ::unlink(path_.c_str());
    EXPECT_EQ(::mkfifo(path_.c_str(), 0600), 0);
  }
  ~gate() {
    if (fd_ >= 0) ::close(fd_);
    ::unlink(path_.c_str());
  }
  gate(const gate&) = delete;
  auto operator=(const gate&) -> gate& = delete;

  [[nodiscard]] auto path() const -> const std::string& { return path_; }
  /// Returns once a task has opened the gate, i.e. is running and waiting at it.
  void wait_for_task() { fd_ = ::open(path_.c_str(), O_WRONLY); }
  /// Lets it go on.
  void release() {
    const char byte = 'g';
    EXPECT_EQ(::write(fd_, &byte, 1), 1);
    ::close(fd_);
    fd_ = -1;
  }

 private:
  std::string path_;
  int fd_ = -1;
};

TEST_F(SendAhead, ATaskHeldAheadWhoseWorkerCrashesRunsOnAnotherWorkerAndIsNoRetry) {
  gate g;
  process_pool pool{io_.get_executor(), {.workers = 1, .send_ahead = 1}};
  auto crashing = pool.async_submit(gated, g.path(), -1, asio::use_future);
  auto held = pool.async_submit(square, 3, asio::use_future);
  g.wait_for_task();
  const auto s = pool.stats();
  EXPECT_EQ(s.busy, 1U);
  EXPECT_EQ(s.queued, 1U);  // the task held ahead counts as not started
  g.release();
  EXPECT_THROW(get(crashing), worker_crashed);
  EXPECT_EQ(get(held), 9);
  EXPECT_EQ(pool.stats().crashed, 1U);
  EXPECT_EQ(pool.stats().retried, 0U);
}

TEST_F(SendAhead, AResultWrittenJustBeforeTheWorkerDiedIsDelivered) {
  gate g;
  process_pool pool{io_.get_executor(), {.workers = 1, .send_ahead = 1}};
  // The worker writes the first result and at once dies in the task it holds ahead: its death can
  // reach the pool before the result is read, and must not take the result with it.
  auto first = pool.async_submit(gated, g.path(), 5, asio::use_future);
  auto dying = pool.async_submit(crash_if_negative, -1, asio::use_future);
  g.wait_for_task();
  g.release();
  EXPECT_EQ(get(first), 25);
  EXPECT_THROW(get(dying), worker_crashed);
  EXPECT_EQ(pool.stats().crashed, 1U);
  EXPECT_EQ(pool.stats().completed, 1U);
}

class SkipOnCancellation : public PoolTest,
                           public ::testing::WithParamInterface<asio::cancellation_type> {};

TEST_P(SkipOnCancellation, ACancelledTaskHeldAheadIsSkippedNotRunAndItsWorkerLives) {
  gate g;
  process_pool pool{io_.get_executor(), {.workers = 1, .send_ahead = 1}};
  auto running = pool.async_submit(gated, g.path(), 2, asio::use_future);
  asio::cancellation_signal signal;
  auto held = pool.async_submit(crash_if_negative, -1,
                                asio::bind_cancellation_slot(signal.slot(), asio::use_future));
  g.wait_for_task();
  // Had it run, the worker would crash once the gate opens. The cancellation completes when the
  // worker reaches the task and skips it.
  signal.emit(GetParam());
  g.release();
  EXPECT_EQ(get(running), 4);
  EXPECT_THROW(get(held), cancelled);
  const auto s = pool.stats();
  EXPECT_EQ(s.crashed, 0U);
  EXPECT_EQ(s.cancelled, 1U);
  EXPECT_EQ(get(pool.async_submit(crash_if_negative, 5, asio::use_future)), 25);  // same worker
  EXPECT_EQ(pool.stats().respawned, 0U);
}

INSTANTIATE_TEST_SUITE_P(PartialAndTerminal, SkipOnCancellation,
                         ::testing::Values(asio::cancellation_type::partial,
                                           asio::cancellation_type::terminal));

TEST_F(SendAhead, ATaskHeldBehindOneThatTimesOutRunsOnTheNextWorker) {
  gate g;  // never opened: the first task waits at it until its timeout kills the worker
  process_pool pool{io_.get_executor(), {.workers = 1, .send_ahead = 4}};
  auto stuck = pool.async_submit(task_options{.timeout = std::chrono::milliseconds(100)}, gated,
                                 g.path(), 1, asio::use_future);
  auto held = pool.async_submit(crash_if_negative, 6, asio::use_future);
  EXPECT_THROW(get(stuck), timeout_error);
  EXPECT_EQ(get(held), 36);
  EXPECT_EQ(pool.stats().timed_out, 1U);
  EXPECT_EQ(pool.stats().retried, 0U);
}

TEST_F(SendAhead, ATaskHeldBehindARunningTaskCancelledTerminallyRunsOnTheNextWorker) {
  gate g;
  process_pool pool{io_.get_executor(), {.workers = 1, .send_ahead = 4}};
  asio::cancellation_signal signal;
  auto running = pool.async_submit(gated, g.path(), 1,
                                   asio::bind_cancellation_slot(signal.slot(), asio::use_future));
  auto held = pool.async_submit(crash_if_negative, 7, asio::use_future);
  g.wait_for_task();
  signal.emit(asio::cancellation_type::terminal);  // kills the worker running the first task
  EXPECT_THROW(get(running), cancelled);
  EXPECT_EQ(get(held), 49);
  EXPECT_EQ(pool.stats().crashed, 0U);
}

auto monotonic_ns(int) -> std::int64_t {
  timespec ts{};
  ::clock_gettime(CLOCK_MONOTONIC, &ts);
  return std::int64_t{ts.tv_sec} * 1'000'000'000 + ts.tv_nsec;
}

auto pid_of_worker(int) -> int {
  return ::getpid();
}

TEST_F(SendAhead, TasksHeldAheadOfACrashedWorkerRunElsewhereInTheirOrder) {
  gate g;
  process_pool pool{io_.get_executor(), {.workers = 1, .send_ahead = 8}};
  auto crashing = pool.async_submit(gated, g.path(), -1, asio::use_future);
  std::vector<std::future<std::int64_t>> held;
  for (int i = 0; i < 8; ++i) held.push_back(pool.async_submit(monotonic_ns, i, asio::use_future));
  g.wait_for_task();
  EXPECT_EQ(pool.stats().queued, 8U);  // held ahead or queued: none started
  g.release();
  EXPECT_THROW(get(crashing), worker_crashed);
  std::int64_t previous = 0;
  for (auto& f : held) {
    const std::int64_t started = get(f);
    EXPECT_GT(started, previous);  // one worker ran them one after another, in submission order
    previous = started;
  }
  EXPECT_EQ(pool.stats().crashed, 1U);
  EXPECT_EQ(pool.stats().retried, 0U);
}

TEST_F(SendAhead, AWorkerIsSentNoTaskBeyondItsLastBeforeRecycling) {
  process_pool pool{io_.get_executor(), {.workers = 1, .send_ahead = 8, .max_tasks_per_worker = 3}};
  std::vector<std::future<int>> pids;
  for (int i = 0; i < 20; ++i)
    pids.push_back(pool.async_submit(pid_of_worker, i, asio::use_future));
  std::map<int, int> tasks_per_pid;
  for (auto& f : pids) ++tasks_per_pid[get(f)];
  for (const auto& [pid, n] : tasks_per_pid) EXPECT_LE(n, 3) << "pid " << pid;
  EXPECT_GE(tasks_per_pid.size(), 7U);
  EXPECT_EQ(pool.stats().crashed, 0U);
}

class SendAheadDepth : public PoolTest, public ::testing::WithParamInterface<std::size_t> {};

TEST_P(SendAheadDepth, EveryOutcomeOfACrashRiddenStreamIsExact) {
  process_pool pool{io_.get_executor(), {.workers = 2, .send_ahead = GetParam()}};
  constexpr int tasks = 2000;
  std::vector<std::future<int>> results;
  results.reserve(tasks);
  for (int i = 0; i < tasks; ++i) {
    results.push_back(
        pool.async_submit(crash_if_negative, i % 97 == 0 ? -1 : i % 1000, asio::use_future));
  }
  int crashed = 0;
  for (int i = 0; i < tasks; ++i) {
    if (i % 97 == 0) {
      EXPECT_THROW(get(results[static_cast<std::size_t>(i)]), worker_crashed) << "task " << i;
      ++crashed;
    } else {
      EXPECT_EQ(get(results[static_cast<std::size_t>(i)]), (i % 1000) * (i % 1000)) << "task " << i;
    }
  }
  const auto s = pool.stats();
  EXPECT_EQ(s.crashed, static_cast<std::uint64_t>(crashed));
  EXPECT_EQ(s.completed, static_cast<std::uint64_t>(tasks - crashed));
  EXPECT_EQ(s.retried, 0U);
}

INSTANTIATE_TEST_SUITE_P(OneAndSixteen, SendAheadDepth, ::testing::Values(1, 16));

}  // namespace
}  // namespace procpool::test
