// procpool - a worker process: its pid, and the pidfd signals go through (never to a recycled pid),
// as Boost.Process v2's process handle. Both come from the fork server's "spawned" event, which may
// arrive after the pool has already decided to signal the worker: the signal then waits for it.
//
// Not thread-safe: belongs to its worker, used under pool_core's lock.
#pragma once

#include <sys/types.h>

#include <utility>

#include "sys_ops.hpp"
#include "unique_fd.hpp"

namespace procpool::detail {

class process_handle {
 public:
  /// The fork server reported the process; a signal asked for before now is sent at once.
  void adopt(pid_t pid, unique_fd pidfd) {
    pid_ = pid;
    pidfd_ = std::move(pidfd);
    if (pending_signal_ != 0 && pidfd_) send_signal(pidfd_, std::exchange(pending_signal_, 0));
  }

  /// Sends `signal` now, or as soon as the process is known.
  void signal(int signal) {
    if (pidfd_) {
      send_signal(pidfd_, signal);
    } else {
      pending_signal_ = signal;
    }
  }

  /// Closes the pidfd (the process has been reaped, or the pool lets it go).
  void release() { pidfd_.reset(); }

  [[nodiscard]] auto pid() const -> pid_t { return pid_; }

 private:
  pid_t pid_ = 0;  // 0 until the fork server reports it
  unique_fd pidfd_;
  int pending_signal_ = 0;
};

}  // namespace procpool::detail
