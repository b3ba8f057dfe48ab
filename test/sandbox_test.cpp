// pool_options::sandbox: tasks inside a sandboxed worker try what the sandbox forbids, and the pool
// keeps serving; ordinary work (results, exceptions, output, large arguments, progress) passes.
#include "procpool/sandbox.hpp"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <sched.h>
#include <sys/prctl.h>
#include <sys/ptrace.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <unistd.h>

#include <boost/asio/bind_cancellation_slot.hpp>
#include <boost/asio/cancellation_signal.hpp>
#include <cerrno>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <future>
#include <stdexcept>
#include <string>
#include <vector>

#include "procpool/process_pool.hpp"
#include "procpool/progress.hpp"
#include "support/pool_fixture.hpp"
#include "support/tasks.hpp"

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

// Each forbidden call, alone, in a task of a pool whose filter kills: the name worker_crashed
// must give.
auto call_socket(int) -> long {
  return ::socket(AF_INET, SOCK_STREAM, 0);
}
auto call_open(int) -> long {
  return ::open("/etc/hostname", O_RDONLY);
}
auto call_execve(int) -> long {
  char* const argv[] = {const_cast<char*>("/bin/sh"), nullptr};
  return ::execve("/bin/sh", argv, nullptr);
}
auto call_fork(int) -> long {
  return ::fork();
}
auto call_kill_parent(int) -> long {
  return ::kill(::getppid(), SIGKILL);
}
auto call_ptrace_parent(int) -> long {
  return ::ptrace(PTRACE_ATTACH, ::getppid(), nullptr, nullptr);
}
auto call_process_vm_readv(int) -> long {
  char buf[8];
  iovec local{buf, sizeof buf}, remote{buf, sizeof buf};
  return ::process_vm_readv(::getppid(), &local, 1, &remote, 1, 0);
}
auto call_setuid(int) -> long {
  return ::setuid(0);
}
auto call_unshare(int) -> long {
  return ::unshare(CLONE_NEWUSER);
}

struct forbidden_call {
  long (*task)(int);
  const char* name;  // as libseccomp names it
};

