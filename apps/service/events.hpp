// procpool-service - the state-change stream behind GET /events (Server-Sent Events).
#pragma once

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/steady_timer.hpp>
#include <deque>
#include <memory>
#include <string>
#include <vector>

#include "store.hpp"

namespace service {

/// One /events client's queue. Lives on the event loop thread.
struct event_subscriber {
  explicit event_subscriber(const boost::asio::any_io_executor& ex)
      : wake(ex, boost::asio::steady_timer::time_point::max()) {}
  /// Events not yet written: each change's sequence number (-1 for an event that is not a
  /// change: progress, stats) and its formatted text.
  std::deque<std::pair<std::int64_t, std::string>> pending;
  boost::asio::steady_timer wake;  ///< cancelled when there is something to do
  bool overflowed = false;         ///< fell more than the hub's limit behind: to be disconnected
  bool closed = false;             ///< the service is stopping
};

/// `c` as a Server-Sent Event: `id:` its sequence number, `event: job`, `data:` the job's JSON.
[[nodiscard]] auto format_event(const job_change& c) -> std::string;

/// Fans committed state changes out to the /events clients. A client that falls more than
/// `max_backlog` events behind is disconnected (it reconnects and reads the job list) rather than
/// letting its backlog grow without bound. Used only on the event loop thread.
class event_hub {
 public:
  explicit event_hub(std::size_t max_backlog) : max_backlog_(max_backlog) {}

  auto subscribe(const boost::asio::any_io_executor& ex) -> std::shared_ptr<event_subscriber>;
  void unsubscribe(const std::shared_ptr<event_subscriber>& s);
  /// Queues `c` (format_event) for every client.
  void publish(const job_change& c);
  /// Queues an event that is not a change of the log (no `id:`, never replayed): progress, stats.
  void publish_unsequenced(const std::string& text);
  /// Ends every stream (shutdown).
  void close_all();
  [[nodiscard]] auto clients() const -> std::size_t { return subscribers_.size(); }

 private:
  void queue(std::int64_t seq, const std::string& text);

  std::size_t max_backlog_;
  std::vector<std::shared_ptr<event_subscriber>> subscribers_;
};

}  // namespace service
