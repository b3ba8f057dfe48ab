// procpool - how many workers the pool starts, and when: the slots that number them, replacements
// for workers that leave, spares started a moment later, and the back-off after start failures.
//
// Not thread-safe: used under pool_core's lock. It makes no calls into the pool and owns no timer
// or process: each function returns a decision (how many workers to start now, whether to arm a
// timer, whether to give up) and the pool acts on it. The pool also checks what only it knows: that
// the fork server is there, and that a closing pool still has tasks for new workers.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "internal.hpp"
#include "output_forwarder.hpp"
#include "procpool/pool_options.hpp"

namespace procpool::detail {

/// Start failures in a row after which the pool stops trying (and fails its queue) until a new task
/// comes: a worker that cannot start would otherwise be retried forever.
inline constexpr unsigned max_consecutive_start_failures = 5;

/// How long after replacing a lost worker the missing spares start: a spare has just taken the
/// lost worker's place, and starting its replacement a moment later keeps the fork and start-up
/// off the CPUs while that spare answers the next task.
inline constexpr std::chrono::milliseconds spare_delay{5};

class worker_supervisor {
 public:
  /// `target`: workers that may run tasks at once; pool_options::spare_workers more wait idle.
  worker_supervisor(const pool_options& options, std::size_t target);

  /// What each new worker applies to itself, and what its crash report keeps.
  [[nodiscard]] auto setup() const -> const worker_setup& { return setup_; }
  /// The sandbox's readable paths, each NUL-terminated (setup().readable_paths_bytes of them).
  [[nodiscard]] auto readable_paths() const -> std::string_view { return readable_paths_; }
  [[nodiscard]] auto tail() const -> tail_policy { return tail_; }
  /// How many workers a new pool starts.
  [[nodiscard]] auto full_strength() const -> std::size_t { return target_ + spares_; }

  /// The lowest free slot (the number a worker's output lines carry), or a new one when all are
  /// taken: a recycled worker keeps its own until it exits.
  auto take_slot() -> std::size_t;
  void free_slot(std::size_t slot);
  /// Every worker is gone at once (the fork server was lost).
  void free_all_slots();

  struct spawn_decision {
    std::size_t spawn_now = 0;
    bool arm_spare_timer = false;  // for spare_delay; then spare_timer_done() and spares_missing()
  };
  /// A worker may be missing (one left, or a back-off ended). `live`: workers that will serve.
  auto replenish(std::size_t live) -> spawn_decision;
  /// The spare timer fired or was cancelled.
  void spare_timer_done() { spare_pending_ = false; }
  /// The spares to start now (a back-off does not hold them back; giving up does).
  [[nodiscard]] auto spares_missing(std::size_t live) const -> std::size_t;

  struct failure_decision {
    enum class action : std::uint8_t {
      back_off,     // arm the back-off timer for `delay`, then back_off_done() and replenish()
      backing_off,  // a back-off timer is armed already: nothing to do
      give_up,      // fail the queue; no worker starts until resume_on_new_task()
    };
    action what = action::backing_off;
    std::chrono::milliseconds delay{0};
  };
  /// A worker failed to start (no descriptors, the fork failed, or it died before its hello).
  auto start_failed() -> failure_decision;
  void back_off_done() { back_off_pending_ = false; }
  /// A worker became ready: the failures before it are no longer in a row.
  void worker_ready() { consecutive_failures_ = 0; }
  /// A task came in: true when the pool had given up and should replenish now (trying afresh).
  auto resume_on_new_task() -> bool;

 private:
  std::size_t target_;
  std::size_t spares_;
  worker_setup setup_;
  std::string readable_paths_;
  tail_policy tail_;
  std::vector<bool> slots_;  // which slots are taken
  unsigned consecutive_failures_ = 0;
  bool gave_up_ = false;
  bool back_off_pending_ = false;
  bool spare_pending_ = false;
};

}  // namespace procpool::detail
