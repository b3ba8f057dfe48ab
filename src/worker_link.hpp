// procpool - a worker's channel as the pool sees it: task frames out (through the socket, or
// through the worker's shared region for large tasks) and frames in (read into a buffer, split, and
// checked by frame_check before anything else looks at them).
//
// Not thread-safe: a worker_link belongs to its worker and is used under pool_core's lock. It makes
// no calls into the pool: each function returns what happened and the pool acts on it.
#pragma once

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/buffer.hpp>
#include <boost/asio/local/stream_protocol.hpp>
#include <cstdint>
#include <optional>
#include <span>
#include <string>

#include "frame_check.hpp"
#include "procpool/detail/codec.hpp"
#include "procpool/detail/wire.hpp"
#include "sys_ops.hpp"
#include "unique_fd.hpp"

namespace procpool::detail {

class worker_link {
 public:
  worker_link(const boost::asio::any_io_executor& ex, unique_fd channel);

  auto socket() -> boost::asio::local::stream_protocol::socket& { return channel_; }

  enum class send_result { sent, partly_sent, lost };

  /// Writes a whole frame if the socket takes it now (most do: no completion to run). On
  /// partly_sent, `sent` bytes went and the caller writes the rest asynchronously.
  auto try_send(std::span<const std::byte> frame, std::size_t& sent) -> send_result;
  /// The same for several frames in one system call (at most max_frames_per_send).
  auto try_send(std::span<const boost::asio::const_buffer> frames, std::size_t& sent)
      -> send_result;
  static constexpr std::size_t max_frames_per_send = 64;

  enum class shared_result { sent, unavailable, lost };

  /// Sends a task whose payload is `payload` through the worker's shared region: one copy into
  /// memory the worker maps (read-only: see sealed_region), and a small shared_task frame, instead
  /// of a copy into the socket and another out of it. `unavailable` when the region cannot be set
  /// up (the caller sends through the channel instead).
  auto send_shared(std::uint64_t task_id, std::span<const std::byte> payload) -> shared_result;

  /// Where the next read goes: after the unhandled bytes, with room for all of a frame whose header
  /// has already been accepted.
  auto read_buffer() -> boost::asio::mutable_buffer;
  /// `n` bytes were read into read_buffer().
  void received(std::size_t n) { rx_end_ += n; }

  struct received_frame {
    frame_header header;
    std::span<const std::byte> payload;  // valid until the next read_buffer()
  };
  /// The next complete frame received, once check_header accepts it against `state`; nullopt when
  /// none is complete yet, or (with `violation` set) when the header breaks the protocol.
  auto next_frame(const channel_state& state, std::string& violation)
      -> std::optional<received_frame>;

  /// Half-closes the channel: the worker reads end-of-file after its current task and exits.
  void shutdown_send();
  /// Closes the channel and unmaps the shared region.
  void close();

 private:
  boost::asio::local::stream_protocol::socket channel_;
  byte_buffer rx_;  // bytes read from the channel: [rx_begin_, rx_end_) not yet handled
  std::size_t rx_begin_ = 0, rx_end_ = 0;
  sealed_region region_;  // mapped writable here, read-only in the worker
};

}  // namespace procpool::detail
