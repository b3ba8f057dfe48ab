// Helper for the parent-death test: starts a pool whose workers are busy, prints
// "pids: <fork server> <worker> <worker>", then waits to be killed.
#include <unistd.h>
#include <procpool/procpool.hpp>

#include <dirent.h>
#include <boost/asio/io_context.hpp>
#include <boost/asio/use_future.hpp>
#include <cstdio>
#include <fstream>
#include <future>
#include <mutex>
#include <set>
#include <string>
#include <thread>

namespace asio = boost::asio;

// Says which worker it occupies, then keeps it busy forever.
static auto announce_then_spin(int) -> int {
  std::printf("busy %d\n", static_cast<int>(::getpid()));
  std::fflush(stdout);
  volatile unsigned long n = 0;
  for (;;) n = n + 1;
}

static auto fork_server_pid() -> int {
  DIR* d = ::opendir("/proc");
  int found = 0;
  while (const dirent* e = ::readdir(d)) {
    const int pid = std::atoi(e->d_name);
    if (pid <= 0) continue;
    std::ifstream in("/proc/" + std::to_string(pid) + "/stat");
    std::string line;
    if (!std::getline(in, line)) continue;
    const auto close = line.rfind(')');
    const bool ours = line.find("(procpool-zygote)") != std::string::npos &&
                      std::atoi(line.c_str() + close + 4) == ::getpid();
    if (ours) found = pid;
  }
  ::closedir(d);
  return found;
}

int main() {
  procpool::init();
  asio::io_context io;
  auto work = asio::make_work_guard(io);
  std::thread runner([&] { io.run(); });
  // Two tasks that never finish occupy both workers; each announces its pid on its stdout, which
  // the pool forwards here line by line.
  std::mutex mutex;
  std::set<int> busy;
  std::promise<void> both_busy;
  procpool::output_sink sink = [&](const procpool::output_line& line) {
    if (line.text.rfind("busy ", 0) != 0) return;
    std::lock_guard lock(mutex);
    if (busy.insert(std::atoi(std::string(line.text.substr(5)).c_str())).second &&
        busy.size() == 2) {
      both_busy.set_value();
    }
  };
  procpool::process_pool pool{io.get_executor(), {.workers = 2, .output = sink}};
  auto busy1 = pool.async_submit(announce_then_spin, 0, asio::use_future);
  auto busy2 = pool.async_submit(announce_then_spin, 1, asio::use_future);
  both_busy.get_future().wait();
  std::printf("pids: %d %d %d\n", fork_server_pid(), *busy.begin(), *busy.rbegin());
  std::fflush(stdout);
  for (;;) ::pause();
}
