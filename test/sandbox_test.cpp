// pool_options::sandbox: tasks inside a sandboxed worker try what the sandbox forbids, and the pool
// keeps serving; ordinary work (results, exceptions, output, large arguments, progress) passes.
#include "procpool/sandbox.hpp"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <sys/prctl.h>
#include <sys/ptrace.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <stdexcept>
#include <string>
#include <vector>

#include "procpool/process_pool.hpp"
#include "procpool/progress.hpp"
#include "support/pool_fixture.hpp"

namespace procpool::test {
namespace {

using Sandbox = PoolTest;

auto error_of(long rc) -> long {
  return rc == -1 ? errno : 0;
}

auto open_socket(int) -> long {
  return static_cast<long>(::socket(AF_INET, SOCK_STREAM, 0));
}

// One bit per forbidden attempt that did not fail with EPERM.
auto attempt_escapes(int) -> long {
  long wrong = 0;
  int bit = 0;
  auto expect_eperm = [&](long rc) {
    if (error_of(rc) != EPERM) wrong |= 1L << bit;
    ++bit;
  };
  const pid_t parent = ::getppid();  // the fork server, which the pool relies on
  expect_eperm(::socket(AF_INET, SOCK_STREAM, 0));
  expect_eperm(::open("/etc/hostname", O_RDONLY));
  expect_eperm(::open("/tmp/procpool-sandbox-escape", O_WRONLY | O_CREAT, 0600));
  expect_eperm(::fork());
  expect_eperm(::kill(parent, SIGKILL));
  expect_eperm(::ptrace(PTRACE_ATTACH, parent, nullptr, nullptr));
  char buf[8];
  iovec local{buf, sizeof buf}, remote{buf, sizeof buf};
  expect_eperm(::process_vm_readv(parent, &local, 1, &remote, 1, 0));
  char* const argv[] = {const_cast<char*>("/bin/sh"), nullptr};
  expect_eperm(::execve("/bin/sh", argv, nullptr));
  expect_eperm(::setuid(0));
  return wrong;
}

auto connect_to(std::uint16_t port) -> long {
  const int s = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(port);
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  return error_of(::connect(s, reinterpret_cast<const sockaddr*>(&addr), sizeof addr));
}

auto identity(int) -> std::vector<long> {
  return {static_cast<long>(::getuid()), static_cast<long>(::getgid()),
          static_cast<long>(::prctl(PR_GET_NO_NEW_PRIVS, 0, 0, 0, 0))};
}

auto ordinary_work(std::vector<std::byte> big, int n) -> long {
  std::fprintf(stderr, "working on %zu bytes\n", big.size());
  long sum = 0;
  for (int i = 1; i <= n; ++i) {
    sum += i;
    report_progress(static_cast<std::uint64_t>(i), static_cast<std::uint64_t>(n));
  }
  if (n < 0) throw std::invalid_argument("n must not be negative");
  return sum + static_cast<long>(big.size());
}

// Burns about `ms` milliseconds of CPU time.
auto burn_cpu(int ms) -> int {
  timespec start{}, now{};
  ::clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &start);
  volatile long spin = 0;
  do {
    for (int i = 0; i < 100'000; ++i) spin = spin + i;
    ::clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &now);
  } while ((now.tv_sec - start.tv_sec) * 1000 + (now.tv_nsec - start.tv_nsec) / 1'000'000 < ms);
  return ms;
}

// The descriptors the worker holds among 0..1023 (one above 3 that is the same pipe as its
// stdout or stderr counts as 1 or 2: the worker keeps copies to see whether they hold unread
// output), and whether it has any environment.
auto descriptors_and_environment(int) -> std::vector<long> {
  auto same_file = [](int a, int b) {
    struct stat sa {
    }, sb{};
    return ::fstat(a, &sa) == 0 && ::fstat(b, &sb) == 0 && sa.st_dev == sb.st_dev &&
           sa.st_ino == sb.st_ino;
  };
  std::vector<long> out;
  for (int fd = 0; fd < 1024; ++fd) {
    if (::fcntl(fd, F_GETFD) == -1) continue;
    out.push_back(fd > 3 && same_file(fd, 1) ? 1 : fd > 3 && same_file(fd, 2) ? 2 : fd);
  }
  out.push_back(environ == nullptr || environ[0] == nullptr ? -1 : -2);
  return out;
}

auto square(int x) -> int {
  return x * x;
}

TEST_F(Sandbox, OrdinaryTasksPassInsideTheComputeOnlySandbox) {
  process_pool pool{io_.get_executor(), {.workers = 1, .sandbox = sandbox::compute_only()}};
  const std::vector<std::byte> big(std::size_t{2} << 20);  // through the shared task region
  int reports = 0;
  task_options options;
  options.on_progress = [&reports](const progress&) { ++reports; };
  EXPECT_EQ(get(pool.async_submit(options, ordinary_work, big, 100, asio::use_future)),
            5050 + static_cast<long>(big.size()));
  EXPECT_GE(reports, 1);
  EXPECT_THROW(
      get(pool.async_submit(ordinary_work, std::vector<std::byte>{}, -1, asio::use_future)),
      std::invalid_argument);
  EXPECT_EQ(pool.stats().crashed, 0U);
}

TEST_F(Sandbox, AForbiddenSystemCallKillsTheWorkerAndThePoolGoesOn) {
  process_pool pool{io_.get_executor(), {.workers = 1, .sandbox = sandbox::compute_only()}};
  try {
    get(pool.async_submit(open_socket, 0, asio::use_future));
    FAIL() << "expected worker_crashed";
  } catch (const worker_crashed& e) {
    EXPECT_EQ(e.signal(), SIGSYS) << e.what();
    const std::string what = e.what();
    EXPECT_NE(what.find("seccomp"), std::string::npos) << what;
    EXPECT_NE(what.find("it called socket ("), std::string::npos) << what;
  }
  EXPECT_EQ(get(pool.async_submit(square, 7, asio::use_future)), 49);
}

TEST_F(Sandbox, InFailCallModeEveryEscapeAttemptFailsWithEperm) {
  sandbox s = sandbox::compute_only();
  s.on_violation = sandbox::violation::fail_call;
  process_pool pool{io_.get_executor(), {.workers = 1, .sandbox = s}};
  EXPECT_EQ(get(pool.async_submit(attempt_escapes, 0, asio::use_future)), 0)
      << "bit n set: attempt n did not fail with EPERM";
  EXPECT_EQ(pool.stats().crashed, 0U);
}

TEST_F(Sandbox, AWorkerWithoutNetworkCannotReachTheHostsLoopback) {
  const int listener = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ASSERT_EQ(::bind(listener, reinterpret_cast<sockaddr*>(&addr), sizeof addr), 0);
  ASSERT_EQ(::listen(listener, 1), 0);
  socklen_t len = sizeof addr;
  ::getsockname(listener, reinterpret_cast<sockaddr*>(&addr), &len);
  sandbox s = sandbox::compute_only();
  s.system_call_filter = false;  // so that the task may try to connect at all
  process_pool pool{io_.get_executor(), {.workers = 1, .sandbox = s}};
  EXPECT_EQ(get(pool.async_submit(connect_to, ntohs(addr.sin_port), asio::use_future)),
            ENETUNREACH);
  EXPECT_EQ(::accept(listener, nullptr, nullptr), -1);  // nobody connected
  ::close(listener);
}

TEST_F(Sandbox, WorkersRunAsTheUnprivilegedUserWithNoNewPrivileges) {
  if (::geteuid() != 0) GTEST_SKIP() << "the uid is dropped only for a pool run as root";
  sandbox s = sandbox::compute_only();
  s.system_call_filter = false;  // so that the task may ask prctl
  process_pool pool{io_.get_executor(), {.workers = 1, .sandbox = s}};
  EXPECT_EQ(get(pool.async_submit(identity, 0, asio::use_future)),
            (std::vector<long>{65534, 65534, 1}));
}

TEST_F(Sandbox, AWorkerHoldsOnlyItsOwnDescriptorsAndNoEnvironment) {
  ASSERT_NE(std::getenv("PATH"), nullptr);  // the test program has an environment to leak
  process_pool pool{io_.get_executor(), {.workers = 1, .sandbox = sandbox::compute_only()}};
  // stdin (/dev/null), stdout, stderr, the channel, the copies of stdout and stderr; -1: no
  // environment.
  EXPECT_EQ(get(pool.async_submit(descriptors_and_environment, 0, asio::use_future)),
            (std::vector<long>{0, 1, 2, 3, 1, 2, -1}));
}

TEST_F(Sandbox, TheCpuTimeLimitIsRearmedForEachTaskAfterTheUidIsDropped) {
  // Unprivileged, the worker cannot raise a hard RLIMIT_CPU it lowered: each task must still get
  // its whole limit, not what the first task left.
  process_pool pool{io_.get_executor(),
                    {.workers = 1,
                     .cpu_time_limit = std::chrono::seconds(1),
                     .sandbox = sandbox::compute_only()}};
  for (int i = 0; i < 3; ++i)
    EXPECT_EQ(get(pool.async_submit(burn_cpu, 600, asio::use_future)), 600);
  EXPECT_THROW(get(pool.async_submit(burn_cpu, 5000, asio::use_future)), worker_crashed);
}

}  // namespace
}  // namespace procpool::test
