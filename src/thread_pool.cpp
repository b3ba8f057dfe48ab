// procpool - the default thread pool behind procpool::to_thread.
#include <algorithm>
#include <thread>

#include "procpool/to_thread.hpp"

namespace procpool {

auto default_thread_pool() -> boost::asio::thread_pool& {
  static boost::asio::thread_pool pool(std::max(4U, std::thread::hardware_concurrency()));
  return pool;
}

}  // namespace procpool
