// Must not compile: a lambda with captures cannot be named in a worker process.
#include <boost/asio/io_context.hpp>

#include "procpool/process_pool.hpp"

int main() {
  boost::asio::io_context io;
  procpool::process_pool pool{io.get_executor()};
  int offset = 3;
  auto op = pool.submit([offset](int x) { return x + offset; }, 1);
  (void)op;
}
