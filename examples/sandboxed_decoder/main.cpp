// Decoding untrusted input in a sandboxed pool: each input is parsed in a worker that can compute
// but cannot open a file, connect anywhere, start a program or touch another process. A decoder
// that a hostile input drives into a forbidden system call is stopped before the call is made, its
// worker dies, the caller gets worker_crashed naming the call, and the pool goes on.
#include <procpool/procpool.hpp>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>
#include <cstdio>
#include <fstream>
#include <stdexcept>
#include <string>
#include <vector>

namespace asio = boost::asio;

// A toy decoder with a planted flaw: an input starting with "include:" makes it open a file, as
// an exploited decoder might be made to do.
auto decode(std::string input) -> std::vector<int> {
  if (input.rfind("include:", 0) == 0) {
    std::ifstream f(input.substr(8));  // the sandbox stops this open
    std::getline(f, input);
  }
  std::vector<int> numbers;
  std::size_t at = 0;
  while (at < input.size()) {
    std::size_t used = 0;
    numbers.push_back(std::stoi(input.substr(at), &used));  // throws std::invalid_argument
    at += used;
    while (at < input.size() && input[at] == ',') ++at;
  }
  return numbers;
}

auto run(procpool::process_pool& pool) -> asio::awaitable<void> {
  for (std::string input : {"1,2,3", "4,x", "include:/etc/passwd", "5,6"}) {
    // [sandbox]
    try {
      auto numbers = co_await pool.submit(decode, input);
      std::printf("%-22s -> %zu numbers\n", input.c_str(), numbers.size());
    } catch (const std::invalid_argument& e) {
      std::printf("%-22s -> rejected: %s\n", input.c_str(), e.what());
    } catch (const procpool::worker_crashed& e) {
      std::printf("%-22s -> %s\n", input.c_str(), e.what());  // "... it called openat (257) ..."
    }
    // [sandbox]
  }
  co_await pool.shutdown(procpool::shutdown_mode::graceful);
  std::printf("done\n");
}

int main() {
  procpool::init();
  asio::io_context io;
  // [sandbox_pool]
  procpool::process_pool pool{io.get_executor(),
                              {.workers = 2, .sandbox = procpool::sandbox::compute_only()}};
  // [sandbox_pool]
  asio::co_spawn(io, run(pool), asio::detached);
  io.run();
}
