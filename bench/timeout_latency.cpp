// How long after a task's deadline its worker is dead and reaped and the caller has its
// timeout_error. Each round: an idle worker takes a spinning task with a hard timeout; the figure
// is (moment the caller sees timeout_error) - (submit time + timeout). The worker is idle at
// submit, so dispatch is immediate and the deadline starts at submit (within microseconds).
//
// Usage: timeout_latency [rounds=100] [timeout_ms=50]
// Prints `name: value unit` lines like ../shared/peers/run_peers.sh.
#include <procpool/procpool.hpp>

#include <algorithm>
#include <boost/asio/io_context.hpp>
#include <boost/asio/use_future.hpp>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <thread>
#include <vector>

namespace asio = boost::asio;
using clock_type = std::chrono::steady_clock;

static auto spin(int) -> int {
  volatile unsigned long n = 0;
  for (;;) n = n + 1;
}
static auto one(int) -> int {
  return 1;
}

int main(int argc, char** argv) {
  procpool::init();
  const int rounds = argc > 1 ? std::atoi(argv[1]) : 100;
  const auto timeout = std::chrono::milliseconds(argc > 2 ? std::atoi(argv[2]) : 50);
  asio::io_context io;
  auto work = asio::make_work_guard(io);
  std::thread runner([&] { io.run(); });
  std::vector<double> late_ms;
  int wrong = 0;
  {
    procpool::process_pool pool{io.get_executor(), {.workers = 2, .output = [](auto&) {}}};
    for (int i = 0; i < rounds; ++i) {
      // Both workers up (the previous round's victim has been replaced): dispatch is immediate.
      while (pool.stats().idle < 2) pool.async_submit(one, 0, asio::use_future).get();
      const auto start = clock_type::now();
      auto f =
          pool.async_submit(procpool::task_options{.timeout = timeout}, spin, 0, asio::use_future);
      try {
        f.get();
        ++wrong;
      } catch (const procpool::timeout_error&) {
        late_ms.push_back(
            std::chrono::duration<double, std::milli>(clock_type::now() - start - timeout).count());
      } catch (...) {
        ++wrong;
      }
    }
  }
  work.reset();
  io.stop();
  runner.join();
  std::sort(late_ms.begin(), late_ms.end());
  if (late_ms.empty()) return 1;
  std::printf("procpool.timeout.rounds: %zu count\n", late_ms.size());
  std::printf("procpool.timeout.deadline_to_reaped_median: %.3f ms\n", late_ms[late_ms.size() / 2]);
  std::printf("procpool.timeout.deadline_to_reaped_p90: %.3f ms\n",
              late_ms[late_ms.size() * 9 / 10]);
  std::printf("procpool.timeout.deadline_to_reaped_max: %.3f ms\n", late_ms.back());
  std::printf("procpool.timeout.wrong_outcomes: %d count\n", wrong);
  return wrong == 0 ? 0 : 1;
}
