// procpool-service - the change log, read in order and fanned out to the /events clients.
#pragma once

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/awaitable.hpp>
#include <boost/asio/steady_timer.hpp>
#include <chrono>
#include <cstdint>

#include "database.hpp"
#include "events.hpp"

namespace service {

/// Reads the change log (job_events) after the last change it published and publishes what it
/// finds, in sequence order, to the event hub: this instance's changes (the database tells it
/// after each commit that appended some), other instances' (their NOTIFY wakes it) and, as the
/// truth behind both hints, whatever a poll finds. Because writing transactions commit in
/// sequence order (store.hpp), reading "after n" never skips a change. Used on the event loop
/// thread only.
class change_feed {
 public:
  change_feed(boost::asio::any_io_executor ex, database& db, event_hub& hub,
              std::chrono::milliseconds poll, std::chrono::milliseconds poll_without_notify);

  /// Starts after the newest change in the database.
  auto start() -> boost::asio::awaitable<void>;
  void stop();
  /// Something changed: read now.
  void kick();
  void set_listening(bool listening);
  /// The last change published: an /events client that subscribes now gets every later change
  /// live, so its replay reads up to here.
  [[nodiscard]] auto published_up_to() const -> std::int64_t { return cursor_; }

 private:
  auto run() -> boost::asio::awaitable<void>;
  boost::asio::any_io_executor ex_;
  database& db_;
  event_hub& hub_;
  std::chrono::milliseconds poll_, poll_without_notify_;
  std::int64_t cursor_ = 0;
  bool kicked_ = false, listening_ = true, stopping_ = false;
  boost::asio::steady_timer wake_;
};

}  // namespace service
