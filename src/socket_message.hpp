// procpool - one message over a Unix socket, with descriptors attached (SCM_RIGHTS): the fork
// server's requests and events, and the shared-region frames on a worker's channel.
#pragma once

#include <cstddef>
#include <span>

namespace procpool::detail {

/// Most descriptors one message may carry (a worker's channel, stdout and stderr).
inline constexpr std::size_t max_passed_fds = 3;

/// sendmsg of one message with `fds` attached; false on failure (errno set). Waits (poll) while
/// the socket is full.
auto send_message(int sock, const void* data, std::size_t size, std::span<const int> fds = {})
    -> bool;

enum class receive_mode { now, wait };

/// recvmsg of one message: `now` returns at once (EAGAIN when nothing is queued), `wait` blocks
/// until something arrives. Attached descriptors fill `fds` in order (the rest are set to -1);
/// descriptors beyond fds.size() are closed, never leaked. Returns the byte count, 0 at end of
/// stream, -1 on error (errno set).
auto receive_message(int sock, void* data, std::size_t size, std::span<int> fds,
                     receive_mode mode = receive_mode::now) -> long;

}  // namespace procpool::detail
