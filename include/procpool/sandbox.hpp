// procpool - what a worker process may do (pool_options::sandbox).
#pragma once

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

namespace procpool {

/// Confines every worker of a pool, for tasks that handle untrusted input (decoders, parsers,
/// converters). Off unless pool_options::sandbox is set. The fork server applies the layers in
/// each new worker before the worker greets the pool, in this order: an empty environment, a new
/// network namespace, no-new-privileges, the Landlock filesystem view, the unprivileged uid/gid,
/// and the system call filter, last. So
/// pool_options::initializer and every task run inside the sandbox; the worker's memory cgroup
/// and address-space limit are set up before it. A layer that cannot be applied (for example no
/// user namespaces for an unprivileged pool) fails the worker's start with the reason on its
/// stderr, so the pool reports worker_start_failed: a worker never runs with less than was asked.
struct sandbox {
  /// What a system call outside the filter's allowlist does.
  enum class violation : std::uint8_t {
    /// The worker dies by SIGSYS at once; its task fails with worker_crashed naming the sandbox.
    kill_worker,
    /// The call fails with EPERM and the task goes on (it may handle the error).
    fail_call,
  };

  /// PR_SET_NO_NEW_PRIVS: execve can never grant privileges (setuid binaries, file capabilities).
  /// (Whatever the layers, a sandboxed worker is also made non-dumpable: another process of its
  /// uid, such as a sibling worker, cannot ptrace it or read its memory through /proc.)
  bool no_new_privileges = true;

  /// A seccomp filter that allows what computation needs — memory, threads (not processes),
  /// futexes, time, signals to itself, I/O on the descriptors the worker already has (its channel
  /// to the pool, its stdout and stderr) — and nothing else: no socket, open, exec, fork,
  /// ptrace, process_vm_readv/writev, kill of another process, namespace, mount or uid change.
  bool system_call_filter = true;
  violation on_violation = violation::kill_worker;

  /// A new, empty network namespace per worker: not even the host's loopback is reachable. As
  /// root directly; otherwise through a new user namespace (the kernel must allow unprivileged
  /// user namespaces).
  bool no_network = true;

  /// When the pool runs as root, workers run as this uid/gid with no supplementary groups
  /// (65534 is "nobody" on Debian). Ignored when the pool does not run as root.
  bool drop_privileges = true;
  std::uint32_t uid = 65534;
  std::uint32_t gid = 65534;

  /// No environment variables (the strings inherited from the program are overwritten, not only
  /// unlinked, so they are not left in the worker's memory), and standard input is /dev/null.
  /// Every descriptor but the worker's own (stdin, stdout, stderr, its channel) is closed in any
  /// case.
  bool clear_environment = true;

  /// Files the worker may read (files, or directories and everything beneath them), through
  /// Landlock: nothing else may be read, and nothing anywhere written, created, removed, renamed
  /// or executed. Empty (the default): the system call filter refuses every open. With paths, the
  /// filter allows opening for reading only (and stat-like calls), and Landlock narrows that to
  /// these paths. Landlock's truncate right needs Linux 6.2; before it, truncate is refused by the
  /// filter instead (and by Landlock's write rights for opening with O_TRUNC).
  std::vector<std::string> readable_paths;

  /// On a kernel without Landlock (before 5.13, or not in its lsm= list) readable_paths makes the
  /// pool's constructor throw std::system_error (errc::function_not_supported). Set this to run
  /// anyway with the filter's read-only open alone: every file the worker's uid may read is then
  /// readable (writes are still refused).
  bool allow_weaker_filesystem_view = false;

  /// Every layer: the preset for tasks that compute on bytes they are given.
  static auto compute_only() -> sandbox { return {}; }

  /// Every layer, and reading beneath `paths` (for example a model or dictionary directory).
  static auto read_only_files(std::vector<std::string> paths) -> sandbox {
    sandbox s;
    s.readable_paths = std::move(paths);
    return s;
  }
};

}  // namespace procpool
