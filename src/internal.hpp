// procpool - declarations shared between procpool's source files (not installed).
#pragma once

#include <sys/types.h>

#include <cstddef>
#include <cstdint>
#include <string>
#include <typeinfo>

#include "unique_fd.hpp"

namespace procpool::detail {

/// Hex ELF build id of the running executable (empty if it has none), computed once.
auto build_id() -> const std::string&;

/// A readable name for the function a task runs: a lambda's type, or the symbol at `function`.
auto function_name(std::uintptr_t function, const std::type_info* callable_type) -> std::string;

/// Number of threads in this process, from /proc/self/task.
auto thread_count() -> std::size_t;

/// Runs the worker loop on `channel` (fd) until the parent closes it, then exits the process.
[[noreturn]] void run_worker(int channel);

// --- the fork server ---

/// Messages a pool sends on its fork-server connection (SOCK_SEQPACKET).
struct zygote_request {
  std::uint32_t kind = 1;  // 1 = spawn; the worker's channel fd rides along (SCM_RIGHTS)
  std::uint32_t reserved = 0;
  std::uint64_t spawn_id = 0;
};

enum class zygote_event_kind : std::uint32_t { spawned = 1, exited = 2, spawn_failed = 3 };

/// Messages the fork server sends back.
struct zygote_event {
  zygote_event_kind kind{};
  std::int32_t pid = 0;
  std::uint64_t spawn_id = 0;
  std::int32_t status = 0;  // waitpid status (exited) or errno (spawn_failed)
  std::int32_t reserved = 0;
};

/// Starts the fork server now if it is not running. Requires a single-threaded process.
void start_zygote();

/// A new connection to the fork server for one pool. Starts the server first when that is still
/// safe; throws init_required when it is not, worker_start_failed when the server is gone.
auto connect_zygote() -> unique_fd;

/// sendmsg of one message with an optional fd attached; returns false on failure (errno set).
auto send_message(int sock, const void* data, std::size_t size, int fd_to_pass) -> bool;

/// recvmsg of one message; an attached fd is stored in *received_fd (else -1). Returns the byte
/// count, 0 at end of stream, -1 on error (errno set).
auto receive_message(int sock, void* data, std::size_t size, int* received_fd, bool wait) -> long;

}  // namespace procpool::detail
