// procpool - per-worker memory cgroups and telling an out-of-memory kill apart from other deaths.
// Used only by the fork server and, right after fork, by a new worker.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <string>

namespace procpool::detail {

/// The directory of this process's memory cgroup (cgroup v2 with the memory controller, else the
/// v1 memory hierarchy), or empty when there is none.
auto own_memory_cgroup() -> std::string;

/// Where the fork server puts worker `pid`'s own cgroup under `base`.
auto worker_cgroup_path(const std::string& base, pid_t pid) -> std::string;

/// In a new worker: creates its cgroup under `base`, limits it to `limit_bytes` and moves the
/// calling process into it. Empty on success, otherwise what failed (for the worker's stderr).
auto join_memory_cgroup(const std::string& base, std::uint64_t limit_bytes) -> std::string;

/// How many times the kernel's OOM killer has acted in the cgroup at `dir` (0 if unreadable).
auto cgroup_oom_kills(const std::string& dir) -> std::uint64_t;

/// How many OOM kills the kernel has done since boot (/proc/vmstat oom_kill; 0 if unreadable).
auto system_oom_kills() -> std::uint64_t;

}  // namespace procpool::detail
