// The fork server cannot fork (its pids cgroup is full): the pool fails the task clearly, holds no
// descriptor and no worker slot for the workers that never came, and heals once forks work again.
#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "procpool/process_pool.hpp"
#include "support/pool_fixture.hpp"
#include "support/process_inspection.hpp"
#include "support/tasks.hpp"

namespace procpool::test {
namespace {

namespace fs = std::filesystem;
using ForkFailure = PoolTest;

auto say_hello(int x) -> int {
  std::printf("hello from a worker\n");
  std::fflush(stdout);
  return x;
}

auto zygote_pid() -> int {
  for (const auto& p : all_processes()) {
    if (p.ppid == ::getpid() && p.name == "procpool-zygote") return p.pid;
  }
  return 0;
}

auto write_file(const fs::path& path, const std::string& text) -> bool {
  std::ofstream out(path);
  out << text;
  out.flush();
  return static_cast<bool>(out);
}

// A pids cgroup (v1 or v2) that lets the processes in it fork no further: the kernel's own way
// of making fork fail with EAGAIN, for one process of ours.
class fork_blocker {
 public:
  explicit fork_blocker(int pid) {
    for (const fs::path& root : {fs::path("/sys/fs/cgroup/pids"), fs::path("/sys/fs/cgroup")}) {
      if (!fs::exists(root / "cgroup.procs")) continue;
      if (root == "/sys/fs/cgroup" && !fs::exists(root / "cgroup.controllers")) continue;
      const fs::path dir = root / ("procpool-fork-test-" + std::to_string(::getpid()));
      if (::mkdir(dir.c_str(), 0755) != 0 && errno != EEXIST) continue;
      if (!fs::exists(dir / "pids.max")) {
        ::rmdir(dir.c_str());
        continue;
      }
      // The process itself is the one allowed: it cannot fork.
      if (write_file(dir / "pids.max", "1") &&
          write_file(dir / "cgroup.procs", std::to_string(pid))) {
        root_ = root;
        dir_ = dir;
        pid_ = pid;
        return;
      }
      ::rmdir(dir.c_str());
    }
  }
  ~fork_blocker() { release(); }
  fork_blocker(const fork_blocker&) = delete;
  auto operator=(const fork_blocker&) -> fork_blocker& = delete;

  [[nodiscard]] auto active() const -> bool { return !dir_.empty(); }
  /// Moves the process back where forks work and removes the cgroup.
  void release() {
    if (dir_.empty()) return;
    write_file(root_ / "cgroup.procs", std::to_string(pid_));
    ::rmdir(dir_.c_str());
    dir_.clear();
  }

 private:
  fs::path root_, dir_;
  int pid_ = 0;
};

TEST_F(ForkFailure, AFailedForkFreesTheWorkersDescriptorsAndSlotAndThePoolHeals) {
  std::mutex mutex;
  std::vector<std::size_t> slots;
  process_pool pool{io_.get_executor(), {.workers = 1, .output = [&](const output_line& line) {
                                           std::lock_guard lock(mutex);
                                           slots.push_back(line.worker);
                                         }}};
  ASSERT_EQ(get(pool.async_submit(square, 3, asio::use_future)), 9);
  const int fds_with_a_worker = open_fd_count();
  const int zygote = zygote_pid();
  ASSERT_NE(zygote, 0);
  fork_blocker blocker(zygote);
  if (!blocker.active()) GTEST_SKIP() << "no writable pids cgroup here (needs root and cgroups)";

  // The worker dies. The fork server may hold a worker it forked ahead of time, before the cgroup
  // filled up: that one takes the place, and dies the same way. Then every replacement's fork
  // fails (the pool retries with back-off, then gives up); a task submitted then tries again,
  // fails the same way and says why.
  EXPECT_THROW(get(pool.async_submit(crash_kill_self, 0, asio::use_future)), worker_crashed);
  try {
    get(pool.async_submit(crash_kill_self, 0, asio::use_future));
  } catch (const worker_crashed&) {
  } catch (const worker_start_failed&) {
  }
  try {
    get(pool.async_submit(square, 4, asio::use_future));
    ADD_FAILURE() << "a task ran although no worker could start";
  } catch (const worker_start_failed& e) {
    EXPECT_NE(std::string(e.what()).find("fork failed"), std::string::npos) << e.what();
  }
  // Nothing is left open for the workers that never started.
  EXPECT_LE(open_fd_count(), fds_with_a_worker);

  blocker.release();
  ASSERT_EQ(get(pool.async_submit(say_hello, 5, asio::use_future)), 5);
  const auto give_up = std::chrono::steady_clock::now() + hang_guard;
  for (;;) {
    {
      std::lock_guard lock(mutex);
      if (!slots.empty()) break;
    }
    ASSERT_LT(std::chrono::steady_clock::now(), give_up) << "the worker's line never arrived";
    std::this_thread::sleep_for(5ms);
  }
  std::lock_guard lock(mutex);
  // One worker: slot 0, as output.hpp promises (0 .. workers - 1), not a slot past the failures.
  EXPECT_EQ(slots.front(), 0U);
}

}  // namespace
}  // namespace procpool::test
