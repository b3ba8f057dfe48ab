// procpool - a snapshot of what a process pool is doing.
#pragma once

#include <cstddef>
#include <cstdint>

namespace procpool {

/// Counters since the pool was created, plus the current state.
struct pool_stats {
  std::size_t workers = 0;      ///< live worker processes (starting, idle or busy)
  std::size_t busy = 0;         ///< workers running a task
  std::size_t idle = 0;         ///< workers ready for a task
  std::size_t queued = 0;       ///< tasks waiting for a worker
  std::size_t waiting = 0;      ///< submits waiting for room in a full queue (max_queue)
  std::uint64_t completed = 0;  ///< tasks that returned a value
  std::uint64_t failed = 0;     ///< tasks that threw in the worker
  std::uint64_t crashed = 0;    ///< tasks whose worker died under them
  std::uint64_t cancelled = 0;  ///< tasks cancelled (queued or running)
  std::uint64_t timed_out = 0;  ///< tasks killed by their task timeout
  std::uint64_t respawned = 0;  ///< replacement workers started
  std::uint64_t recycled = 0;   ///< workers retired by max_tasks_per_worker or max_worker_rss_bytes
  std::uint64_t rejected = 0;   ///< submits refused with queue_full
  std::uint64_t retried = 0;    ///< tasks run again after a crash (task_options::crash_retries)
};

}  // namespace procpool
