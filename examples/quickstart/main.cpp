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
//               print("timed out")
//           except ValueError as e:
//               print("the worker raised ValueError:", e)
#include <procpool/procpool.hpp>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/io_context.hpp>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <stdexcept>

namespace asio = boost::asio;
using namespace std::chrono_literals;

// [cpu_heavy]
// x^(3*10^7) mod (2^31 - 1), the slow way: CPU-bound, and it rejects bad input with an exception.
auto cpu_heavy(std::uint64_t x) -> std::uint64_t {
  if (x == 0) throw std::invalid_argument("x must be positive");
  constexpr std::uint64_t m = (std::uint64_t{1} << 31) - 1;
  std::uint64_t r = 1;
  for (int i = 0; i < 30'000'000; ++i) r = r * (x % m) % m;
  return r;
}
// [cpu_heavy]

auto run(procpool::process_pool& pool) -> asio::awaitable<void> {
  // [submit]
  std::uint64_t r = co_await pool.submit(cpu_heavy, 123);
  std::printf("cpu_heavy(123) = %llu\n", static_cast<unsigned long long>(r));
  // [submit]

  // [wait_for]
  struct attempt {
    std::uint64_t x;
    std::chrono::milliseconds deadline;
  };
  for (attempt a : {attempt{123, 5000ms}, attempt{123, 1ms}, attempt{0, 5000ms}}) {
    try {
      r = co_await procpool::wait_for(pool.submit(cpu_heavy, a.x), a.deadline);
      std::printf("cpu_heavy(%llu) = %llu\n", static_cast<unsigned long long>(a.x),
                  static_cast<unsigned long long>(r));
    } catch (const procpool::timeout_error&) {
      std::printf("cpu_heavy(%llu) timed out after %lld ms; its worker was killed\n",
                  static_cast<unsigned long long>(a.x), static_cast<long long>(a.deadline.count()));
    } catch (const std::invalid_argument& e) {
      std::printf("the worker raised std::invalid_argument: %s\n", e.what());
    }
  }
  // [wait_for]
  co_await pool.shutdown(procpool::shutdown_mode::graceful);  // the end of Python's `with` block
  std::puts("done");
}

int main() {
  procpool::init();  // before any thread starts: workers are forked from a single-threaded server
  asio::io_context io;
  procpool::process_pool pool{io.get_executor(), {.workers = 4}};
  asio::co_spawn(io, run(pool), [](std::exception_ptr e) {
    if (e) std::rethrow_exception(e);
  });
  io.run();
}
