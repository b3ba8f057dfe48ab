// procpool-service - jobs, their change log and the instances that run them, in SQLite or
// PostgreSQL. Blocking: used only from the service's database thread.
#pragma once

#include <array>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "job.hpp"
#include "sql.hpp"

namespace service {

/// A state change as committed: the job after it, and the change's sequence number (the order of
/// all changes, used as the Server-Sent Event id).
struct job_change {
  std::int64_t seq = 0;
  job after;
};

/// One procpool-service process sharing the database.
struct instance_info {
  std::string id;  ///< host-pid-random: unique per process start
  std::string host;
  std::int64_t pid = 0;
  std::string address;  ///< where its HTTP API listens
  std::int64_t workers = 0;
  std::string tasks;  ///< the tasks it runs (and so claims), comma-separated
  std::int64_t started_ms = 0;
  std::int64_t heartbeat_age_ms = 0;  ///< read: by the database's clock
  std::int64_t running = 0;           ///< read: jobs it runs now
};

/// What one rescue did.
struct rescue_report {
  std::int64_t dead_instances = 0;  ///< instance rows removed
  std::int64_t requeued = 0;        ///< running jobs of dead instances, back in the queue
  std::int64_t failed = 0;          ///< of those, interrupted max_attempts times: failed
  std::vector<job> webhooks;        ///< final jobs with a pending webhook, now ours to deliver
};

/// Admission limits, checked in the same transaction as the insert.
struct admission_limits {
  std::int64_t max_active_jobs = 0;         ///< queued + running, in the whole database
  std::int64_t max_active_input_bytes = 0;  ///< their input, in the whole database
};

/// The job table, the append-only change log (job_events), the instance table and the service's
/// identity, over one SQL connection (sql.hpp). The schema is migrated when the store opens.
///
/// Every change runs in a savepoint of the current batch (begin_batch .. commit_batch), so it can
/// fail alone. With PostgreSQL a writing batch first takes one transaction-level advisory lock, so
/// writing transactions of all instances commit one after another: change sequence numbers are
/// then in commit order, and a reader that has seen change n has seen every change before it
/// (what makes /events lossless across instances). Throws sql_error.
class store {
 public:
  /// `notify`: PostgreSQL only; NOTIFY other instances of new jobs, changes and cancels.
  store(std::unique_ptr<sql_connection> connection, bool notify);
  store(const store&) = delete;
  auto operator=(const store&) -> store& = delete;

  [[nodiscard]] auto dialect() const -> sql_dialect { return db_->dialect(); }
  /// A random id made when the database was created; part of every webhook's idempotency key.
  [[nodiscard]] auto service_id() const -> const std::string& { return service_id_; }
  /// The connection itself, for the small tables kept apart from jobs (tokens.hpp).
  auto sql() -> sql_connection& { return *db_; }

  /// A batch: one transaction (and one sync to disk) for many changes. `writes`: the batch may
  /// change something (PostgreSQL then takes the write lock). Not `durable`: the commit does not
  /// wait for the disk (SQLite synchronous=NORMAL, which in WAL mode stays consistent but may
  /// lose the last commits to a power loss; PostgreSQL synchronous_commit=off).
  void begin_batch(bool writes, bool durable = true);
  /// Sends the batch's notifications and commits; throws (the batch is rolled back) on failure.
  void commit_batch();
  void rollback_batch();
  /// Around each operation of a batch: a savepoint, released if it succeeded, rolled back if not
  /// (end_operation does not throw; a lost connection fails the batch's commit).
  void begin_operation();
  void end_operation(bool succeeded);
  /// True (once) if the last committed batch appended to the change log.
  auto take_events_appended() -> bool;

  // --- instances ---
  /// Registers (or re-registers) an instance, heartbeat now.
  void join(const instance_info& me);
  /// Renews the heartbeat; false if the row is gone (another instance declared this one dead).
  auto heartbeat(const std::string& id) -> bool;
  /// Removes the instance's row (a clean stop: nothing of it needs rescuing but its webhooks).
  void leave(const std::string& id);
  auto instances() -> std::vector<instance_info>;
  /// Declares dead the instances whose heartbeat is older than `dead_after_ms` (by the database's
  /// clock; negative: every instance but `me`), and takes over what they held: their running jobs
  /// go back to the queue (or fail as interrupted once they have been started `max_attempts`
  /// times) and their pending webhooks become `me`'s. Jobs whose owner has no row are orphans and
  /// are rescued the same way. PostgreSQL: skipped (empty report) while another instance rescues.
  auto rescue(const std::string& me, std::int64_t dead_after_ms, std::int64_t max_attempts)
      -> rescue_report;

