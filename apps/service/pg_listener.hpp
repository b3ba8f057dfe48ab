// procpool-service - PostgreSQL LISTEN on a thread of its own, notifications delivered to an
// Asio executor.
#pragma once

#include <atomic>
#include <boost/asio/any_io_executor.hpp>
#include <chrono>
#include <functional>
#include <memory>
#include <string>
#include <thread>
#include <vector>

namespace service {

struct pg_listener_options {
  /// An idle connection is asked "SELECT 1" this often; no answer within probe_timeout and it
  /// counts as dead. Catches a half-open TCP connection (server host gone, network cut), which
  /// would otherwise look like a quiet channel for as long as the keepalives take.
  std::chrono::milliseconds probe_interval{10'000};
  /// Also bounds the answer to the LISTEN commands after each connect.
  std::chrono::milliseconds probe_timeout{5'000};
  /// Wait before reconnecting; doubled after each failed attempt, up to max_backoff.
  std::chrono::milliseconds first_backoff{100};
  std::chrono::milliseconds max_backoff{2'000};
};

/// Holds one libpq connection on its own thread, LISTENs on `channels` and posts each
/// notification to `ex` as on_notify(channel, payload), in arrival order. A lost connection
/// (closed, failed probe) is reported as on_state(false) and re-established with back-off, then
/// reported as on_state(true) again: notifications sent in between are lost, so the owner should
/// look at the database itself whenever it gets on_state(true). Connection problems are also
/// written to stderr. Handlers always run on `ex`; those still queued when stop() is called are
/// dropped, so after stop() returns on `ex`'s thread none runs again. start() and stop() are
/// for one thread (the owner's); `ex` must outlive the listener.
class pg_listener {
 public:
  using notify_handler = std::function<void(std::string channel, std::string payload)>;
  using state_handler = std::function<void(bool listening)>;

  /// `conninfo` and `application_name` as for pg_connection (see pg_conninfo). Nothing happens
  /// before start().
  pg_listener(boost::asio::any_io_executor ex, std::string conninfo, std::string application_name,
              std::vector<std::string> channels, notify_handler on_notify, state_handler on_state,
              pg_listener_options options = {});
  /// stop().
  ~pg_listener();
  pg_listener(const pg_listener&) = delete;
  auto operator=(const pg_listener&) -> pg_listener& = delete;

  /// Starts the thread, which connects and LISTENs; on_state(true) follows once it listens
  /// (a first connect that fails is retried with back-off, not reported as on_state(false)).
  /// Throws std::system_error if it cannot start. Once only; does nothing after stop().
  void start();
  /// Wakes the thread from whatever it waits for, closes its connection and joins it (within
  /// milliseconds, except while the host name of the server is being resolved). Idempotent.
  void stop();

 private:
  struct handlers;
  class session;
  void run();

  boost::asio::any_io_executor ex_;
  std::string conninfo_;
  std::string application_name_;
  std::vector<std::string> channels_;
  pg_listener_options options_;
  std::shared_ptr<handlers> handlers_;  // shared with the handlers posted to ex_
  int wake_fd_ = -1;                    // an eventfd, readable once stop() was called
  std::atomic<bool> stopping_{false};
  std::thread thread_;
};

}  // namespace service
