// procpool - one pool's connection to the fork server: spawn requests out, events (spawned,
// spawn_failed, exited) in.
//
// Not thread-safe: used under pool_core's lock. It makes no calls into the pool: drain() returns
// the events and the pool acts on them.
#pragma once

#include <array>
#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/posix/stream_descriptor.hpp>
#include <chrono>
#include <string_view>
#include <vector>

#include "internal.hpp"
#include "unique_fd.hpp"

namespace procpool::detail {

/// An event from the fork server, with the descriptor that rode along (the worker's pidfd).
struct received_event {
  zygote_event event;
  unique_fd fd;
};

class zygote_client {
 public:
  explicit zygote_client(const boost::asio::any_io_executor& ex) : connection_(ex) {}

  void assign(unique_fd connection) { connection_.assign(connection.release()); }
  [[nodiscard]] auto is_open() const -> bool { return connection_.is_open(); }
  auto connection() -> boost::asio::posix::stream_descriptor& { return connection_; }

  /// Asks for a worker. `fds` (its channel, stdout and stderr) are duplicated into the request;
  /// the caller closes its copies. Returns the new worker's spawn id, or 0 when the fork server is
  /// gone (errno set).
  /// `readable_paths`: setup.readable_paths_bytes bytes sent after the setup.
  auto spawn(const worker_setup& setup, std::string_view readable_paths,
             const std::array<int, 3>& fds) -> std::uint64_t;

  /// Appends every event queued now to `events`; false once the fork server has gone (end of
  /// stream or an error other than "nothing queued").
  auto drain(std::vector<received_event>& events) -> bool;

  /// Closes our sending side: the fork server then kills and reaps every worker of ours still
  /// alive, and closes its side when done.
  void hang_up();
  /// Discards the events queued now; true once the fork server has closed its side (or the
  /// connection failed).
  auto discard_events() -> bool;

  [[nodiscard]] auto native_handle() -> int { return connection_.native_handle(); }
  /// Waits up to `timeout` for `fd` (a connection's native_handle()) to become readable. Needs no
  /// lock: it uses only the descriptor number, so a pool can wait with its lock released.
  static void wait_readable(int fd, std::chrono::milliseconds timeout);

  /// Cancels the pending wait, if any.
  void cancel();
  void close();

 private:
  boost::asio::posix::stream_descriptor connection_;
  std::uint64_t next_spawn_id_ = 1;
};

}  // namespace procpool::detail
