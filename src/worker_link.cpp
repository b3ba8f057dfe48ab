// procpool - a worker's channel (see worker_link.hpp).
#include "worker_link.hpp"

#include <sys/socket.h>
#include <sys/uio.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "socket_message.hpp"

namespace procpool::detail {

worker_link::worker_link(const boost::asio::any_io_executor& ex, unique_fd channel) : channel_(ex) {
  channel_.assign(boost::asio::local::stream_protocol(), channel.release());
}

auto worker_link::try_send(std::span<const std::byte> frame, std::size_t& sent) -> send_result {
  sent = 0;
  const ssize_t n =
      ::send(channel_.native_handle(), frame.data(), frame.size(), MSG_DONTWAIT | MSG_NOSIGNAL);
  if (n == static_cast<ssize_t>(frame.size())) {
    sent = frame.size();
    return send_result::sent;
  }
  if (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) return send_result::lost;
  sent = n > 0 ? static_cast<std::size_t>(n) : 0;
  return send_result::partly_sent;
}

auto worker_link::try_send(std::span<const boost::asio::const_buffer> frames, std::size_t& sent)
    -> send_result {
  sent = 0;
  iovec iov[max_frames_per_send];
  std::size_t count = 0, total = 0;
  for (const auto& f : frames.first(std::min(frames.size(), max_frames_per_send))) {
    iov[count++] = {const_cast<void*>(f.data()), f.size()};
    total += f.size();
  }
  msghdr msg{};
  msg.msg_iov = iov;
  msg.msg_iovlen = count;
  const ssize_t n = ::sendmsg(channel_.native_handle(), &msg, MSG_DONTWAIT | MSG_NOSIGNAL);
  if (n >= 0 && static_cast<std::size_t>(n) == total && count == frames.size()) {
    sent = total;
    return send_result::sent;
  }
  if (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) return send_result::lost;
  sent = n > 0 ? static_cast<std::size_t>(n) : 0;
  return send_result::partly_sent;
}

auto worker_link::send_shared(std::uint64_t task_id, std::span<const std::byte> payload)
    -> shared_result {
  if (region_.size() < payload.size()) {
    region_ = sealed_region::create(payload.size());
    if (!region_) return shared_result::unavailable;
  }
  std::memcpy(region_.data(), payload.data(), payload.size());
  struct {
    frame_header h;
    shared_task st;
  } message;
  message.h = make_frame_header(frame_kind::shared_task, task_id, sizeof message.st);
  message.st.size = payload.size();
  // A new region's memfd rides along once; the worker keeps its mapping for the next tasks.
  const unique_fd fresh = region_.take_descriptor();
  const int fd = fresh.get();
  if (!send_message(channel_.native_handle(), &message, sizeof message,
                    fd >= 0 ? std::span<const int>(&fd, 1) : std::span<const int>())) {
    return shared_result::lost;
  }
  return shared_result::sent;
}

auto worker_link::read_buffer() -> boost::asio::mutable_buffer {
  constexpr std::size_t chunk = 64 * 1024;
  if (rx_begin_ == rx_end_) {
    rx_begin_ = rx_end_ = 0;
    // Do not keep a large result's buffer for a worker that mostly sends small ones.
    if (rx_.size() > std::size_t{1} << 20) byte_buffer().swap(rx_);
  }
  const std::size_t pending = rx_end_ - rx_begin_;
  if (rx_begin_ != 0) {
    std::memmove(rx_.data(), rx_.data() + rx_begin_, pending);
    rx_begin_ = 0;
    rx_end_ = pending;
  }
  std::size_t room = pending + chunk;
  if (pending >= sizeof(frame_header)) {
    // A frame whose header was accepted (next_frame checked it) but whose payload is not all
    // here: make room for all of it at once.
    frame_header h;
    std::memcpy(&h, rx_.data(), sizeof h);
    room = std::max(room, sizeof h + static_cast<std::size_t>(h.size));
  }
  if (rx_.size() < room) rx_.resize(room);
  return boost::asio::buffer(rx_.data() + rx_end_, rx_.size() - rx_end_);
}

auto worker_link::next_frame(const channel_state& state, std::string& violation)
    -> std::optional<received_frame> {
  if (rx_end_ - rx_begin_ < sizeof(frame_header)) return std::nullopt;
  received_frame f;
  std::memcpy(&f.header, rx_.data() + rx_begin_, sizeof f.header);
  if (violation = check_header(f.header, state); !violation.empty()) return std::nullopt;
  if (rx_end_ - rx_begin_ - sizeof f.header < f.header.size) return std::nullopt;
  f.payload = std::span<const std::byte>(rx_.data() + rx_begin_ + sizeof f.header,
                                         static_cast<std::size_t>(f.header.size));
  rx_begin_ += sizeof f.header + static_cast<std::size_t>(f.header.size);
  return f;
}

void worker_link::shutdown_send() {
  boost::system::error_code ignored;
  channel_.shutdown(boost::asio::socket_base::shutdown_send, ignored);
}

void worker_link::close() {
  boost::system::error_code ignored;
  channel_.close(ignored);
  region_ = sealed_region();
}

}  // namespace procpool::detail
