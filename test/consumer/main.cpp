// Built against an installed procpool by find_package; exits 0 when a worker computes 7 * 7.
#include <procpool/procpool.hpp>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>
#include <cstdio>

static auto square(int x) -> int {
  return x * x;
}

int main() {
  procpool::init();
  boost::asio::io_context io;
  procpool::process_pool pool{io.get_executor(), {.workers = 1}};
  int result = 0;
  boost::asio::co_spawn(
      io,
      [&]() -> boost::asio::awaitable<void> {
        result = co_await pool.submit(square, 7);
        co_await pool.shutdown(procpool::shutdown_mode::graceful);
      },
      boost::asio::detached);
  io.run();
  std::printf("consumer: square(7) = %d\n", result);
  return result == 49 ? 0 : 1;
}
