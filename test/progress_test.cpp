// procpool::report_progress, the worker's side (the pool's on_progress is not built yet): a task
// that reports in a tight loop is not slowed by the pool and its frames are well formed (the pool
// checks every frame; a malformed one would fail the task as a crash).
#include "procpool/progress.hpp"

#include <cstdint>
#include <string>

#include "frame_check.hpp"
#include "procpool/process_pool.hpp"
#include "support/pool_fixture.hpp"

namespace procpool::test {
namespace {

using Progress = PoolTest;

auto count_with_progress(std::uint64_t n) -> std::uint64_t {
  std::uint64_t sum = 0;
  for (std::uint64_t i = 0; i < n; ++i) {
    sum += i;
    report_progress(i + 1, n, "counting");
  }
  return sum;
}

TEST_F(Progress, ATaskReportingInATightLoopCompletesAndItsFramesAreAccepted) {
  process_pool pool{io_.get_executor(), {.workers = 1}};
  constexpr std::uint64_t n = 200'000;
  EXPECT_EQ(get(pool.async_submit(count_with_progress, n, asio::use_future)), n * (n - 1) / 2);
  EXPECT_EQ(get(pool.async_submit(count_with_progress, 10, asio::use_future)), 45U);
  EXPECT_EQ(pool.stats().crashed, 0U);
}

TEST(ProgressFrames, OnlyForTheRunningTaskAndBounded) {
  const detail::channel_state running{true, 7, std::size_t{1} << 20, false};
  auto h = detail::make_frame_header(detail::frame_kind::progress, 7, 40);
  EXPECT_EQ(detail::check_header(h, running), "");
  h.task_id = 8;
  EXPECT_NE(detail::check_header(h, running), "");
  h = detail::make_frame_header(detail::frame_kind::progress, 7, detail::max_progress_payload + 1);
  EXPECT_NE(detail::check_header(h, running), "");
  h = detail::make_frame_header(detail::frame_kind::progress, 7, 40, 1);
  EXPECT_NE(detail::check_header(h, running), "");
}

}  // namespace
}  // namespace procpool::test
