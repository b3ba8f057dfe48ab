// procpool::to_thread: blocking work on a thread, resumed on the caller's executor.
#include "procpool/to_thread.hpp"

#include <fstream>
#include <stdexcept>
#include <string>
#include <thread>
#include <tuple>

#include "support/pool_fixture.hpp"

namespace procpool::test {
namespace {

auto read_file(const std::string& path) -> std::string {
  std::ifstream in(path);
  if (!in) throw std::runtime_error("cannot open " + path);
  return {std::istreambuf_iterator<char>(in), {}};
}

// The default thread pool's threads outlive every test, and Asio forbids destroying an io_context
// while another thread may still be inside post() on it — which a default-pool thread can be just
// after the caller has resumed. So these tests run on an io_context that lives as long as the
// program (a per-test io_context would race with that thread's return from post()).
class ToThread : public ::testing::Test {
 protected:
  struct lasting_loop {
    asio::io_context io;
    asio::executor_work_guard<asio::io_context::executor_type> work = asio::make_work_guard(io);
    std::thread runner{[this] { io.run(); }};
  };
  static auto loop() -> lasting_loop& {
    static auto* l = new lasting_loop;  // never destroyed, on purpose (see above)
    return *l;
  }
  template <class Awaitable>
  static auto run(Awaitable aw) {
    return get(asio::co_spawn(loop().io, std::move(aw), asio::use_future));
  }
};

TEST_F(ToThread, RunsOnAnotherThreadAndResumesOnTheCallersExecutor) {
  const std::string path = ::testing::TempDir() + "procpool_to_thread.txt";
  std::ofstream(path) << "contents";
  auto [text, worker_thread, resumed_on_io] =
      run([&]() -> asio::awaitable<std::tuple<std::string, std::thread::id, bool>> {
        auto s = co_await to_thread(read_file, path);
        auto id = co_await to_thread([] { return std::this_thread::get_id(); });
        co_return std::tuple{s, id, loop().io.get_executor().running_in_this_thread()};
      });
  EXPECT_EQ(text, "contents");
  EXPECT_NE(worker_thread, loop().runner.get_id());
  EXPECT_TRUE(resumed_on_io);
}

TEST_F(ToThread, PropagatesExceptions) {
  EXPECT_THROW(run([&]() -> asio::awaitable<std::string> {
                 co_return co_await to_thread(read_file, std::string("/nonexistent/x"));
               }),
               std::runtime_error);
}

TEST_F(ToThread, RunsOnAThreadPoolTheCallerPasses) {
  asio::thread_pool mine(1);
  int r = run([&]() -> asio::awaitable<int> {
    co_return co_await to_thread_on(
        mine.get_executor(), [](int x) { return x + 1; }, 41);
  });
  EXPECT_EQ(r, 42);
}

}  // namespace
}  // namespace procpool::test
