#include "worker_supervisor.hpp"

#include <algorithm>
#include <stdexcept>
#include <string>
#include <system_error>

#include "sandbox_layers.hpp"

namespace procpool::detail {

worker_supervisor::worker_supervisor(const pool_options& options, std::size_t target)
    : target_(target),
      spares_(options.spare_workers),
      tail_{options.crash_output_lines, options.crash_output_includes_stdout},
      slots_(target, false) {
  setup_.memory_limit_bytes = options.memory_limit_bytes;
  setup_.memory_max_bytes = options.memory_max_bytes;
  setup_.heap_retain_bytes = options.worker_heap_retain_bytes;
  setup_.cpu_seconds = static_cast<std::uint64_t>(options.cpu_time_limit.count());
  setup_.initializer = reinterpret_cast<std::uintptr_t>(options.initializer);
  if (const auto& s = options.sandbox) {
    setup_.sandbox_layers =
        sandbox_enabled | (s->no_new_privileges ? sandbox_no_new_privileges : 0) |
        (s->system_call_filter ? sandbox_system_call_filter : 0) |
        (s->on_violation == sandbox::violation::fail_call ? sandbox_fail_forbidden_calls : 0) |
        (s->no_network ? sandbox_no_network : 0) |
        (s->drop_privileges ? sandbox_drop_privileges : 0) |
        (s->clear_environment ? sandbox_clear_environment : 0) |
        (s->allow_weaker_filesystem_view ? sandbox_allow_weaker_filesystem : 0);
    setup_.sandbox_uid = s->uid;
    setup_.sandbox_gid = s->gid;
    for (const auto& path : s->readable_paths) {
      if (path.empty() || path.find('\0') != std::string::npos) {
        throw std::invalid_argument(
            "procpool: pool_options::sandbox: a readable path is empty or holds a NUL byte");
      }
      readable_paths_ += path;
      readable_paths_ += '\0';
    }
    if (readable_paths_.size() > max_readable_paths_bytes) {
      throw std::invalid_argument("procpool: pool_options::sandbox: the readable paths take " +
                                  std::to_string(readable_paths_.size()) + " bytes, more than " +
                                  std::to_string(max_readable_paths_bytes));
    }
    // Refused here, in the caller's thread, rather than by every worker's start.
    if (!s->readable_paths.empty() && landlock_abi() == 0 && !s->allow_weaker_filesystem_view) {
      throw std::system_error(
          std::make_error_code(std::errc::function_not_supported),
          "procpool: pool_options::sandbox::readable_paths needs Landlock, which this kernel "
          "does not offer (Linux 5.13 or later, with landlock in its lsm= list); set "
          "sandbox::allow_weaker_filesystem_view to run with the system call filter's "
          "read-only open alone (every file the worker's uid may read is then readable)");
    }
    setup_.readable_paths_bytes = static_cast<std::uint32_t>(readable_paths_.size());
  }
}

auto worker_supervisor::take_slot() -> std::size_t {
  const auto slot =
      static_cast<std::size_t>(std::find(slots_.begin(), slots_.end(), false) - slots_.begin());
  if (slot == slots_.size()) slots_.push_back(false);
  slots_[slot] = true;
  return slot;
}

void worker_supervisor::free_slot(std::size_t slot) {
  if (slot < slots_.size()) slots_[slot] = false;
}

void worker_supervisor::free_all_slots() {
  slots_.assign(slots_.size(), false);
}

auto worker_supervisor::replenish(std::size_t live) -> spawn_decision {
  if (gave_up_ || back_off_pending_) return {};
  spawn_decision d;
  if (live < target_) {
    d.spawn_now = target_ - live;
    live = target_;
  }
  if (live < target_ + spares_ && !spare_pending_) {
    spare_pending_ = true;
    d.arm_spare_timer = true;
  }
  return d;
}

auto worker_supervisor::spares_missing(std::size_t live) const -> std::size_t {
  if (gave_up_ || live >= target_ + spares_) return 0;
  return target_ + spares_ - live;
}

auto worker_supervisor::start_failed() -> failure_decision {
  if (++consecutive_failures_ >= max_consecutive_start_failures) {
    gave_up_ = true;
    return {failure_decision::action::give_up, {}};
  }
  if (back_off_pending_) return {failure_decision::action::backing_off, {}};
  // 10 ms, 20 ms, 40 ms...: a worker that dies at once is not restarted in a tight loop.
  back_off_pending_ = true;
  return {failure_decision::action::back_off,
          std::chrono::milliseconds(10 << (consecutive_failures_ - 1))};
}

auto worker_supervisor::resume_on_new_task() -> bool {
  if (!gave_up_) return false;
  gave_up_ = false;
  consecutive_failures_ = 0;
  return true;
}

}  // namespace procpool::detail
