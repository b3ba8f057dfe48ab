// Submitting work, crashes, cancellation, concurrency and large arguments.
#include "procpool/process_pool.hpp"

#include <algorithm>
#include <boost/asio/as_tuple.hpp>
#include <boost/asio/bind_cancellation_slot.hpp>
#include <boost/asio/cancellation_signal.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/post.hpp>
#include <csignal>
#include <numeric>
#include <ostream>
#include <string>
#include <vector>

#include "support/pool_fixture.hpp"
#include "support/tasks.hpp"

namespace procpool::test {
namespace {

using PoolSubmit = PoolTest;

TEST_F(PoolSubmit, ReturnsTheWorkersResultToACoroutine) {
  process_pool pool{io_.get_executor(), {.workers = 2}};
  int r = run([&]() -> asio::awaitable<int> { co_return co_await pool.submit(square, 12); });
  EXPECT_EQ(r, 144);
}

TEST_F(PoolSubmit, RunsTheTaskInAnotherProcess) {
  process_pool pool{io_.get_executor(), {.workers = 1}};
  int pid = run([&]() -> asio::awaitable<int> { co_return co_await pool.submit(my_pid); });
  EXPECT_NE(pid, ::getpid());
  EXPECT_EQ(pool.worker_pids(), std::vector<int>{pid});
}

TEST_F(PoolSubmit, AcceptsAUseFutureToken) {
  process_pool pool{io_.get_executor(), {.workers = 2}};
  std::future<long> f = pool.async_submit(add, 40, 2, asio::use_future);
  EXPECT_EQ(get(f), 42);
}

TEST_F(PoolSubmit, CallsACallbackExactlyOnceOnItsExecutor) {
  process_pool pool{io_.get_executor(), {.workers = 1}};
  std::promise<std::pair<int, bool>> done;
  int calls = 0;
  pool.async_submit(square, 5, [&](std::exception_ptr ep, int v) {
    ++calls;
    done.set_value({ep ? -1 : v, io_.get_executor().running_in_this_thread()});
  });
  auto [value, on_io_thread] = get(done.get_future());
  EXPECT_EQ(value, 25);
  EXPECT_TRUE(on_io_thread);
  EXPECT_EQ(calls, 1);
}

TEST_F(PoolSubmit, AcceptsAsTupleForErrorsAsValues) {
  process_pool pool{io_.get_executor(), {.workers = 1}};
  auto [ep, v] = run([&]() -> asio::awaitable<std::tuple<std::exception_ptr, int>> {
    co_return co_await pool.async_submit(crash_exit, 9, asio::as_tuple(asio::use_awaitable));
  });
  EXPECT_TRUE(ep);
  EXPECT_EQ(v, 0);
}

TEST_F(PoolSubmit, RunsCapturelessLambdasAndVoidFunctions) {
  process_pool pool{io_.get_executor(), {.workers = 1}};
  int r = run([&]() -> asio::awaitable<int> {
    co_await pool.submit([](int) {}, 1);
    co_return co_await pool.submit([](int a, int b) { return a * b; }, 6, 7);
  });
  EXPECT_EQ(r, 42);
}

TEST_F(PoolSubmit, AThousandConcurrentCoroutinesAllGetTheirOwnResult) {
  process_pool pool{io_.get_executor(), {.workers = 2}};
  constexpr int n = 1000;
  std::vector<int> results(n, -1);
  std::promise<void> all_done;
  int remaining = n;  // touched only on the io thread
  for (int i = 0; i < n; ++i) {
    asio::co_spawn(
        io_,
        [&, i]() -> asio::awaitable<void> {
          results[static_cast<std::size_t>(i)] = co_await pool.submit(square, i);
          if (--remaining == 0) all_done.set_value();
        },
        asio::detached);
  }
  get(all_done.get_future());
  for (int i = 0; i < n; ++i)
    ASSERT_EQ(results[static_cast<std::size_t>(i)], i * i) << "task " << i;
}

auto bump_bytes(std::vector<std::byte> data) -> std::vector<std::byte> {
  for (auto& b : data) b = static_cast<std::byte>(static_cast<unsigned>(b) + 1);
  return data;
}

TEST_F(PoolSubmit, RoundTripsA64MiBArgument) {
  process_pool pool{io_.get_executor(), {.workers = 1}};
  std::vector<std::byte> data(64u << 20);
  for (std::size_t i = 0; i < data.size(); ++i) data[i] = static_cast<std::byte>(i % 256);
  auto back = get(pool.async_submit(bump_bytes, data, asio::use_future));
  ASSERT_EQ(back.size(), data.size());
  std::vector<std::byte> expected(data.size());
  for (std::size_t i = 0; i < expected.size(); ++i)
    expected[i] = static_cast<std::byte>((i + 1) % 256);
  const auto [got, want] = std::mismatch(back.begin(), back.end(), expected.begin());
  EXPECT_TRUE(got == back.end()) << "first wrong byte at " << (got - back.begin());
}

// ---- crashes ----

struct crash_case {
  const char* name;
  int (*task)(int);
  int arg;
  int signal;
  int exit_code;
};

// GoogleTest prints a parameter in failure messages and test names' comments.
void PrintTo(const crash_case& c, std::ostream* os) {
  *os << c.name << "(" << c.arg << ")";
}

class PoolCrash : public PoolTest, public ::testing::WithParamInterface<crash_case> {};

TEST_P(PoolCrash, FailsOnlyItsTaskAndThePoolKeepsServing) {
  const crash_case& c = GetParam();
  process_pool pool{io_.get_executor(), {.workers = 2}};
  auto sibling = pool.async_submit(busy_sum, 20'000'000, asio::use_future);
  auto crashing = pool.async_submit(c.task, c.arg, asio::use_future);
  try {
    get(crashing);
    FAIL() << "expected worker_crashed";
  } catch (const worker_crashed& e) {
    EXPECT_EQ(e.signal(), c.signal) << e.what();
    EXPECT_EQ(e.exit_code(), c.exit_code) << e.what();
    EXPECT_GT(e.pid(), 0);
    EXPECT_NE(e.function().find(c.name), std::string::npos) << e.what();
    EXPECT_TRUE(process_gone(e.pid()));
  }
  EXPECT_EQ(get(sibling), 199'999'990'000'000L);
  EXPECT_EQ(get(pool.async_submit(square, 9, asio::use_future)), 81);
  EXPECT_EQ(pool.stats().crashed, 1U);
}

INSTANTIATE_TEST_SUITE_P(Deaths, PoolCrash,
                         ::testing::Values(crash_case{"crash_segv", crash_segv, 0, SIGSEGV, -1},
                                           crash_case{"crash_abort", crash_abort, 0, SIGABRT, -1},
                                           crash_case{"crash_exit", crash_exit, 3, 0, 3}),
                         [](const auto& test_info) { return std::string(test_info.param.name); });

// ---- cancellation ----

using PoolCancel = PoolTest;

TEST_F(PoolCancel, RemovesAQueuedTaskAndLeavesTheRunningOneAlone) {
  process_pool pool{io_.get_executor(), {.workers = 1}};
  get(pool.async_submit(square, 1, asio::use_future));  // the worker is up and idle
  asio::cancellation_signal running_signal, queued_signal;
  auto running = pool.async_submit(
      spin_forever, 0, asio::bind_cancellation_slot(running_signal.slot(), asio::use_future));
  auto queued = pool.async_submit(
      square, 2, asio::bind_cancellation_slot(queued_signal.slot(), asio::use_future));
  asio::post(io_, [&] { queued_signal.emit(asio::cancellation_type::total); });
  EXPECT_THROW(get(queued), cancelled);
  EXPECT_EQ(pool.stats().busy, 1U);
  asio::post(io_, [&] { running_signal.emit(asio::cancellation_type::terminal); });
  EXPECT_THROW(get(running), cancelled);
}

TEST_F(PoolCancel, TerminalCancellationKillsTheRunningWorker) {
  process_pool pool{io_.get_executor(), {.workers = 1}};
  const int first = get(pool.async_submit(my_pid, asio::use_future));
  asio::cancellation_signal signal;
  auto spinning = pool.async_submit(spin_forever, 0,
                                    asio::bind_cancellation_slot(signal.slot(), asio::use_future));
  asio::post(io_, [&] { signal.emit(asio::cancellation_type::terminal); });
  try {
    get(spinning);
    FAIL() << "expected cancelled";
  } catch (const cancelled& e) {
    EXPECT_NE(std::string(e.what()).find("was killed"), std::string::npos) << e.what();
  }
  EXPECT_TRUE(process_gone(first)) << "the spinning worker still exists: its CPU is not freed";
  const int second = get(pool.async_submit(my_pid, asio::use_future));
  EXPECT_NE(second, first);
  EXPECT_EQ(pool.stats().cancelled, 1U);
}

TEST_F(PoolCancel, PartialCancellationDoesNotInterruptARunningTask) {
  process_pool pool{io_.get_executor(), {.workers = 1}};
  get(pool.async_submit(square, 1, asio::use_future));
  asio::cancellation_signal signal;
  auto task = pool.async_submit(busy_sum, 30'000'000,
                                asio::bind_cancellation_slot(signal.slot(), asio::use_future));
  asio::post(io_, [&] { signal.emit(asio::cancellation_type::partial); });
  EXPECT_EQ(get(task), 449'999'985'000'000L);
}

}  // namespace
}  // namespace procpool::test
