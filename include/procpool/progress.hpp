// procpool - progress from inside a task, and what the caller receives.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

namespace procpool {

/// Inside a task: it has done `done` of `total` units (`total` 0: unknown), with an optional short
/// message (at most 1 KiB is sent). Cheap enough for a tight loop: reports are coalesced in the
/// worker (the latest wins, at most one frame every 5 ms, and the latest is sent just before the
/// task's outcome) and never block the task on the pool: a report the channel cannot take at once
/// waits for the next one. Callable from any thread of the worker; outside a task (in the parent,
/// in an initializer) it does nothing. A thread a task leaves running after it returns reports
/// as whatever task the worker runs next: join your threads before returning.
void report_progress(std::uint64_t done, std::uint64_t total, std::string_view message = {});

/// A progress report as the caller receives it (task_options::on_progress). The values are the
/// task's own: `done` may exceed `total`, and `message` is bytes, not necessarily UTF-8.
struct progress {
  std::uint64_t done = 0;
  std::uint64_t total = 0;  ///< 0: unknown
  std::string message;
};

}  // namespace procpool
