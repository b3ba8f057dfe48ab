// procpool-service - this instance among the others sharing the database: its heartbeat, the
// rescue of dead instances' jobs, and what it does when it cannot prove it is alive.
#pragma once

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/awaitable.hpp>
#include <boost/asio/steady_timer.hpp>
#include <chrono>

#include "database.hpp"
#include "job_runner.hpp"
#include "metrics.hpp"
#include "notifier.hpp"

namespace service {

struct membership_options {
  /// How often the instance writes its heartbeat (and tries a rescue).
  std::chrono::milliseconds heartbeat{5'000};
  /// An instance whose heartbeat is older than this (by the database's clock) is dead: its
  /// running jobs are re-queued by whichever instance rescues first. An instance that has not
  /// written its own heartbeat for two thirds of it stops claiming and kills its running jobs,
  /// so it never runs a job that another instance has taken over.
  std::chrono::milliseconds dead_after{30'000};
  /// Jobs interrupted this many times fail as "interrupted" instead of running again.
  std::int64_t max_attempts = 3;
  /// SQLite: one instance per database file, so at start every other instance row is dead.
  bool sole_instance = false;
};

/// Keeps this instance's row alive and rescues the others'. Used on the event loop thread only.
class membership {
 public:
  membership(boost::asio::any_io_executor ex, database& db, job_runner& runner, notifier& notify,
             service_metrics& metrics, instance_info me, membership_options options);

  /// Registers the instance and runs a first rescue; returns that rescue's report.
  auto join() -> boost::asio::awaitable<rescue_report>;
  /// Starts the heartbeat, the watchdog and the periodic rescue.
  void start();
  /// Stops them and removes the instance's row (a clean stop).
  auto leave() -> boost::asio::awaitable<void>;

  [[nodiscard]] auto id() const -> const std::string& { return me_.id; }

 private:
  auto heartbeat_loop() -> boost::asio::awaitable<void>;
  auto watchdog_loop() -> boost::asio::awaitable<void>;
  auto rescue_once(std::int64_t dead_after_ms) -> boost::asio::awaitable<rescue_report>;

  boost::asio::any_io_executor ex_;
  database& db_;
  job_runner& runner_;
  notifier& notify_;
  service_metrics& metrics_;
  instance_info me_;
  membership_options options_;
  std::chrono::steady_clock::time_point last_heartbeat_;
  bool stopping_ = false;
  std::size_t loops_ = 0;
  boost::asio::steady_timer tick_, watchdog_, loops_done_;
};

}  // namespace service
