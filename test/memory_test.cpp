// Memory: recycling a worker whose resident memory grew too large, a per-worker memory cgroup whose
// OOM kill is reported as such, and a kernel OOM kill the pool did not ask for, told apart too.
#include <sys/stat.h>
#include <unistd.h>

#include <csignal>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "procpool/process_pool.hpp"
#include "support/pool_fixture.hpp"
#include "support/tasks.hpp"

namespace procpool::test {
namespace {

using Memory = PoolTest;

// This process's resident memory in bytes.
auto resident_self() -> std::size_t {
  std::ifstream statm("/proc/self/statm");
  std::size_t size = 0, resident = 0;
  statm >> size >> resident;
  return resident * static_cast<std::size_t>(::sysconf(_SC_PAGESIZE));
}

// Allocates and touches `mib` MiB that it never frees (a leak, as far as the worker goes).
auto leak_mib(int mib) -> int {
  static std::vector<std::vector<char>> kept;
  kept.emplace_back(static_cast<std::size_t>(mib) << 20, 1);
  return static_cast<int>(::getpid());
}

// Allocates and touches `mib` MiB, one MiB at a time, then frees it all.
auto touch_mib(int mib) -> int {
  std::vector<std::vector<char>> blocks;
  for (int i = 0; i < mib; ++i) blocks.emplace_back(std::size_t{1} << 20, 1);
  return static_cast<int>(blocks.size());
}

auto leak_mib_then_resident(int mib) -> std::size_t {
  leak_mib(mib);
  return resident_self();
}

TEST_F(Memory, AWorkerWhoseResidentMemoryPassesTheThresholdIsRecycledBetweenTasks) {
  // What 8 MiB leaked costs in resident memory here (sanitizers add their shadow memory).
  std::size_t baseline = 0, per_8_mib = 0;
  {
    process_pool probe{io_.get_executor(), {.workers = 1}};
    baseline = get(probe.async_submit(resident_self, asio::use_future));
    per_8_mib = get(probe.async_submit(leak_mib_then_resident, 8, asio::use_future)) - baseline;
  }
  process_pool pool{io_.get_executor(),
                    {.workers = 1, .max_worker_rss_bytes = baseline + 3 * per_8_mib}};
  const int first = get(pool.async_submit(leak_mib, 8, asio::use_future));
  EXPECT_EQ(get(pool.async_submit(leak_mib, 8, asio::use_future)), first) << "16 MiB: kept";
  EXPECT_EQ(get(pool.async_submit(leak_mib, 64, asio::use_future)), first) << "the task finishes";
  EXPECT_NE(get(pool.async_submit(my_pid, asio::use_future)), first) << "then it is replaced";
  EXPECT_EQ(pool.stats().recycled, 1U);
  EXPECT_EQ(pool.stats().crashed, 0U);
}

// This process's memory cgroup directory (the v1 memory hierarchy, else v2).
auto own_memory_cgroup_dir() -> std::string {
  std::ifstream in("/proc/self/cgroup");
  std::string line, v1, v2;
  while (std::getline(in, line)) {
    if (line.find(":memory:") != std::string::npos) v1 = line.substr(line.rfind(':') + 1);
    if (line.rfind("0::", 0) == 0) v2 = line.substr(3);
  }
  const std::string base = !v1.empty() ? "/sys/fs/cgroup/memory" + v1 : "/sys/fs/cgroup" + v2;
  return base;
}

// The workers' own cgroups under this process's memory cgroup.
auto worker_cgroups() -> int {
  const std::string base = own_memory_cgroup_dir();
  int n = 0;
  for (const auto& entry : std::filesystem::directory_iterator(base)) {
    n += entry.path().filename().string().rfind("procpool-worker-", 0) == 0 ? 1 : 0;
  }
  return n;
}

TEST_F(Memory, AWorkerOverItsMemoryCgroupLimitIsOomKilledAndTheErrorSaysSo) {
  {
    process_pool pool{io_.get_executor(),
                      {.workers = 1, .memory_max_bytes = std::size_t{128} << 20}};
    try {
      get(pool.async_submit(square, 2, asio::use_future));
    } catch (const worker_start_failed& e) {
      GTEST_SKIP() << "no writable memory cgroup here: " << e.what();
    }
    EXPECT_EQ(get(pool.async_submit(touch_mib, 16, asio::use_future)), 16);
    try {
      get(pool.async_submit(touch_mib, 1024, asio::use_future));
      FAIL() << "expected worker_crashed";
    } catch (const worker_crashed& e) {
      EXPECT_EQ(e.signal(), SIGKILL) << e.what();
      EXPECT_TRUE(e.out_of_memory()) << e.what();
      EXPECT_NE(e.detail().find("memory_max_bytes"), std::string::npos) << e.what();
    }
    EXPECT_EQ(get(pool.async_submit(square, 3, asio::use_future)), 9) << "the pool heals";
  }
  EXPECT_EQ(worker_cgroups(), 0) << "each worker's cgroup is removed when it is reaped";
}

// A memory cgroup the test makes itself (v1 or v2), to get a worker OOM-killed without procpool
// having limited it.
class test_cgroup {
 public:
  explicit test_cgroup(std::size_t limit) {
    const std::string base = own_memory_cgroup_dir();
    dir_ = base + "/procpool-test-" + std::to_string(::getpid());
    if (::mkdir(dir_.c_str(), 0755) != 0) {
      dir_.clear();
      return;
    }
    const bool v2_dir = ::access((dir_ + "/memory.max").c_str(), F_OK) == 0;
    ok_ = write(v2_dir ? "memory.max" : "memory.limit_in_bytes", std::to_string(limit));
    if (!v2_dir && ::access((dir_ + "/memory.memsw.limit_in_bytes").c_str(), F_OK) == 0)
      ok_ = ok_ && write("memory.memsw.limit_in_bytes", std::to_string(limit));
  }
  ~test_cgroup() {
    if (!dir_.empty()) ::rmdir(dir_.c_str());
  }
  [[nodiscard]] auto ok() const -> bool { return ok_; }
  auto add(int pid) -> bool { return write("cgroup.procs", std::to_string(pid)); }

