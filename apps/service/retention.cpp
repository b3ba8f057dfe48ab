#include "retention.hpp"

#include <algorithm>
#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/use_awaitable.hpp>

#include "background.hpp"
#include "job.hpp"

namespace asio = boost::asio;
using namespace std::chrono_literals;

namespace service {

void retention::start() {
  asio::co_spawn(ex_, run(), report_failure("retention", [] {}));
}

void retention::stop() {
  stopping_ = true;
  timer_.cancel();
}

auto retention::run() -> asio::awaitable<void> {
  const auto every = std::min<std::chrono::milliseconds>(retain_ / 2, 60s);
  while (!stopping_) {
    timer_.expires_after(every);
    co_await timer_.async_wait(asio::as_tuple(asio::use_awaitable));
    if (stopping_) break;
    const std::int64_t cutoff =
        now_ms() - std::chrono::duration_cast<std::chrono::milliseconds>(retain_).count();
    try {
      // In batches, so no transaction holds the write lock for long.
      constexpr std::int64_t batch = 10'000;
      for (std::int64_t deleted = batch; deleted == batch && !stopping_;) {
        deleted =
            co_await db_.run([cutoff](store& s) { return s.delete_ended_before(cutoff, batch); });
        metrics_.jobs_deleted += static_cast<std::uint64_t>(deleted);
      }
    } catch (const std::exception&) {
      ++metrics_.database_errors;  // tried again next round
    }
  }
}

}  // namespace service
