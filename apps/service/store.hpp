// procpool-service - jobs in SQLite. Blocking: used only from the service's database thread.
#pragma once

#include <sqlite3.h>

#include <array>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "job.hpp"

namespace service {

/// A state change as committed: the job after it, and the change's sequence number (the order of
/// all changes, used as the Server-Sent Event id).
struct job_change {
  std::int64_t seq = 0;
  job after;
};

/// What start-up found in the database.
struct recovery {
  std::vector<job> queued;       ///< to run, in id order (including ones interrupted while running)
  std::vector<job> to_notify;    ///< final jobs whose webhook was not delivered yet
  std::int64_t interrupted = 0;  ///< jobs that were running when the service stopped: re-queued
  std::int64_t abandoned = 0;    ///< interrupted too often (max_attempts): marked failed
};

/// The job table, the append-only change log (job_events), and the service's identity. Every
/// method commits before it returns (unless inside a batch, see begin_batch); with `full_sync`, the
/// commit has reached the disk (SQLite synchronous=FULL), otherwise it survives a crash of the
/// process but perhaps not of the machine. Throws std::runtime_error naming SQLite's error.
class store {
 public:
  store(const std::string& path, bool full_sync);
  ~store();
  store(const store&) = delete;
  auto operator=(const store&) -> store& = delete;

  /// A random id made when the database was created; part of every webhook's idempotency key.
  [[nodiscard]] auto service_id() const -> const std::string& { return service_id_; }

  /// Stores a new queued job (its id and created time are assigned here).
  auto insert(job j) -> job_change;
  /// queued -> running; counts an attempt.
  auto start(std::int64_t id) -> job_change;
  /// running or queued -> a final state.
  auto finish(std::int64_t id, job_state state, const std::string& result, const std::string& error)
      -> job_change;
  /// running -> queued: the service stopped before the job ended; it runs again at next start.
  auto requeue(std::int64_t id) -> job_change;
  void set_notification(std::int64_t id, notification_state state);

  auto get(std::int64_t id) -> std::optional<job>;
  /// Newest first; `state` filters, `before_id` pages (0: from the newest).
  auto list(std::optional<job_state> state, std::int64_t limit, std::int64_t before_id)
      -> std::vector<job>;
  /// For each job changed after change `seq`, its latest change (the job as it is now), in
  /// sequence order; at most `limit`.
  auto latest_changes_after(std::int64_t seq, std::int64_t limit) -> std::vector<job_change>;
  /// Deletes jobs that ended before `cutoff_ms` and whose webhook is not pending, with their
  /// change log; returns how many.
  auto delete_ended_before(std::int64_t cutoff_ms) -> std::int64_t;
  /// Jobs per state, indexed by job_state.
  auto count_by_state() -> std::array<std::int64_t, 6>;

  /// Group commit: the changes made between these two calls are committed together, in one
  /// transaction and one sync to disk. commit_batch throws (and rolls them all back) if the commit
  /// fails; a change that failed on its own inside the batch was already undone alone.
  void begin_batch();
  void commit_batch();

  /// Start-up: jobs left running by a stopped service go back to the queue (or, after
  /// `max_attempts` starts, fail as "interrupted"); returns what must run and be notified.
  auto recover(std::int64_t max_attempts) -> recovery;

 private:
  class statement;
  void exec(const char* sql);
  auto change(std::int64_t id, job_state state) -> job_change;
  auto read_job(std::int64_t id) -> job;
  /// Appends a change to job_events; returns its sequence number.
  auto append_event(std::int64_t id, job_state state, std::int64_t at) -> std::int64_t;
  sqlite3* db_ = nullptr;
  std::string service_id_;
};

}  // namespace service
