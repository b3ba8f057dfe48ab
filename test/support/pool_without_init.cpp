// Starts four busy threads, never calls procpool::init(), then creates a pool. Expected: a prompt
// procpool::init_required explaining what to do (ctest matches the printed message).
#include <atomic>
#include <boost/asio/io_context.hpp>
#include <cstdio>
#include <thread>
#include <vector>

#include "procpool/process_pool.hpp"

int main() {
  std::atomic<bool> stop{false};
  std::vector<std::thread> busy;
  for (int i = 0; i < 4; ++i) {
    busy.emplace_back([&] {
      while (!stop.load(std::memory_order_relaxed)) {
      }
    });
  }
  int status = 1;
  try {
    boost::asio::io_context io;
    procpool::process_pool pool{io.get_executor(), {.workers = 2}};
    std::puts("unexpected: pool created without init");
  } catch (const procpool::init_required& e) {
    std::printf("init_required: %s\n", e.what());
    status = 0;
  } catch (const std::exception& e) {
    std::printf("unexpected exception: %s\n", e.what());
  }
  stop = true;
  for (auto& t : busy) t.join();
  return status;
}
