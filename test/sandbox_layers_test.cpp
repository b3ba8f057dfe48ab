// The worker sandbox's layers, each applied alone in a forked child that then tries what the layer
// forbids (and what it must still allow). Not yet the pool's sandbox: the layers are wired into
// the fork server in a later step.
#include "sandbox_layers.hpp"

#include <arpa/inet.h>
#include <fcntl.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/prctl.h>
#include <sys/ptrace.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <csignal>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <string>
#include <thread>
#include <vector>

namespace procpool::test {
namespace {

struct child_outcome {
  int status = 0;      // as waitpid reports it
  long value = -9999;  // what the child's body returned, if it got that far
};

// Runs `body` in a forked child and returns how the child ended and what the body returned.
auto in_child(const std::function<long()>& body) -> child_outcome {
  int pipe_fds[2];
  EXPECT_EQ(::pipe2(pipe_fds, O_CLOEXEC), 0);
  const pid_t pid = ::fork();
  if (pid == 0) {
    ::close(pipe_fds[0]);
    const long v = body();
    (void)!::write(pipe_fds[1], &v, sizeof v);
    ::_exit(0);
  }
  ::close(pipe_fds[1]);
  child_outcome out;
  if (::read(pipe_fds[0], &out.value, sizeof out.value) != sizeof out.value) out.value = -9999;
  ::close(pipe_fds[0]);
  ::waitpid(pid, &out.status, 0);
  return out;
}

// The errno of a call that returned -1, or 0 if it succeeded.
auto error_of(long rc) -> long {
  return rc == -1 ? errno : 0;
}

TEST(SandboxLayers, NoNewPrivsIsSet) {
  const auto out = in_child([] {
    if (!detail::set_no_new_privs().empty()) return -1L;
    return static_cast<long>(::prctl(PR_GET_NO_NEW_PRIVS, 0, 0, 0, 0));
  });
  EXPECT_EQ(out.value, 1);
}

TEST(SandboxLayers, TheComputeFilterKillsAProcessThatOpensASocket) {
  const auto out = in_child([] {
    if (!detail::load_compute_filter(detail::seccomp_violation::kill_process, false).empty()) {
      return -1L;
    }
    return static_cast<long>(::socket(AF_INET, SOCK_STREAM, 0));
  });
  ASSERT_TRUE(WIFSIGNALED(out.status)) << out.status;
  EXPECT_EQ(WTERMSIG(out.status), SIGSYS);
}

TEST(SandboxLayers, TheComputeFilterLetsComputationThreadsAndItsOwnDescriptorsWork) {
  const auto out = in_child([] {
    if (!detail::load_compute_filter(detail::seccomp_violation::kill_process, false).empty()) {
      return -1L;
    }
    std::vector<std::vector<int>> blocks;  // malloc, large and small
    for (int i = 0; i < 64; ++i) blocks.emplace_back(1 << (i % 20), i);
    long sum = 0;
    std::thread t([&] {  // clone3 refused with ENOSYS, clone with CLONE_THREAD allowed
      for (const auto& b : blocks) sum += b.empty() ? 0 : b.front();
    });
    t.join();
    (void)std::getenv("HOME");
    return sum;  // written to the pipe: write on a descriptor it has
  });
  EXPECT_TRUE(WIFEXITED(out.status)) << out.status;
  EXPECT_EQ(out.value, 63L * 64 / 2);
}

TEST(SandboxLayers, InFailCallModeEachForbiddenCallFailsWithEperm) {
  const pid_t parent = ::getpid();
  const auto out = in_child([parent] {
    if (!detail::load_compute_filter(detail::seccomp_violation::fail_call, false).empty()) {
      return -1L;
    }
    // One bit per attempt that did not fail with EPERM.
    long wrong = 0;
    int bit = 0;
    auto expect_eperm = [&](long rc) {
      if (error_of(rc) != EPERM) wrong |= 1L << bit;
      ++bit;
    };
    expect_eperm(::socket(AF_INET, SOCK_STREAM, 0));
    expect_eperm(::open("/etc/hostname", O_RDONLY));
#if !defined(__SANITIZE_THREAD__)
    // TSan's fork interceptor aborts the process when the fork itself fails; the pool-level test
    // (Sandbox.InFailCallModeEveryEscapeAttemptFailsWithEperm) covers fork under TSan.
    expect_eperm(::fork());
#endif
    expect_eperm(::kill(parent, 0));
    expect_eperm(::ptrace(PTRACE_ATTACH, parent, nullptr, nullptr));
    char buf[8];
    iovec local{buf, sizeof buf}, remote{buf, sizeof buf};
    expect_eperm(::process_vm_readv(parent, &local, 1, &remote, 1, 0));
    char* const argv[] = {const_cast<char*>("/bin/true"), nullptr};
    expect_eperm(::execve("/bin/true", argv, nullptr));
    expect_eperm(::setuid(0));
    struct sigaction ignore {};
    ignore.sa_handler = SIG_IGN;
    expect_eperm(::sigaction(SIGSYS, &ignore, nullptr));
    expect_eperm(::unshare(CLONE_NEWUSER));
    return wrong;
  });
  EXPECT_TRUE(WIFEXITED(out.status)) << out.status;
  EXPECT_EQ(out.value, 0) << "bit n set: attempt n did not fail with EPERM";
}

TEST(SandboxLayers, WithReadOnlyOpenFilesAreReadButNeverWritten) {
  const std::string path = ::testing::TempDir() + "sandbox_layers_read_only.txt";
  std::ofstream(path) << "content";
  const auto out = in_child([&path] {
    if (!detail::load_compute_filter(detail::seccomp_violation::fail_call, true).empty()) {
      return -1L;
    }
    const int fd = ::open(path.c_str(), O_RDONLY);
    if (fd < 0) return -2L;
    char c = 0;
    if (::read(fd, &c, 1) != 1 || c != 'c') return -3L;
    ::close(fd);
    if (error_of(::open(path.c_str(), O_WRONLY)) != EPERM) return -4L;
    if (error_of(::open(path.c_str(), O_RDONLY | O_TRUNC)) != EPERM) return -5L;
    if (error_of(::open((path + ".new").c_str(), O_RDONLY | O_CREAT, 0600)) != EPERM) return -6L;
    if (error_of(::unlink(path.c_str())) != EPERM) return -7L;
    return 0L;
  });
  EXPECT_EQ(out.value, 0);
  EXPECT_TRUE(std::filesystem::exists(path));
  EXPECT_FALSE(std::filesystem::exists(path + ".new"));
}

TEST(SandboxLayers, ANewNetworkNamespaceReachesNothingNotEvenTheHostsLoopback) {
  const int listener = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ASSERT_EQ(::bind(listener, reinterpret_cast<sockaddr*>(&addr), sizeof addr), 0);
  ASSERT_EQ(::listen(listener, 1), 0);
  socklen_t len = sizeof addr;
  ::getsockname(listener, reinterpret_cast<sockaddr*>(&addr), &len);
  const auto out = in_child([addr] {
    if (auto why = detail::unshare_network(); !why.empty()) {
      std::fprintf(stderr, "%s\n", why.c_str());
      return -1L;
    }
    const int s = ::socket(AF_INET, SOCK_STREAM, 0);
    return error_of(::connect(s, reinterpret_cast<const sockaddr*>(&addr), sizeof addr));
  });
  EXPECT_EQ(out.value, ENETUNREACH);
  // Nobody connected to the host's listener.
  ::fcntl(listener, F_SETFL, O_NONBLOCK);
  EXPECT_EQ(::accept(listener, nullptr, nullptr), -1);
  ::close(listener);
}

TEST(SandboxLayers, DroppingPrivilegesCannotBeUndone) {
  if (::geteuid() != 0) GTEST_SKIP() << "needs root (CI runs as root)";
  const auto out = in_child([] {
    if (!detail::drop_privileges(65534, 65534).empty()) return -1L;
    if (::getuid() != 65534 || ::getgid() != 65534 || ::getgroups(0, nullptr) != 0) return -2L;
    return error_of(::setuid(0));
  });
  EXPECT_EQ(out.value, EPERM);
}

TEST(SandboxLayers, LandlockAllowsReadingBeneathTheGivenPathsAndNothingElse) {
  if (detail::landlock_abi() == 0) GTEST_SKIP() << "this kernel has no Landlock";
  const std::string dir = ::testing::TempDir() + "sandbox_layers_landlock";
  std::filesystem::create_directories(dir);
  std::ofstream(dir + "/allowed.txt") << "x";
  const auto out = in_child([&dir] {
    if (!detail::set_no_new_privs().empty()) return -1L;
    if (auto why = detail::restrict_filesystem({dir}); !why.empty()) {
      std::fprintf(stderr, "%s\n", why.c_str());
      return -2L;
    }
    const int fd = ::open((dir + "/allowed.txt").c_str(), O_RDONLY);
    if (fd < 0) return -3L;
    ::close(fd);
    if (error_of(::open((dir + "/allowed.txt").c_str(), O_WRONLY)) != EACCES) return -4L;
    if (error_of(::open((dir + "/new.txt").c_str(), O_WRONLY | O_CREAT, 0600)) != EACCES) {
      return -5L;
    }
    if (error_of(::open("/etc/hostname", O_RDONLY)) != EACCES) return -6L;
    if (error_of(::unlink((dir + "/allowed.txt").c_str())) != EACCES) return -7L;
    return 0L;
  });
  EXPECT_EQ(out.value, 0);
  EXPECT_TRUE(std::filesystem::exists(dir + "/allowed.txt"));
}

}  // namespace
}  // namespace procpool::test
