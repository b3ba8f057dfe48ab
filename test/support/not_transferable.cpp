// Must not compile: a raw pointer cannot be sent to a worker process.
#include <boost/asio/io_context.hpp>

#include "procpool/process_pool.hpp"

static auto length(const char* text) -> int {
  return text[0];
}

int main() {
  boost::asio::io_context io;
  procpool::process_pool pool{io.get_executor()};
  auto op = pool.submit(length, "abc");
  (void)op;
}
