// Worker output: forwarded line by line with attribution, and attached to crash errors.
#include "procpool/output.hpp"

#include <poll.h>
#include <signal.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <iostream>
#include <mutex>
#include <string>
#include <vector>

#include "procpool/process_pool.hpp"
#include "procpool/wait_for.hpp"
#include "support/pool_fixture.hpp"
#include "support/tasks.hpp"

namespace procpool::test {
namespace {

struct captured {
  std::size_t worker;
  int pid;
  output_stream stream;
  std::string function;
  std::string text;
};

// Collects lines; the sink runs on the pool's executor, the test reads after a completion.
struct capture {
  std::mutex mutex;
  std::vector<captured> lines;
  auto sink() -> output_sink {
    return [this](const output_line& l) {
      std::lock_guard lock(mutex);
      lines.push_back({l.worker, l.pid, l.stream, std::string(l.function), std::string(l.text)});
    };
  }
  auto snapshot() -> std::vector<captured> {
    std::lock_guard lock(mutex);
    return lines;
  }
};

auto chatty(int n) -> int {
  for (int i = 0; i < n; ++i) std::printf("out line %d\n", i);
  std::cerr << "err line" << std::endl;
  std::printf("no newline at the end");
  return static_cast<int>(::getpid());
}

auto say_then_abort(int) -> int {
  std::fprintf(stderr, "about to fail: invariant violated\n");
  std::abort();
}

auto half_line_then_exit(int code) -> int {
  (void)!::write(2, "half a li", 9);
  ::_exit(code);
}

using WorkerOutput = PoolTest;

TEST_F(WorkerOutput, LinesReachTheSinkAttributedAndBeforeTheResult) {
  capture cap;
  process_pool pool{io_.get_executor(), {.workers = 1, .output = cap.sink()}};
  // The coroutine runs on the io thread, like the sink, so it sees every line the pool had
  // forwarded when the result arrived.
  auto [pid, seen] = run([&]() -> asio::awaitable<std::pair<int, std::vector<captured>>> {
    int p = co_await pool.submit(chatty, 3);
    co_return std::pair{p, cap.snapshot()};
  });
  ASSERT_EQ(seen.size(), 5U);
  for (int i = 0; i < 3; ++i) {
    const auto& l = seen[static_cast<std::size_t>(i)];
    EXPECT_EQ(l.text, "out line " + std::to_string(i));
    EXPECT_EQ(l.stream, output_stream::out);
    EXPECT_EQ(l.pid, pid);
    EXPECT_EQ(l.worker, 0U);
    EXPECT_NE(l.function.find("chatty"), std::string::npos) << l.function;
  }
  // stdout and stderr are separate pipes, so only each stream's own order is defined.
  bool saw_err = false, saw_partial = false;
  for (const auto& l : seen) {
    saw_err |= l.stream == output_stream::err && l.text == "err line";
    saw_partial |= l.stream == output_stream::out && l.text == "no newline at the end";
  }
  EXPECT_TRUE(saw_err);
  EXPECT_TRUE(saw_partial) << "stdout flushed after the task, so its unfinished line is a line";
}

TEST_F(WorkerOutput, ACrashErrorCarriesTheWorkersLastLines) {
  capture cap;
  process_pool pool{io_.get_executor(), {.workers = 1, .output = cap.sink()}};
  try {
    get(pool.async_submit(say_then_abort, 0, asio::use_future));
    FAIL() << "expected worker_crashed";
  } catch (const worker_crashed& e) {
    EXPECT_EQ(e.output_tail(), "about to fail: invariant violated\n");
    EXPECT_NE(std::string(e.what()).find("invariant violated"), std::string::npos) << e.what();
  }
}

TEST_F(WorkerOutput, AnUnfinishedLineIsNotLostWhenTheWorkerDies) {
  capture cap;
  process_pool pool{io_.get_executor(), {.workers = 1, .output = cap.sink()}};
  try {
    get(pool.async_submit(half_line_then_exit, 4, asio::use_future));
    FAIL() << "expected worker_crashed";
  } catch (const worker_crashed& e) {
    EXPECT_EQ(e.exit_code(), 4);
    EXPECT_EQ(e.output_tail(), "half a li\n");
  }
}

TEST_F(WorkerOutput, TheCrashTailHoldsStderrOnlyByDefault) {
  capture cap;
  process_pool pool{io_.get_executor(), {.workers = 1, .output = cap.sink()}};
  get(pool.async_submit(chatty, 3, asio::use_future));
  try {
    get(pool.async_submit(say_then_abort, 0, asio::use_future));
    FAIL() << "expected worker_crashed";
  } catch (const worker_crashed& e) {
    EXPECT_EQ(e.output_tail(), "err line\nabout to fail: invariant violated\n");
  }
}

// Writes only to stdout: the order in which the pool reads two pipes is not defined, so a test of
// the tail's order keeps each task's lines on one stream.
auto stdout_only(int n) -> int {
  for (int i = 0; i < n; ++i) std::printf("out line %d\n", i);
  std::printf("no newline at the end");
  return n;
}

TEST_F(WorkerOutput, TheTailKeepsOnlyTheConfiguredNumberOfLines) {
  capture cap;
  process_pool pool{io_.get_executor(),
                    {.workers = 1,
                     .output = cap.sink(),
                     .crash_output_lines = 2,
                     .crash_output_includes_stdout = true}};
  get(pool.async_submit(stdout_only, 5, asio::use_future));
  try {
    get(pool.async_submit(say_then_abort, 0, asio::use_future));
    FAIL() << "expected worker_crashed";
  } catch (const worker_crashed& e) {
    // The worker's earlier task wrote lines too; only the last two remain.
    EXPECT_EQ(e.output_tail(), "no newline at the end\nabout to fail: invariant violated\n");
  }
}

// ---- what a task starts dies with it ----

// Waits (hang-guarded) for `pid` to exit; true once it has. A pidfd becomes readable when the
// process exits, whoever its parent is.
auto exits(int pid) -> bool {
  const int fd = static_cast<int>(::syscall(SYS_pidfd_open, pid, 0));
  if (fd < 0) return errno == ESRCH;
  pollfd p{fd, POLLIN, 0};
  const int ready = ::poll(&p, 1, 30'000);
  ::close(fd);
  return ready == 1;
}

auto start_sleeper(int) -> int {
  const pid_t child = ::fork();
  if (child == 0) {
    for (;;) ::pause();
  }
  return static_cast<int>(child);
}

TEST_F(WorkerOutput, ProcessesATaskStartedDieWithItsWorker) {
  process_pool pool{io_.get_executor(), {.workers = 1}};
  const int grandchild = get(pool.async_submit(start_sleeper, 0, asio::use_future));
  ASSERT_EQ(::kill(grandchild, 0), 0);
  EXPECT_THROW(get(pool.async_submit(crash_abort, 0, asio::use_future)), worker_crashed);
  // The fork server kills the worker's process group when it reaps the worker.
  EXPECT_TRUE(exits(grandchild));
}

}  // namespace
}  // namespace procpool::test
