// procpool - how a process pool is configured.
#pragma once

#include <chrono>
#include <cstddef>
#include <optional>

#include "procpool/output.hpp"
#include "procpool/sandbox.hpp"

namespace procpool {

/// What a submit does when pool_options::max_queue tasks are already queued.
enum class queue_full_action {
  wait,  ///< hold the task until the queue has room
  fail,  ///< complete at once with queue_full (for callers that shed load themselves)
};

/// Options for procpool::process_pool. Every field has a usable default.
struct pool_options {
  /// Number of worker processes; 0 means one per hardware thread
  /// (std::thread::hardware_concurrency).
  std::size_t workers = 0;

  /// Extra workers started ahead of need and kept idle: when a worker dies, times out, is
  /// cancelled or recycled, a spare takes the next task at once instead of it waiting for a new
  /// process to start (and a new spare starts in the background). At most `workers` tasks run at
  /// a time either way; a spare costs one idle process (its memory, no CPU).
  std::size_t spare_workers = 0;

  /// How many queued tasks a busy worker may hold beyond the one it runs (at most 64); 0, the
  /// default, sends none ahead. A worker holding tasks starts the next as soon as it has written an
  /// outcome instead of waiting for the pool's answer, and a worker is topped up once it holds half
  /// of this or less, several tasks in one write: more throughput for many short tasks (16 is a
  /// good start). The price: a task sent ahead waits for the tasks in front of it even if another
  /// worker frees up first, so leave it at 0 when long and short tasks mix. Cancelling a task held
  /// ahead (any cancellation type) asks its worker to skip it: the task ends `cancelled` when the
  /// worker reaches it. A worker that had started it anyway (it looks for skips among the frames it
  /// has read and one more read) runs it to its outcome, unless the cancellation was terminal:
  /// then it is killed 10 ms after the task became current, as for a running task. Tasks held by a
  /// worker that dies, or is killed for a timeout or a cancellation of the task in front, run on
  /// other workers, in order, and that is not a crash retry; one the worker had provably started
  /// fails with worker_crashed. Never sent ahead: a task of 1 MiB or more, any task when
  /// max_queue is set. Output lines a task sent ahead prints before the pool reads the outcome of
  /// the task in front of it may be named after that task.
  std::size_t send_ahead = 0;

  /// How long the pool's destructor waits after asking busy workers to stop (SIGTERM) before it
  /// kills them (SIGKILL). Idle workers exit at once when their channel closes.
  std::chrono::milliseconds stop_grace{1000};

  /// Largest frame (arguments or result, encoded) accepted in either direction. A worker that sends
  /// a larger one is treated as crashed; a larger task is refused with serialization_error.
  std::size_t max_message_bytes = std::size_t{1} << 30;

  /// Default hard time limit of every task, counted from dispatch to a worker; zero means none.
  /// See task_options::timeout, which overrides it per task.
  std::chrono::milliseconds task_timeout{0};

  /// Replace a worker after it has run this many tasks (for code that leaks or fragments memory);
  /// zero means never. The replacement starts at once, while the old worker exits.
  std::size_t max_tasks_per_worker = 0;

  /// Most tasks that may wait for a worker; zero means no limit. What a submit beyond it does is
  /// `when_queue_full`'s choice.
  std::size_t max_queue = 0;

  /// With a full queue, a submit either waits for room (its task is held, in submission order,
  /// and enters the queue as tasks leave it; cancellable while it waits) or completes at once
  /// with queue_full. A waiting submit still holds its encoded arguments: a producer that must
  /// keep memory flat awaits process_pool::async_wait_for_room before creating the next task.
  queue_full_action when_queue_full = queue_full_action::wait;

  /// Address-space limit of each worker (RLIMIT_AS), in bytes; zero means none. An allocation
  /// beyond it fails inside the task (std::bad_alloc comes back to the caller, the worker lives).
  /// Not usable under AddressSanitizer or ThreadSanitizer, which reserve huge address ranges.
  std::size_t memory_limit_bytes = 0;

  /// Limit on each worker's memory (resident pages and page cache it charges), enforced by the
  /// kernel through a memory cgroup of its own: cgroup v2 `memory.max`, or v1
  /// `memory.limit_in_bytes` (swap limited alike). A worker that exceeds it is killed by the OOM
  /// killer and its task fails with worker_crashed whose out_of_memory() is true. Zero means none.
  /// Needs the right to create cgroups under the program's memory cgroup (root, or a delegated
  /// cgroup); without it workers fail to start and submits get worker_start_failed naming why.
  std::size_t memory_max_bytes = 0;

  /// Replace a worker after a task that leaves its resident memory (RSS, read by the pool from
  /// /proc) above this many bytes; zero means never. For code that leaks or fragments: unlike
  /// memory_max_bytes nothing is killed, the worker is retired between tasks.
  std::size_t max_worker_rss_bytes = 0;

  /// How much freed memory each worker's malloc (glibc) keeps for reuse instead of returning it to
  /// the kernel; zero leaves glibc's defaults. Large arguments are decoded into fresh buffers in
  /// the worker, and faulting in fresh pages costs far more than reusing warm ones (on the
  /// development VM, a 64 MiB round trip went from ~0.7 s to ~0.1 s). With it, big allocations come
  /// from the heap rather than from separate mappings, and a worker's resident size stays at its
  /// high-water mark, up to this much above its live data (see max_worker_rss_bytes).
  std::size_t worker_heap_retain_bytes = std::size_t{256} << 20;

  /// CPU time one task may use (RLIMIT_CPU, re-armed before each task); zero means none. A task
  /// that uses more is killed (SIGXCPU) and fails with worker_crashed naming the limit.
  std::chrono::seconds cpu_time_limit{0};

  /// Runs once in every worker before it takes tasks (like ProcessPoolExecutor's initializer). If
  /// it throws or crashes, the worker counts as failing to start: the pool retries with back-off,
  /// and after 5 failures in a row queued tasks fail with worker_start_failed carrying the
  /// worker's last output (the initializer's exception is written to its stderr).
  void (*initializer)() = nullptr;

  /// Where the workers' stdout and stderr lines go; empty means write_to_stderr (each line
  /// prefixed with the worker's slot, pid and running function). The last
  /// `crash_output_lines` lines of a worker are attached to the worker_crashed error of its task.
  output_sink output{};

  /// How many of a worker's last stderr lines a worker_crashed error carries.
  std::size_t crash_output_lines = 50;

  /// Whether those lines include stdout too (interleaved in the order the pool read them). Off by
  /// default: stdout is often a task's data or progress, stderr its account of what went wrong.
  bool crash_output_includes_stdout = false;

  /// Confines the workers (see procpool/sandbox.hpp): `.sandbox =
  /// procpool::sandbox::compute_only()`. Empty (the default): workers have every right the program
  /// has.
  std::optional<procpool::sandbox> sandbox = std::nullopt;
};

/// How procpool::process_pool::async_shutdown stops the pool.
enum class shutdown_mode {
  /// Refuse new tasks; finish every queued and running task; then stop the workers.
  graceful,
  /// Refuse new tasks; fail queued tasks with pool_closed; kill running workers (their tasks fail
  /// with pool_closed); then reap every worker.
  immediate,
};

}  // namespace procpool
