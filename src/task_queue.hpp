// procpool - the tasks a pool holds, and where each one is: queued (waiting for a worker), parked
// (submitted while the queue was full, waiting for room: pool_options::max_queue) or running. Also
// the producers waiting for room (async_wait_for_room).
//
// Not thread-safe: guarded by pool_core's lock. It makes no calls into the pool and runs no
// completion: what must be completed is returned to the caller, who completes it after unlocking.
#pragma once

#include <boost/asio/steady_timer.hpp>
#include <cstdint>
#include <exception>
#include <list>
#include <map>
#include <memory>
#include <string>
#include <unordered_map>
#include <vector>

#include "procpool/detail/pool_core.hpp"

namespace procpool::detail {

struct task {
  enum class place : std::uint8_t { queued, parked, running };

  std::uint64_t id = 0;
  task_request request;
  task_completion done;
  place where = place::queued;
  std::list<std::shared_ptr<task>>::iterator position;  // in its list while queued or parked
  unsigned attempts = 0;                                // times it was written to a worker
  std::unique_ptr<boost::asio::steady_timer> deadline;  // the task timeout, while it runs
  std::string name;  // the function's readable name, computed on first use (errors only)
  std::uint64_t progress_reports = 0;  // received so far: orders their delivery (progress_listener)
  // How it ends, once the pool has decided (cancelled, timed out, pool closed) and waits for its
  // worker's death to deliver it. While set, nothing the worker still sends changes the outcome.
  std::exception_ptr ending;
  bool skip_asked = false;       // sent ahead, then cancelled: its worker was asked not to start it
  bool kill_if_started = false;  // ... with terminal cancellation: if it starts anyway, kill it
};

class task_queue {
 public:
  /// `max_queue`: pool_options::max_queue (0: no limit).
  explicit task_queue(std::size_t max_queue) : max_queue_(max_queue) {}

  /// Whether a new task may be queued now (else it parks, or is refused).
  [[nodiscard]] auto has_room() const -> bool {
    return max_queue_ == 0 || (queued_.size() < max_queue_ && parked_.empty());
  }

  /// Takes in a new task: queued when there is room, parked otherwise.
  void admit(std::shared_ptr<task> t);

  /// The next task to run (marked running), or null.
  auto pop() -> std::shared_ptr<task>;
  /// The task pop() would return; the queue must not be empty.
  [[nodiscard]] auto front() const -> const std::shared_ptr<task>& { return queued_.front(); }
  /// Puts a running task back at the head of the queue (to run again after its worker crashed).
  void push_front(const std::shared_ptr<task>& t);

  /// The task `id`, wherever it is; null when it has ended (or never existed).
  [[nodiscard]] auto find(std::uint64_t id) const -> std::shared_ptr<task>;
  /// Removes a task that has not started (queued or parked) and returns it; null otherwise.
  auto take_unstarted(std::uint64_t id) -> std::shared_ptr<task>;
  /// Forgets a task that has ended.
  void forget(std::uint64_t id) { tasks_.erase(id); }
  /// Removes and returns every task not started, in submission order (queued, then parked).
  auto take_all_unstarted() -> std::vector<std::shared_ptr<task>>;
  /// Removes and returns every task held, running ones included.
  auto take_all() -> std::vector<std::shared_ptr<task>>;

  /// Moves parked tasks into the queue while it has room, in submission order. Returns the room
  /// waiters to release (all of them, once there is room).
  auto admit_parked() -> std::vector<room_completion>;

  void add_room_waiter(std::uint64_t id, room_completion done) {
    room_waiters_.emplace(id, std::move(done));
  }
  /// The waiter `id`'s completion, removed; empty if it was already released.
  auto take_room_waiter(std::uint64_t id) -> room_completion;
  /// Every room waiter, removed, in call order.
  auto take_room_waiters() -> std::vector<room_completion>;

  [[nodiscard]] auto queued() const -> std::size_t { return queued_.size(); }
  [[nodiscard]] auto parked() const -> std::size_t { return parked_.size(); }
  [[nodiscard]] auto empty() const -> bool { return tasks_.empty(); }

 private:
  std::size_t max_queue_;
  std::unordered_map<std::uint64_t, std::shared_ptr<task>> tasks_;  // every task held, by id
  // Lists, not deques: a cancelled task leaves from the middle in constant time (task::position).
  std::list<std::shared_ptr<task>> queued_;
  std::list<std::shared_ptr<task>> parked_;
  std::map<std::uint64_t, room_completion> room_waiters_;  // by id, which is call order
};

}  // namespace procpool::detail
