// procpool - what a worker process may do (pool_options::sandbox).
#pragma once

#include <cstdint>

namespace procpool {

/// Confines every worker of a pool, for tasks that handle untrusted input (decoders, parsers,
/// converters). Off unless pool_options::sandbox is set. The fork server applies the layers in
/// each new worker before the worker greets the pool, in this order: a new network namespace,
/// then the unprivileged uid/gid, then no-new-privileges, then the system call filter, last. So
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

  /// Every layer: the preset for tasks that compute on bytes they are given.
  static auto compute_only() -> sandbox { return {}; }
};

}  // namespace procpool
