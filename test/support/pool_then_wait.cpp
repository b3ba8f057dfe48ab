// Helper for the parent-death test: starts a pool whose workers are busy, prints
// "pids: <fork server> <worker> <worker>", then waits to be killed.
#include <unistd.h>
#include <procpool/procpool.hpp>

#include <dirent.h>
#include <boost/asio/io_context.hpp>
#include <boost/asio/use_future.hpp>
#include <cstdio>
#include <fstream>
#include <string>
#include <thread>

namespace asio = boost::asio;

static auto spin(int) -> int {
  volatile unsigned long n = 0;
  for (;;) n = n + 1;
}
static auto my_pid(int) -> int {
  return static_cast<int>(::getpid());
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
  procpool::process_pool pool{io.get_executor(), {.workers = 2}};
  const int a = pool.async_submit(my_pid, 0, asio::use_future).get();
  const int b = pool.async_submit(my_pid, 0, asio::use_future).get();
  auto busy1 = pool.async_submit(spin, 0, asio::use_future);
  auto busy2 = pool.async_submit(spin, 0, asio::use_future);
  const auto pids = pool.worker_pids();
  std::printf("pids: %d %d %d\n", fork_server_pid(), pids.at(0), pids.at(1));
  std::fflush(stdout);
  (void)a;
  (void)b;
  for (;;) ::pause();
}
