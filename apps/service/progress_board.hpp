// procpool-service - the latest progress of the jobs this instance runs, in memory only, and its
// throttled fan-out to /events.
#pragma once

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/json/value.hpp>
#include <chrono>
#include <cstdint>
#include <map>
#include <optional>
#include <procpool/progress.hpp>
#include <string>

#include "events.hpp"

namespace service {

/// A job's latest progress report, as its task made it.
struct job_progress {
  std::uint64_t done = 0, total = 0;
  std::string message;
  std::int64_t updated_ms = 0;
};

/// `{"done", "total", "message", "updated_at"}`; the message is made valid UTF-8 (a task's bytes
/// are not trusted to be).
[[nodiscard]] auto to_json(const job_progress& p) -> boost::json::value;

/// Keeps each running job's latest report (never written to the database: a report is worth
/// nothing once a newer one exists, and writing each would cost a commit) and publishes them on
/// /events as `event: progress`, at most one per job per `interval`: a report inside the interval
/// waits for the interval's end, and only the newest one then goes out. State changes travel on
/// their own path (the change feed), so progress never delays them. Event loop thread only.
class progress_board {
 public:
  progress_board(const boost::asio::any_io_executor& ex, event_hub& hub,
                 std::chrono::milliseconds interval = std::chrono::milliseconds(250));

  /// A report for job `id` (from its task's on_progress).
  void report(std::int64_t id, const procpool::progress& p);
  /// Job `id` ended here: its progress is forgotten, and none of it is published any more.
  void forget(std::int64_t id);
  /// The latest report of job `id`, if it runs here and reported.
  [[nodiscard]] auto latest(std::int64_t id) const -> const job_progress*;

 private:
  struct entry {
    job_progress latest;
    std::chrono::steady_clock::time_point published{};
    bool unpublished = false;
  };
  void publish(std::int64_t id, entry& e, std::chrono::steady_clock::time_point now);
  void flush_later();

  event_hub& hub_;
  std::chrono::milliseconds interval_;
  std::map<std::int64_t, entry> jobs_;
  boost::asio::steady_timer flush_;
  bool flush_pending_ = false;
};

}  // namespace service