 private:
  auto write(const std::string& file, const std::string& value) -> bool {
    std::ofstream out(dir_ + "/" + file);
    out << value << std::flush;
    return static_cast<bool>(out);
  }
  std::string dir_;
  bool ok_ = false;
};

TEST_F(Memory, AKernelOomKillTheParentDidNotAskForIsToldApartFromOtherKills) {
  test_cgroup cgroup(std::size_t{128} << 20);
  if (!cgroup.ok()) GTEST_SKIP() << "cannot create a memory cgroup here (needs root)";
  {
    process_pool pool{io_.get_executor(), {.workers = 1}};
    const int pid = get(pool.async_submit(my_pid, asio::use_future));
    ASSERT_TRUE(cgroup.add(pid));
    try {
      get(pool.async_submit(touch_mib, 1024, asio::use_future));
      FAIL() << "expected worker_crashed";
    } catch (const worker_crashed& e) {
      EXPECT_EQ(e.pid(), pid);
      EXPECT_EQ(e.signal(), SIGKILL) << e.what();
      EXPECT_TRUE(e.out_of_memory()) << e.what();
      EXPECT_NE(e.detail().find("OOM killer"), std::string::npos) << e.what();
    }
    EXPECT_EQ(get(pool.async_submit(square, 4, asio::use_future)), 16);
  }
  // A SIGKILL from elsewhere, with no OOM kill since the worker started, is not called memory.
  process_pool pool{io_.get_executor(), {.workers = 1}};
  try {
    get(pool.async_submit(crash_kill_self, 0, asio::use_future));
    FAIL() << "expected worker_crashed";
  } catch (const worker_crashed& e) {
    EXPECT_EQ(e.signal(), SIGKILL);
    EXPECT_FALSE(e.out_of_memory()) << e.what();
  }
}

}  // namespace
}  // namespace procpool::test
