// When the program is SIGKILLed, its fork server and workers die too: no orphans.
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstdio>
#include <string>
#include <vector>

#include "support/pool_fixture.hpp"

extern char** environ;

namespace procpool::test {
namespace {

// Waits up to `limit` for `pid` to exit (it need not be our child); true once it has.
auto exits_within(int pid, std::chrono::milliseconds limit) -> bool {
  const int fd = static_cast<int>(::syscall(SYS_pidfd_open, pid, 0));
  if (fd < 0) return errno == ESRCH;
  pollfd p{fd, POLLIN, 0};
  const int ready = ::poll(&p, 1, static_cast<int>(limit.count()));
  ::close(fd);
  return ready == 1;
}

TEST(ParentDeath, ForkServerAndBusyWorkersDieWithinASecondOfTheProgram) {
  int out[2];
  ASSERT_EQ(::pipe(out), 0);
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_adddup2(&actions, out[1], 1);
  posix_spawn_file_actions_addclose(&actions, out[0]);
  char* argv[] = {const_cast<char*>(PROCPOOL_POOL_THEN_WAIT), nullptr};
  pid_t helper = 0;
  ASSERT_EQ(::posix_spawn(&helper, PROCPOOL_POOL_THEN_WAIT, &actions, nullptr, argv, environ), 0);
  posix_spawn_file_actions_destroy(&actions);
  ::close(out[1]);

  // The helper prints its pids once its workers are busy (a blocking read: the event itself).
  std::string text;
  char c;
  while (text.find('\n') == std::string::npos && ::read(out[0], &c, 1) == 1) text += c;
  ::close(out[0]);
  int zygote = 0, w1 = 0, w2 = 0;
  ASSERT_EQ(std::sscanf(text.c_str(), "pids: %d %d %d", &zygote, &w1, &w2), 3) << text;
  ASSERT_GT(zygote, 0);

  const auto killed_at = std::chrono::steady_clock::now();
  ASSERT_EQ(::kill(helper, SIGKILL), 0);
  int status = 0;
  ASSERT_EQ(::waitpid(helper, &status, 0), helper);
  for (int pid : {zygote, w1, w2}) {
    // Parent-death signals are sent by the kernel as each parent exits, so a second is plenty
    // even on a loaded machine.
    EXPECT_TRUE(exits_within(pid, std::chrono::milliseconds(1000)))
        << "pid " << pid << " outlived the program";
  }
  const auto took = std::chrono::steady_clock::now() - killed_at;
  std::printf("all gone %.2f ms after SIGKILL\n",
              std::chrono::duration<double, std::milli>(took).count());
}

}  // namespace
}  // namespace procpool::test
