// procpool - options for one task.
#pragma once

#include <chrono>
#include <functional>

#include "procpool/progress.hpp"

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

  /// Called with the task's progress reports (procpool::report_progress in the task), in order,
  /// through the completion handler's associated executor (where the task's result arrives: the
  /// coroutine's executor for `co_await pool.submit`), one call at a time, and never after the
  /// completion handler: the completion is posted once the last call has returned. Reports are
  /// coalesced twice: in the worker (at most one every 5 ms) and here (a report that arrives while
  /// a call is pending replaces the one not yet shown), so a slow callback sees fewer, newer
  /// reports rather than a backlog. The task's last report normally arrives before its result;
  /// on a multi-threaded io_context a report read just before the outcome may be handed on by
  /// another thread after it, and is then dropped rather than shown late, so do not rely on
  /// seeing done == total. Empty (the default): reports are checked and dropped, and a task that
  /// never reports costs nothing extra. A task retried after a crash reports again from its
  /// start. An exception thrown by the callback propagates out of the executor's run(), like any
  /// handler's; the task still completes, and the callback is not called again.
  ///
  /// With `map`, the callback gets the items done (chunks as they finish) of all items.
  std::function<void(const progress&)> on_progress = nullptr;
};

}  // namespace procpool
