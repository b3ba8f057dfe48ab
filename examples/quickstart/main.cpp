// The quick start: a CPU-heavy function awaited through a process pool, bounded by a deadline,
// with the worker's own exception caught by type. It is the C++ form of this Python program:
//
//   async def main():
//       loop = asyncio.get_running_loop()
//       with ProcessPoolExecutor() as pool:
//           result = await loop.run_in_executor(pool, cpu_heavy, 123)
//           try:
//               result = await asyncio.wait_for(loop.run_in_executor(pool, cpu_heavy, 123),
//               timeout=5.0)
//           except asyncio.TimeoutError:
//               print("computation timed out")
//           except ValueError as e:
//               print("the worker raised ValueError:", e)
#include <procpool/procpool.hpp>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/signal_set.hpp>
#include <chrono>
#include <csignal>
#include <cstdio>
#include <stdexcept>

namespace asio = boost::asio;
using namespace std::chrono_literals;

// [cpu_heavy]
// x^(3*10^7) mod (2^31 - 1), the slow way: CPU-bound, and it rejects bad input with an exception.
auto cpu_heavy(long long x) -> long long {
  if (x <= 0) throw std::invalid_argument("x must be positive");
  constexpr long long m = (1LL << 31) - 1;
  long long r = 1;
  for (int i = 0; i < 30'000'000; ++i) r = r * (x % m) % m;
  return r;
}
// [cpu_heavy]

// [wait_for]
auto compute_bounded(procpool::process_pool& pool, long long x, std::chrono::milliseconds timeout)
    -> asio::awaitable<void> {
  try {
    long long result = co_await procpool::wait_for(pool.submit(cpu_heavy, x), timeout);
    std::printf("cpu_heavy(%lld) = %lld\n", x, result);
  } catch (const procpool::timeout_error&) {
    std::printf("cpu_heavy(%lld): computation timed out; its worker was killed\n", x);
  } catch (const std::invalid_argument& e) {
    std::printf("cpu_heavy(%lld): the worker raised std::invalid_argument: %s\n", x, e.what());
  }
}
// [wait_for]

// [main]
auto run(procpool::process_pool& pool, asio::signal_set& signals) -> asio::awaitable<void> {
  long long result = co_await pool.submit(cpu_heavy, 123);
  std::printf("cpu_heavy(123) = %lld\n", result);

  co_await compute_bounded(pool, 123, 5s);   // finishes in time
  co_await compute_bounded(pool, 123, 1ms);  // too slow: timeout_error, worker killed
  co_await compute_bounded(pool, -1, 5s);    // std::invalid_argument thrown in the worker

  co_await pool.shutdown(procpool::shutdown_mode::graceful);  // leaving Python's `with` block
  signals.cancel();
  std::puts("done");
}

int main() {
  procpool::init();  // first thing: workers fork from a server started while single-threaded
  asio::io_context io;
  procpool::process_pool pool{io.get_executor(), {.workers = 4}};

  // Ctrl-C or SIGTERM: the program decides (workers ignore SIGINT). Here: stop now; tasks in
  // flight fail with pool_closed.
  // [signals]
  asio::signal_set signals(io, SIGINT, SIGTERM);
  signals.async_wait([&](boost::system::error_code ec, int) {
    if (!ec) asio::co_spawn(io, pool.shutdown(procpool::shutdown_mode::immediate), asio::detached);
  });
  // [signals]

  asio::co_spawn(io, run(pool, signals), [](std::exception_ptr e) {
    try {
      if (e) std::rethrow_exception(e);
    } catch (const procpool::pool_closed&) {
      std::puts("interrupted");
    }
  });
  io.run();
}
// [main]
