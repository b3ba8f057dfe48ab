// procpool - the system calls the pool makes about a worker, each behind one small function:
// /proc reads, the descriptors a new worker needs, signals through a pidfd, and sealed shared
// memory. None of them touches pool state.
#pragma once

#include <sys/types.h>

#include <cstddef>
#include <optional>
#include <string>

#include "unique_fd.hpp"

namespace procpool::detail {

/// Whether the process has begun to exit. A dying process sets PF_EXITING before the kernel closes
/// its files, so a worker whose channel ended without this flag hung up while still running.
/// True when /proc cannot tell (the process is gone).
auto process_is_exiting(pid_t pid) -> bool;

/// A process's resident memory, from /proc (the worker cannot misreport it); 0 if unreadable.
auto resident_bytes(pid_t pid) -> std::size_t;

/// What a new worker is started with: its channel (a stream socket pair) and its stdout and stderr
/// pipes. The pool's ends are close-on-exec; the pipes' read ends are non-blocking (a worker's
/// printf must block on a full pipe, not fail, so its write ends stay blocking).
struct worker_descriptors {
  unique_fd channel, worker_channel;
  unique_fd out, worker_out;
  unique_fd err, worker_err;
};

/// The descriptors for one worker, or nullopt with `error` saying which call failed and why.
auto make_worker_descriptors(std::string& error) -> std::optional<worker_descriptors>;

/// Sends `signal` through a pidfd (never to a recycled pid).
void send_signal(const unique_fd& pidfd, int signal);

/// A memfd of `size` bytes mapped writable here and sealed so that whoever it is passed to can map
/// it only read-only and can never resize it: the pool's stores into it cannot fault because of
/// the receiver, and the receiver cannot change what it reads under the pool.
class sealed_region {
 public:
  sealed_region() = default;
  sealed_region(sealed_region&& o) noexcept;
  auto operator=(sealed_region&& o) noexcept -> sealed_region&;
  ~sealed_region();

  /// A region of at least `bytes`, rounded up to whole MiB; an empty region if the kernel refuses.
  static auto create(std::size_t bytes) -> sealed_region;

  [[nodiscard]] auto data() const -> std::byte* { return data_; }
  [[nodiscard]] auto size() const -> std::size_t { return size_; }
  explicit operator bool() const { return data_ != nullptr; }
  /// The memfd, until it has been passed on once (see take_descriptor).
  auto take_descriptor() -> unique_fd { return std::move(fd_); }

 private:
  std::byte* data_ = nullptr;
  std::size_t size_ = 0;
  unique_fd fd_;
};

}  // namespace procpool::detail
