// procpool - completions gathered under the pool's lock and run after it is released, as Asio's
// reactor hands completed operations to its scheduler after unlocking. Each completion only hands
// its outcome on (the public layer posts it to the caller's executor), but running none under the
// lock means no caller-supplied code ever runs there, whatever a completion does.
#pragma once

#include <boost/container/small_vector.hpp>
#include <cstdint>
#include <exception>
#include <utility>
#include <vector>

#include "procpool/detail/pool_core.hpp"
#include "procpool/detail/progress_mailbox.hpp"

namespace procpool::detail {

class completion_batch {
 public:
  void add(task_completion done, std::exception_ptr ep, byte_buffer result = {}) {
    if (done) tasks_.push_back({std::move(done), std::move(ep), std::move(result)});
  }
  void add(room_completion done, std::exception_ptr ep) {
    if (done) rooms_.emplace_back(std::move(done), std::move(ep));
  }
  void add(const std::shared_ptr<progress_listener>& to, progress p, std::uint64_t sequence) {
    progress_.push_back({to, std::move(p), sequence});
  }
  void add(shutdown_completion done) {
    if (done) shutdowns_.push_back(std::move(done));
  }

  /// Runs everything gathered: progress reports first (a task's last report is handed on before
  /// its outcome), then tasks' outcomes, then producers waiting for room, then
  /// shutdowns (a shutdown completes after the outcomes of the tasks it waited for). Call with no
  /// lock held.
  void run() && {
    for (auto& [to, p, sequence] : progress_) {
      try {
        to->deliver(std::move(p), sequence);
      } catch (...) {
        // Out of memory posting it: a progress report may be lost, the outcomes below may not.
      }
    }
    for (auto& t : tasks_) std::move(t.done)(std::move(t.ep), std::move(t.result));
    for (auto& [done, ep] : rooms_) std::move(done)(std::move(ep));
    for (auto& done : shutdowns_) std::move(done)();
  }

 private:
  struct task_outcome {
    task_completion done;
    std::exception_ptr ep;
    byte_buffer result;
  };
  // Most critical sections complete at most one task: no allocation for the batch itself.
  boost::container::small_vector<task_outcome, 2> tasks_;
  std::vector<std::pair<room_completion, std::exception_ptr>> rooms_;
  std::vector<shutdown_completion> shutdowns_;
  struct progress_report {
    std::shared_ptr<progress_listener> to;
    progress report;
    std::uint64_t sequence;
  };
  std::vector<progress_report> progress_;
};

}  // namespace procpool::detail
