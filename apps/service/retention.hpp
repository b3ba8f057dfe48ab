// procpool-service - deletes ended jobs once they are older than the retention period.
#pragma once

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/awaitable.hpp>
#include <boost/asio/steady_timer.hpp>
#include <chrono>

#include "database.hpp"
#include "metrics.hpp"

namespace service {

/// Keeps the database from growing without bound: every `retain / 2` (at most every minute) it
/// deletes the jobs that ended more than `retain` ago and whose webhook is no longer pending,
/// with their change log. Used on the event loop thread only.
class retention {
 public:
  retention(boost::asio::any_io_executor ex, database& db, service_metrics& metrics,
            std::chrono::seconds retain)
      : ex_(ex), db_(db), metrics_(metrics), retain_(retain), timer_(ex) {}

  void start();
  void stop();

 private:
  auto run() -> boost::asio::awaitable<void>;
  boost::asio::any_io_executor ex_;
  database& db_;
  service_metrics& metrics_;
  std::chrono::seconds retain_;
  boost::asio::steady_timer timer_;
  bool stopping_ = false;
};

}  // namespace service
