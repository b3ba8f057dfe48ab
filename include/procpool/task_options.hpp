// procpool - options for one task.
#pragma once

#include <chrono>

namespace procpool {

/// Per-task options: `co_await pool.submit(procpool::task_options{.timeout = 2s}, f, x)`.
struct task_options {
  /// Hard time limit, counted from the moment a worker takes the task (queue time does not count).
  /// When it passes, the worker and everything the task started are killed (SIGKILL to its process
  /// group) and the task fails with timeout_error. Zero: use pool_options::task_timeout.
  std::chrono::milliseconds timeout{0};

  /// If the task's worker crashes, run the task again on a fresh worker, up to this many times.
  /// Only for idempotent tasks: the crashed attempt may have done part of its work. Exceptions,
  /// timeouts and cancellation are never retried. Retried tasks go to the front of the queue.
  unsigned crash_retries = 0;
};

}  // namespace procpool