  // --- jobs ---
  /// Stores a new queued job (id and created time assigned here); nullopt if `limits` are
  /// reached (nothing stored).
  auto insert(job j, const admission_limits& limits) -> std::optional<job_change>;
  /// Claims up to `n` queued jobs of `tasks` for `me`, highest priority first, then oldest:
  /// running, attempts + 1, owner = me. Concurrent claimers never get the same job (PostgreSQL:
  /// FOR UPDATE SKIP LOCKED); an instance that has been declared dead (no row) gets none.
  auto claim(const std::string& me, const std::vector<std::string>& tasks, std::int64_t n)
      -> std::vector<job_change>;
  /// Ends a job `running` claimed: only if it is still running under the same owner and attempt
  /// (fenced). nullopt: the job was taken away (rescued and perhaps run elsewhere); nothing is
  /// changed and nobody must hear of this result.
  auto finish(const job& running, job_state state, const std::string& result,
              const std::string& error) -> std::optional<job_change>;
  /// Puts a job `running` claimed back in the queue (fenced like finish). `never_started`: no
  /// worker took it (it waited in the pool's queue), so its attempt is not counted.
  auto requeue(const job& running, bool never_started = false) -> std::optional<job_change>;
  /// Cancels a queued job (it never runs); nullopt if it is not queued.
  auto cancel_queued(std::int64_t id, const std::string& me) -> std::optional<job_change>;
  /// Marks a running job for cancellation; returns its owner (nullopt if it is not running).
  auto request_cancel(std::int64_t id) -> std::optional<std::string>;
  /// `me`'s running jobs marked for cancellation.
  auto cancel_requests(const std::string& me) -> std::vector<std::int64_t>;
  /// `me`'s running jobs: (id, attempts). For finding claims the instance lost track of (a
  /// COMMIT whose answer never came back).
  auto running_jobs(const std::string& me) -> std::vector<job>;
  void set_notification(std::int64_t id, notification_state state, const std::string& error = "");

  auto get(std::int64_t id) -> std::optional<job>;
  /// Newest first; `state` and `task` (empty: any) filter, `before_id` pages (0: from the newest).
  auto list(std::optional<job_state> state, const std::string& task, std::int64_t limit,
            std::int64_t before_id) -> std::vector<job>;
  /// The changes after change `seq`, in sequence order, each with the job as it was then; at
  /// most `limit`.
  auto changes_after(std::int64_t seq, std::int64_t limit) -> std::vector<job_change>;
  /// The newest change's sequence number (0 if none).
  auto last_seq() -> std::int64_t;
  /// Deletes up to `batch` jobs that ended before `cutoff_ms` and whose webhook is not pending,
  /// with their change log; returns how many.
  auto delete_ended_before(std::int64_t cutoff_ms, std::int64_t batch) -> std::int64_t;
  /// Jobs per state, indexed by job_state.
  auto count_by_state() -> std::array<std::int64_t, 6>;

 private:
  auto change_one(std::string_view sql, std::initializer_list<sql_param> params)
      -> std::optional<job_change>;
  auto append_event(const job& after, std::int64_t at_ms) -> std::int64_t;
  void notify(std::string channel, std::string payload);
  void restore_synchronous();
  [[nodiscard]] auto pg() const -> bool { return dialect() == sql_dialect::postgres; }

  std::unique_ptr<sql_connection> db_;
  bool notify_ = false;
  std::string service_id_;
  std::vector<std::pair<std::string, std::string>> notifications_;
  bool events_in_batch_ = false, events_committed_ = false;
  std::string sqlite_synchronous_;  ///< the configured PRAGMA synchronous, restored after a batch
  bool relaxed_ = false;            ///< this batch runs with synchronous=NORMAL
};

}  // namespace service
