// procpool - the worker sandbox's layers, one function each, applied in a freshly forked worker
// before it greets the pool (the fork server is single-threaded, so they may allocate). Each
// returns what it did not manage to do ("<step>: <reason>"), empty on success; the caller decides
// whether a missing layer is fatal. Not yet wired into the fork server (issue 13, first step).
#pragma once

#include <sys/types.h>

#include <string>
#include <string_view>
#include <vector>

namespace procpool::detail {

/// PR_SET_NO_NEW_PRIVS: execve can never grant privileges (setuid binaries, file capabilities).
/// Required before an unprivileged process may load a seccomp filter or a Landlock ruleset.
auto set_no_new_privs() -> std::string;

/// What a system call outside the allowlist does.
enum class seccomp_violation {
  kill_process,  ///< the call is not made; the worker says which on stderr and dies by SIGSYS
  fail_call,     ///< the call fails with EPERM and the task goes on
};

/// Loads the allowlist of "normal C++ computation": memory, threads, futexes, time, signals to
/// itself, and I/O on descriptors the worker already has (its channel and pipes). No socket,
/// open, exec, fork, ptrace, process_vm_*, kill of another process, namespace or mount call.
/// With `read_only_open`, openat (and stat-like calls) with read-only flags are allowed too, for
/// a filesystem view that Landlock then narrows. Loaded last: nothing after it may need more.
/// In kill_process mode a SIGSYS handler is installed first: it writes
/// "procpool: seccomp refused system call <number>" to stderr before dying.
auto load_compute_filter(seccomp_violation on_violation, bool read_only_open) -> std::string;

/// The system call a worker killed by the filter named on stderr ("socket (41)"), resolved in the
/// pool's process; empty if `stderr_tail` has no such line.
auto forbidden_call_in(std::string_view stderr_tail) -> std::string;

/// A new, empty network namespace (only a loopback interface, down): no connection to anything.
/// As root directly; otherwise through a new user namespace that maps the current uid and gid.
auto unshare_network() -> std::string;

/// Drops to `uid`/`gid` with no supplementary groups (only when running as root).
auto drop_privileges(uid_t uid, gid_t gid) -> std::string;

/// The Landlock ABI version the kernel offers; 0 when it has none (or it is disabled).
auto landlock_abi() -> int;

/// Restricts the filesystem to reading files and listing directories beneath `readable` (and
/// nothing else: no write, create, remove, rename or execute anywhere).
auto restrict_filesystem(const std::vector<std::string>& readable) -> std::string;

}  // namespace procpool::detail
