// procpool - the errors a pool reports, each saying what the caller should do about it.
#pragma once

#include <sys/types.h>
#include <stdexcept>
#include <string>

namespace procpool {

/// What a caller should do when it catches a procpool::error (modelled on absl::StatusCode groups).
enum class advice {
  retry,                ///< Transient: the same call may succeed if made again (after a back-off).
  retry_if_idempotent,  ///< The task may have run partly; retry only if running it twice is
                        ///< harmless.
  do_not_retry,         ///< The task itself failed; running it again gives the same answer.
  fix_the_caller,       ///< A programming or configuration error in the calling code.
};

/// Base of every error procpool raises. Catch this to handle all pool failures in one place.
/// Exceptions thrown by a task are re-thrown as themselves when procpool knows their type (see
/// exceptions.hpp); those are not procpool::error.
class error : public std::runtime_error {
 public:
  explicit error(const std::string& what, procpool::advice a)
      : std::runtime_error(what), advice_(a) {}
  /// What the caller should do about this failure.
  [[nodiscard]] auto advice() const noexcept -> procpool::advice { return advice_; }

 private:
  procpool::advice advice_;
};

/// A task threw an exception whose type procpool cannot rebuild in the parent (not a standard type
/// and not registered with PROCPOOL_REGISTER_EXCEPTION). The task ran to that throw; do not retry.
/// The remote text is data from another process: log it, do not parse it.
class remote_error : public error {
 public:
  remote_error(std::string type_name, std::string message, std::string function, pid_t pid);
  /// Demangled type name of the exception the worker threw, e.g. "my::parse_error".
  [[nodiscard]] auto type_name() const noexcept -> const std::string& { return type_name_; }
  /// The worker exception's what(), or empty for a non-std::exception throw.
  [[nodiscard]] auto message() const noexcept -> const std::string& { return message_; }
  /// Name of the function the task ran.
  [[nodiscard]] auto function() const noexcept -> const std::string& { return function_; }
  [[nodiscard]] auto pid() const noexcept -> pid_t { return pid_; }

 private:
  std::string type_name_, message_, function_;
  pid_t pid_;
};

/// The worker process running the task died (signal, exit, or a protocol violation that made the
/// pool kill it). Only that task fails; the pool starts a replacement. The task may have run
/// partly: retry only if it is idempotent.
class worker_crashed : public error {
 public:
  worker_crashed(pid_t pid, int signal, int exit_code, std::string function, std::string detail,
                 std::string output_tail = {}, bool out_of_memory = false);
  [[nodiscard]] auto pid() const noexcept -> pid_t { return pid_; }
  /// The signal that killed the worker (e.g. SIGSEGV), or 0 if it exited.
  [[nodiscard]] auto signal() const noexcept -> int { return signal_; }
  /// The worker's exit status if it exited, or -1 if a signal killed it.
  [[nodiscard]] auto exit_code() const noexcept -> int { return exit_code_; }
  [[nodiscard]] auto function() const noexcept -> const std::string& { return function_; }
  /// Extra explanation, e.g. "sent a malformed frame"; may be empty.
  [[nodiscard]] auto detail() const noexcept -> const std::string& { return detail_; }
  /// The worker's last stderr lines before it died (and stdout, with
  /// pool_options::crash_output_includes_stdout), oldest first, each ending in a newline (at most
  /// pool_options::crash_output_lines lines). Worker output: log it, don't parse
  /// it.
  [[nodiscard]] auto output_tail() const noexcept -> const std::string& { return output_tail_; }
  /// True when the kernel says memory was the cause: the worker's own memory cgroup
  /// (pool_options::memory_max_bytes) recorded an OOM kill, or the worker was SIGKILLed while the
  /// kernel's OOM killer acted (detail() says which). Retrying the same input will likely fail
  /// again: raise the limit or shrink the work.
  [[nodiscard]] auto out_of_memory() const noexcept -> bool { return out_of_memory_; }

 private:
  pid_t pid_;
  int signal_, exit_code_;
  std::string function_, detail_, output_tail_;
  bool out_of_memory_;
};

/// procpool::wait_for's deadline passed (or a per-task deadline). A running task's worker was
/// killed, so the task may have run partly: retry only if idempotent, and probably with a longer
/// deadline.
class timeout_error : public error {
 public:
  explicit timeout_error(const std::string& what) : error(what, advice::retry_if_idempotent) {}
};

/// The task was cancelled through its completion handler's cancellation slot. A queued task never
/// started; a running task's worker was killed (terminal cancellation). The caller asked for this.
class cancelled : public error {
 public:
  explicit cancelled(const std::string& what) : error(what, advice::retry_if_idempotent) {}
};

/// The pool is shutting down or was shut down: submit to a live pool instead. A task queued when an
/// immediate shutdown began also completes with this error; it never started.
class pool_closed : public error {
 public:
  explicit pool_closed(const std::string& what) : error(what, advice::fix_the_caller) {}
};

/// The pool's queue is at pool_options::max_queue: the pool is overloaded. Back off and retry, or
/// shed the work. The task never started.
class queue_full : public error {
 public:
  explicit queue_full(const std::string& what) : error(what, advice::retry) {}
};

/// A value could not be encoded or decoded on its way to or from a worker (for example a result
/// that does not match the function's return type, or a frame too large). Deterministic: do not
/// retry.
class serialization_error : public error {
 public:
  explicit serialization_error(const std::string& what) : error(what, advice::do_not_retry) {}
};

/// No worker could be started: fork failed, the fork server is gone, or a worker failed its
/// start-up check. Usually environmental (process or memory limits); alert, then retry later.
class worker_start_failed : public error {
 public:
  explicit worker_start_failed(const std::string& what) : error(what, advice::retry) {}
};

/// A pool was created in a process that already runs several threads and never called
/// procpool::init(). Forking such a process is unsafe, so procpool refuses: call procpool::init()
/// at the top of main(), before any thread starts.
class init_required : public error {
 public:
  explicit init_required(const std::string& what) : error(what, advice::fix_the_caller) {}
};

}  // namespace procpool