// Reports its pid (as progress), then waits to be cancelled.
auto report_pid_and_wait(int) -> int {
  report_progress(static_cast<std::uint64_t>(::getpid()), 0);
  for (;;) ::usleep(100'000);
}

// From one worker against another: one bit per attempt that did not fail with EPERM; -1 if it
// ran on the target itself.
auto attack_sibling(long target) -> long {
  if (target == ::getpid()) return -1;
  long wrong = 0;
  if (error_of(::kill(static_cast<pid_t>(target), SIGKILL)) != EPERM) wrong |= 1;
  if (error_of(::ptrace(PTRACE_ATTACH, static_cast<pid_t>(target), nullptr, nullptr)) != EPERM)
    wrong |= 2;
  char buf[8];
  iovec local{buf, sizeof buf}, remote{buf, sizeof buf};
  if (error_of(::process_vm_readv(static_cast<pid_t>(target), &local, 1, &remote, 1, 0)) != EPERM)
    wrong |= 4;
  return wrong;
}

// In a read-only files sandbox: what reading and writing inside and outside `dir` gives. The
// errno of each attempt, 0 when it succeeded.
auto file_attempts(std::string dir) -> std::vector<long> {
  std::vector<long> out;
  const int readable = ::open((dir + "/data.txt").c_str(), O_RDONLY);
  char c = 0;
  out.push_back(readable < 0 ? errno : (::read(readable, &c, 1) == 1 && c == 'd' ? 0 : -1));
  if (readable >= 0) ::close(readable);
  out.push_back(error_of(::open((dir + "/data.txt").c_str(), O_WRONLY)));
  out.push_back(error_of(::open((dir + "/new.txt").c_str(), O_WRONLY | O_CREAT, 0600)));
  out.push_back(error_of(::open("/etc/hostname", O_RDONLY)));
  out.push_back(error_of(::open("/tmp/procpool-sandbox-outside", O_WRONLY | O_CREAT, 0600)));
  out.push_back(error_of(::unlink((dir + "/data.txt").c_str())));
  out.push_back(error_of(::truncate((dir + "/data.txt").c_str(), 0)));
  return out;
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

TEST_F(Sandbox, EachForbiddenCallKillsItsWorkerAndTheErrorNamesIt) {
  process_pool pool{io_.get_executor(), {.workers = 1, .sandbox = sandbox::compute_only()}};
  const forbidden_call calls[] = {{call_socket, "socket"},
                                  {call_open, "openat"},
                                  {call_execve, "execve"},
                                  {call_fork, "clone"},
                                  {call_kill_parent, "kill"},
                                  {call_ptrace_parent, "ptrace"},
                                  {call_process_vm_readv, "process_vm_readv"},
                                  {call_setuid, "setuid"},
                                  {call_unshare, "unshare"}};
  for (const auto& call : calls) {
    try {
      get(pool.async_submit(call.task, 0, asio::use_future));
      ADD_FAILURE() << call.name << " was allowed";
    } catch (const worker_crashed& e) {
      EXPECT_EQ(e.signal(), SIGSYS) << e.what();
      const std::string what = e.what();
      EXPECT_NE(what.find("seccomp"), std::string::npos) << what;
#if defined(__SANITIZE_THREAD__)
      // glibc's setuid makes every thread call setuid, TSan's own thread first, and TSan's
      // runtime does not run the handler that names the call on it: only the kill is checked.
      if (call.task == call_setuid) continue;
#endif
      EXPECT_NE(what.find(std::string("it called ") + call.name + " ("), std::string::npos) << what;
    }
  }
  EXPECT_EQ(get(pool.async_submit(square, 9, asio::use_future)), 81);
  EXPECT_EQ(pool.stats().crashed, std::size(calls));
}

TEST_F(Sandbox, AWorkerCannotSignalTraceOrReadASiblingWorker) {
  sandbox s = sandbox::compute_only();
  s.on_violation = sandbox::violation::fail_call;
  process_pool pool{io_.get_executor(), {.workers = 2, .sandbox = s}};
  std::promise<long> sibling_pid;
  bool told = false;
  task_options options;
  options.on_progress = [&](const progress& p) {
    if (!std::exchange(told, true)) sibling_pid.set_value(static_cast<long>(p.done));
  };
  asio::cancellation_signal cancel;
  auto held = pool.async_submit(options, report_pid_and_wait, 0,
                                asio::bind_cancellation_slot(cancel.slot(), asio::use_future));
  auto pid_future = sibling_pid.get_future();
  ASSERT_EQ(pid_future.wait_for(hang_guard), std::future_status::ready);
  const long target = pid_future.get();
  // The holder's worker is busy: the attack runs on the other one.
  EXPECT_EQ(get(pool.async_submit(attack_sibling, target, asio::use_future)), 0)
      << "bit 0: kill, 1: ptrace, 2: process_vm_readv did not fail with EPERM";
  EXPECT_EQ(::kill(static_cast<pid_t>(target), 0), 0);  // the sibling is alive
  asio::post(io_, [&] { cancel.emit(asio::cancellation_type::terminal); });
  EXPECT_THROW(get(held), cancelled);
  EXPECT_EQ(pool.stats().crashed, 0U);
}

TEST_F(Sandbox, ReadOnlyFilesReadsBeneathItsPathsAndNothingElseAndWritesNothing) {
  const std::filesystem::path dir = std::filesystem::path(::testing::TempDir()) /
                                    ("procpool-sandbox-ro-" + std::to_string(::getpid()));
  std::filesystem::create_directories(dir);
  std::filesystem::permissions(
      dir, std::filesystem::perms::owner_all | std::filesystem::perms::group_read |
               std::filesystem::perms::group_exec | std::filesystem::perms::others_read |
               std::filesystem::perms::others_exec);
  std::ofstream(dir / "data.txt") << "data";
  for (const auto violation : {sandbox::violation::fail_call, sandbox::violation::kill_worker}) {
    sandbox s = sandbox::read_only_files({dir.string()});
    s.on_violation = violation;
    process_pool pool{io_.get_executor(), {.workers = 1, .sandbox = s}};
    // Read inside: yes. Write, create, unlink or truncate inside: EPERM (the filter: opening for
    // writing is not a read-only open). Read outside: EACCES (Landlock). Create outside: EPERM.
    if (violation == sandbox::violation::fail_call) {
      EXPECT_EQ(get(pool.async_submit(file_attempts, dir.string(), asio::use_future)),
                (std::vector<long>{0, EPERM, EPERM, EACCES, EPERM, EPERM, EPERM}));
    } else {
      // Killing mode: the first write attempt ends the worker, naming the call.
      try {
        get(pool.async_submit(file_attempts, dir.string(), asio::use_future));
        ADD_FAILURE() << "a write was allowed";
      } catch (const worker_crashed& e) {
        EXPECT_NE(std::string(e.what()).find("it called openat ("), std::string::npos) << e.what();
      }
    }
  }
  EXPECT_FALSE(std::filesystem::exists(dir / "new.txt"));
  EXPECT_FALSE(std::filesystem::exists("/tmp/procpool-sandbox-outside"));
  std::ifstream in(dir / "data.txt");
  std::string content;
  in >> content;
  EXPECT_EQ(content, "data");
  std::filesystem::remove_all(dir);
}

TEST(SandboxOptions, AnEmptyReadablePathIsRefusedAtConstruction) {
  asio::io_context io;
  EXPECT_THROW(
      (process_pool{io.get_executor(), {.workers = 1, .sandbox = sandbox::read_only_files({""})}}),
      std::invalid_argument);
}

}  // namespace
}  // namespace procpool::test
