// A bounded queue: submits beyond max_queue wait for room (or fail fast), and wait_for_room keeps a
// producer that is faster than the pool from piling tasks up in the parent.
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <boost/asio/as_tuple.hpp>
#include <boost/asio/bind_cancellation_slot.hpp>
#include <boost/asio/cancellation_signal.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <string>
#include <vector>

#include "procpool/process_pool.hpp"
#include "support/pool_fixture.hpp"
#include "support/tasks.hpp"

namespace procpool::test {
namespace {

using Backpressure = PoolTest;

// Blocks until the test writes a byte into the FIFO at `path`: a running task the test releases.
auto hold_until_released(std::string path) -> int {
  const int fd = ::open(path.c_str(), O_RDONLY);
  char c = 0;
  const auto n = ::read(fd, &c, 1);
  ::close(fd);
  return static_cast<int>(n);
}

// Appends `n` to the file at `path`, so the test can see the order in which tasks ran.
auto record(std::string path, int n) -> int {
  std::ofstream(path, std::ios::app) << n << ' ';
  return n;
}

class Gate {
 public:
  Gate() {
    char dir[] = "/tmp/procpool-gate-XXXXXX";
    dir_ = ::mkdtemp(dir);
    fifo_ = dir_ + "/fifo";
    log_ = dir_ + "/log";
    ::mkfifo(fifo_.c_str(), 0600);
  }
  ~Gate() {
    std::remove(fifo_.c_str());
    std::remove(log_.c_str());
    ::rmdir(dir_.c_str());
  }
  void open() const {
    const int fd = ::open(fifo_.c_str(), O_WRONLY);
    (void)!::write(fd, "x", 1);
    ::close(fd);
  }
  [[nodiscard]] auto log() const -> std::string {
    std::ifstream in(log_);
    return {std::istreambuf_iterator<char>(in), {}};
  }
  std::string dir_, fifo_, log_;
};

TEST_F(Backpressure, SubmitsBeyondMaxQueueWaitAndRunInSubmissionOrder) {
  Gate gate;
  process_pool pool{io_.get_executor(), {.workers = 1, .max_queue = 2}};
  get(pool.async_submit(square, 1, asio::use_future));  // the worker is up and idle
  auto held = pool.async_submit(hold_until_released, gate.fifo_, asio::use_future);
  std::vector<std::future<int>> later;
  for (int i = 1; i <= 5; ++i)
    later.push_back(pool.async_submit(record, gate.log_, i, asio::use_future));
  const auto s = pool.stats();
  EXPECT_EQ(s.busy, 1U);
  EXPECT_EQ(s.queued, 2U);
  EXPECT_EQ(s.waiting, 3U);
  EXPECT_EQ(s.rejected, 0U);
  gate.open();
  EXPECT_EQ(get(held), 1);
  for (int i = 1; i <= 5; ++i) EXPECT_EQ(get(later[i - 1]), i);
  EXPECT_EQ(gate.log(), "1 2 3 4 5 ");
  EXPECT_EQ(pool.stats().waiting, 0U);
}

TEST_F(Backpressure, AWaitingSubmitCanBeCancelledAndTheOthersStillRun) {
  Gate gate;
  process_pool pool{io_.get_executor(), {.workers = 1, .max_queue = 1}};
  get(pool.async_submit(square, 1, asio::use_future));
  auto held = pool.async_submit(hold_until_released, gate.fifo_, asio::use_future);
  auto queued = pool.async_submit(square, 2, asio::use_future);
  asio::cancellation_signal cancel;
  auto waiting =
      pool.async_submit(square, 3, asio::bind_cancellation_slot(cancel.slot(), asio::use_future));
  auto last = pool.async_submit(square, 4, asio::use_future);
  EXPECT_EQ(pool.stats().waiting, 2U);
  // Emitted on the io thread, where the slot's handler may run.
  asio::post(io_, [&] { cancel.emit(asio::cancellation_type::total); });
  EXPECT_THROW(get(waiting), cancelled);
  gate.open();
  EXPECT_EQ(get(held), 1);
  EXPECT_EQ(get(queued), 4);
  EXPECT_EQ(get(last), 16);
  EXPECT_EQ(pool.stats().cancelled, 1U);
}

TEST_F(Backpressure, FailModeRefusesWithQueueFullInsteadOfWaiting) {
  std::future<int> running, queued;
  {
    process_pool pool{io_.get_executor(),
                      {.workers = 1, .max_queue = 1, .when_queue_full = queue_full_action::fail}};
    get(pool.async_submit(square, 1, asio::use_future));
    running = pool.async_submit(spin_forever, 0, asio::use_future);
    queued = pool.async_submit(square, 2, asio::use_future);
    try {
      get(pool.async_submit(square, 3, asio::use_future));
      FAIL() << "expected queue_full";
    } catch (const queue_full& e) {
      EXPECT_EQ(e.advice(), advice::retry);
    }
    EXPECT_EQ(pool.stats().rejected, 1U);
    EXPECT_EQ(pool.stats().waiting, 0U);
  }
  EXPECT_THROW(get(running), pool_closed);
  EXPECT_THROW(get(queued), pool_closed);
}

TEST_F(Backpressure, DestroyingThePoolFailsWaitingSubmitsAndRoomWaitersWithPoolClosed) {
  std::future<int> running, queued, waiting;
  std::future<void> room;
  {
    process_pool pool{io_.get_executor(), {.workers = 1, .max_queue = 1}};
    get(pool.async_submit(square, 1, asio::use_future));
    running = pool.async_submit(spin_forever, 0, asio::use_future);
    queued = pool.async_submit(square, 2, asio::use_future);
    waiting = pool.async_submit(square, 3, asio::use_future);
    room = pool.async_wait_for_room(asio::use_future);
    EXPECT_EQ(pool.stats().waiting, 1U);
  }
  EXPECT_THROW(get(running), pool_closed);
  EXPECT_THROW(get(queued), pool_closed);
  EXPECT_THROW(get(waiting), pool_closed);
  EXPECT_THROW(get(room), pool_closed);
}

TEST_F(Backpressure, WaitForRoomKeepsAFastProducerWithinMaxQueue) {
  constexpr int tasks = 2000;
  constexpr std::size_t max_queue = 4, workers = 2;
  process_pool pool{io_.get_executor(), {.workers = workers, .max_queue = max_queue}};
  // The producer and every completion run on the io thread, so these need no locking.
  int submitted = 0, done = 0, peak_in_flight = 0;
  std::size_t peak_waiting = 0;
  long sum = 0;
  asio::steady_timer all_done(io_, asio::steady_timer::time_point::max());
  run([&]() -> asio::awaitable<void> {
    for (int i = 0; i < tasks; ++i) {
      co_await pool.wait_for_room();
      pool.async_submit(square, i % 100, [&](std::exception_ptr ep, int r) {
        if (!ep) sum += r;
        if (++done == tasks) all_done.cancel();
      });
      ++submitted;
      peak_in_flight = std::max(peak_in_flight, submitted - done);
      peak_waiting = std::max(peak_waiting, pool.stats().waiting);
    }
    if (done < tasks) co_await all_done.async_wait(asio::as_tuple(asio::use_awaitable));
  }());
  EXPECT_EQ(done, tasks);
  long expected = 0;
  for (int i = 0; i < tasks; ++i) expected += (i % 100) * (i % 100);
  EXPECT_EQ(sum, expected);
  EXPECT_EQ(peak_waiting, 0U);  // with one producer, room waited for is room found
  // A task's completion is posted before the room it frees is announced, so the producer never
  // sees more than the queue plus the running tasks in flight.
  EXPECT_LE(peak_in_flight, static_cast<int>(max_queue + workers));
}

}  // namespace
}  // namespace procpool::test
