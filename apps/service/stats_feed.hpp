// procpool-service - what the dashboard shows beside the jobs: counts by state and the pool's
// counters, on GET /stats and as `event: stats` on /events.
#pragma once

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/awaitable.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/json/object.hpp>
#include <chrono>
#include <procpool/process_pool.hpp>
#include <string>

#include "change_feed.hpp"
#include "database.hpp"
#include "events.hpp"

namespace service {

/// Publishes a snapshot to the /events clients about once per `interval` while something changes
/// (a job's state, the pool's counters, a client connecting), and never while nobody listens: the
/// counts cost a query. Event loop thread only.
class stats_feed {
 public:
  stats_feed(boost::asio::any_io_executor ex, database& db, procpool::process_pool& pool,
             event_hub& hub, const change_feed& feed, std::string instance_id,
             std::chrono::milliseconds interval = std::chrono::milliseconds(1000));

  /// `{"instance", "at", "jobs": {state: count}, "pool": {...}}`.
  auto snapshot() -> boost::asio::awaitable<boost::json::object>;
  /// `snapshot()` as an `event: stats` text.
  auto event() -> boost::asio::awaitable<std::string>;

  void start();
  void stop();

 private:
  auto run() -> boost::asio::awaitable<void>;

  boost::asio::any_io_executor ex_;
  database& db_;
  procpool::process_pool& pool_;
  event_hub& hub_;
  const change_feed& feed_;
  std::string instance_id_;
  std::chrono::milliseconds interval_;
  boost::asio::steady_timer tick_;
  bool stopping_ = false;
};

}  // namespace service
