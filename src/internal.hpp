// procpool - declarations shared between procpool's source files (not installed).
#pragma once

#include <sys/types.h>

#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <typeinfo>

#include "socket_message.hpp"
#include "unique_fd.hpp"

namespace procpool::detail {

/// Hex ELF build id of the running executable (empty if it has none), computed once.
auto build_id() -> const std::string&;

/// A readable name for the function a task runs: a lambda's type, or the symbol at `function`.
auto function_name(std::uintptr_t function, const std::type_info* callable_type) -> std::string;

/// What a worker applies to itself before it serves.
struct worker_setup {
  std::uint64_t memory_limit_bytes = 0;  // RLIMIT_AS; 0: none
  std::uint64_t cpu_seconds = 0;         // RLIMIT_CPU per task; 0: none
  std::uint64_t initializer = 0;         // void(*)() to run first; 0: none
  std::uint64_t memory_max_bytes = 0;    // its own memory cgroup's limit; 0: none
  std::uint64_t heap_retain_bytes = 0;   // freed memory malloc keeps; 0: glibc's default
  std::uint32_t sandbox_layers = 0;      // sandbox_layer bits; 0: no sandbox
  std::uint32_t sandbox_uid = 0, sandbox_gid = 0;
  // Bytes of readable paths (each NUL-terminated) that follow the setup in its message: the
  // sandbox's Landlock view; 0: none.
  std::uint32_t readable_paths_bytes = 0;
};

/// The most bytes of readable paths a spawn request carries (procpool::sandbox::readable_paths).
inline constexpr std::size_t max_readable_paths_bytes = 16 * 1024;

/// The worker_setup::sandbox_layers bits (procpool::sandbox's layers).
inline constexpr std::uint32_t sandbox_no_new_privileges = 1;
inline constexpr std::uint32_t sandbox_system_call_filter = 2;
inline constexpr std::uint32_t sandbox_fail_forbidden_calls = 4;  // EPERM instead of a kill
inline constexpr std::uint32_t sandbox_no_network = 8;
inline constexpr std::uint32_t sandbox_drop_privileges = 16;
inline constexpr std::uint32_t sandbox_clear_environment = 32;
inline constexpr std::uint32_t sandbox_allow_weaker_filesystem = 64;  // no Landlock: go on
inline constexpr std::uint32_t sandbox_enabled = 1U << 31;

/// Runs once in the fork server: takes the first-use costs of the worker's code paths (lazy symbol
/// binding, function-local statics, the build id) there, so that each forked worker shares the
/// result instead of paying for it with copy-on-write page faults.
void prepare_worker_code();

/// Runs the worker loop on `channel` (fd) until the parent closes it, then exits the process.
[[noreturn]] void run_worker(int channel, const worker_setup& setup);

// --- the fork server ---

/// Messages a pool sends on its fork-server connection (SOCK_SEQPACKET).
struct zygote_request {
  std::uint32_t kind = 1;  // 1 = spawn; the worker's channel, stdout and stderr fds ride along
  std::uint32_t reserved = 0;
  std::uint64_t spawn_id = 0;
  worker_setup setup;
};

enum class zygote_event_kind : std::uint32_t { spawned = 1, exited = 2, spawn_failed = 3 };

/// Messages the fork server sends back.
struct zygote_event {
  zygote_event_kind kind{};
  std::int32_t pid = 0;
  std::uint64_t spawn_id = 0;
  std::int32_t status = 0;   // waitpid status (exited) or errno (spawn_failed)
  std::uint32_t memory = 0;  // exited: one of the zygote_memory_* verdicts
};

/// Why an exited worker may have died of memory exhaustion.
inline constexpr std::uint32_t zygote_memory_unknown = 0;
inline constexpr std::uint32_t zygote_memory_cgroup_oom = 1;  // its own cgroup recorded an OOM kill
inline constexpr std::uint32_t zygote_memory_system_oom = 2;  // SIGKILLed while the kernel's OOM
                                                              // killer acted somewhere

/// Starts the fork server now if it is not running. Requires a single-threaded process.
void start_zygote();

/// A new connection to the fork server for one pool. Starts the server first when that is still
/// safe; throws init_required when it is not, worker_start_failed when the server is gone.
auto connect_zygote() -> unique_fd;

}  // namespace procpool::detail
