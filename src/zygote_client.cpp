// procpool - one pool's connection to the fork server (see zygote_client.hpp).
#include "zygote_client.hpp"

#include <poll.h>
#include <sys/socket.h>

#include <cerrno>
#include <cstring>
#include <span>
#include <string>

#include "socket_message.hpp"

namespace procpool::detail {

auto zygote_client::spawn(const worker_setup& setup, std::string_view readable_paths,
                          const std::array<int, 3>& fds) -> std::uint64_t {
  zygote_request req;
  req.spawn_id = next_spawn_id_;
  req.setup = setup;
  if (readable_paths.empty()) {
    if (!send_message(connection_.native_handle(), &req, sizeof req, fds)) return 0;
  } else {
    // One message, so that the fork server reads a request whole or not at all.
    std::string message(sizeof req + readable_paths.size(), '\0');
    std::memcpy(message.data(), &req, sizeof req);
    std::memcpy(message.data() + sizeof req, readable_paths.data(), readable_paths.size());
    if (!send_message(connection_.native_handle(), message.data(), message.size(), fds)) return 0;
  }
  return next_spawn_id_++;
}

auto zygote_client::drain(std::vector<received_event>& events) -> bool {
  for (;;) {
    received_event r;
    int passed = -1;
    const long n = receive_message(connection_.native_handle(), &r.event, sizeof r.event,
                                   std::span<int>(&passed, 1));
    r.fd.reset(passed);
    if (n < 0 && errno == EAGAIN) return true;
    if (n <= 0) return false;
    if (n != static_cast<long>(sizeof r.event)) continue;  // not from a fork server of this build
    events.push_back(std::move(r));
  }
}

void zygote_client::wait_readable(int fd, std::chrono::milliseconds timeout) {
  pollfd p{fd, POLLIN, 0};
  ::poll(&p, 1, static_cast<int>(timeout.count()));
}

void zygote_client::hang_up() {
  if (connection_.is_open()) ::shutdown(connection_.native_handle(), SHUT_WR);
}

auto zygote_client::discard_events() -> bool {
  if (!connection_.is_open()) return true;
  for (;;) {
    zygote_event e;
    int passed = -1;
    const long n =
        receive_message(connection_.native_handle(), &e, sizeof e, std::span<int>(&passed, 1));
    const unique_fd discarded(passed);
    if (n > 0) continue;
    return !(n < 0 && errno == EAGAIN);
  }
}

void zygote_client::cancel() {
  boost::system::error_code ignored;
  if (connection_.is_open()) connection_.cancel(ignored);
}

void zygote_client::close() {
  boost::system::error_code ignored;
  connection_.close(ignored);
}

}  // namespace procpool::detail
