// procpool-service - the pipeline: the database's queue -> claim -> process pool -> fenced end in
// the database -> notification. The queue is the database, so many instances can share it.
#pragma once

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/awaitable.hpp>
#include <boost/asio/cancellation_signal.hpp>
#include <boost/asio/steady_timer.hpp>
#include <chrono>
#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <procpool/process_pool.hpp>
#include <string>
#include <vector>

#include "database.hpp"
#include "metrics.hpp"
#include "notifier.hpp"
#include "progress_board.hpp"

namespace service {

struct runner_options {
  /// The instance's id: the owner of the jobs it claims.
  std::string instance_id;
  /// Jobs run at once; the service sets it to the pool's worker count.
  std::size_t slots = 1;
  /// Jobs claimed beyond the free slots, waiting in the pool's queue for the next free worker: a
  /// worker that ends a task starts the next at once instead of after a claim's round trip to the
  /// database. They count as `running` (claimed by this instance) and are rescued with it. 0: claim
  /// only for free workers.
  std::size_t prefetch = 0;
  /// The tasks this instance runs: it claims only these (instances of different versions can
  /// share a database).
  std::vector<std::string> tasks;
  /// Most jobs queued or running in the database at once; beyond it, POST /jobs answers 429.
  std::int64_t max_active_jobs = 10'000;
  /// Most bytes of input held by queued or running jobs in the database; beyond it, 429 too.
  std::int64_t max_active_input_bytes = std::int64_t{256} << 20;
  /// How often the runner looks for jobs (and cancel requests) by itself while notifications
  /// work, and while they do not (or are off). Notifications are a hint; this is the truth.
  std::chrono::milliseconds poll{5'000};
  std::chrono::milliseconds poll_without_notify{500};
  /// DELETE of a job that another instance runs waits this long for it to end.
  std::chrono::milliseconds remote_cancel_wait{30'000};
};

enum class accept_status { accepted, queue_full, stopping };

/// Runs jobs from the database's queue through the pool: claims as many as it has free slots,
/// runs them, and writes each end fenced by owner and attempt, so an instance that lost a job
/// (declared dead while stalled) cannot overwrite what another instance did with it. Every state
/// change is committed before anyone hears of it (HTTP answer, /events, webhook). Used on the
/// event loop thread only.
class job_runner {
 public:
  job_runner(boost::asio::any_io_executor ex, procpool::process_pool& pool, database& db,
             notifier& notify, service_metrics& metrics, progress_board& progress,
             runner_options options);

  /// Starts claiming.
  void start();

  /// Stores `j` as queued; the returned job carries its id. Throws if the database write fails
  /// (then nothing was accepted).
  auto accept(job j) -> boost::asio::awaitable<std::pair<accept_status, job>>;

  /// Cancels a job: a queued one never runs; a running one's worker is killed, on this instance
  /// or (through the database and a notification) on the one that runs it. Completes with the
  /// job once it is final (or, for a job on an unresponsive instance, after remote_cancel_wait
  /// with the job as it is); nullopt if the job had already ended or does not exist.
  auto cancel(std::int64_t id) -> boost::asio::awaitable<std::optional<job>>;

  /// New jobs may be waiting (a notification, a reconnect): claim now if a slot is free.
  void wake();
  /// Whether notifications reach this instance (polls more often while they do not).
  void set_listening(bool listening);
  /// A cancel request for a job this instance runs: kill its worker.
  void kill_local(std::int64_t id);

  /// The instance cannot prove it is alive (its heartbeat fails): stop claiming and kill the
  /// running jobs, which another instance may take over. They are put back in the queue if the
  /// database still says they are ours.
  void fence(const std::string& why);
  /// The heartbeat works again: claim again.
  void unfence();

  /// Stops claiming and waits for the running jobs until `deadline`; then kills those still
  /// running and puts them back in the queue. True if every running job ended by itself.
  auto drain(std::chrono::steady_clock::time_point deadline) -> boost::asio::awaitable<bool>;

  [[nodiscard]] auto running() const -> std::size_t { return executing_; }
  [[nodiscard]] auto stopping() const -> bool { return stopping_; }
  [[nodiscard]] auto fenced() const -> bool { return fenced_; }

  /// Ends a job that this instance claimed (or rescued as failed): metrics and webhook.
  void finished(const job& j);

 private:
  struct active_job {
    job record;
    bool executing = true;
    bool stop_requested = false;  // drain or fence: back to the queue, not cancelled
    bool killed = false;          // a terminal cancellation was sent (it may have been running)
    bool cancel_asked = false;    // by DELETE: the job ends cancelled, even while draining
    boost::asio::cancellation_signal kill;
    std::shared_ptr<boost::asio::steady_timer> ended;
  };
  struct outcome {
    job_state state;
    std::string result, error;
    bool requeue = false;
    bool never_started = false;  // removed from the pool's queue: the attempt does not count
  };

  auto claimer() -> boost::asio::awaitable<void>;
  auto claim_once(std::size_t free) -> boost::asio::awaitable<void>;
  auto check_cancel_requests() -> boost::asio::awaitable<void>;
  auto reconcile() -> boost::asio::awaitable<void>;
  auto hand_back(job j) -> boost::asio::awaitable<void>;
  auto run(std::int64_t id) -> boost::asio::awaitable<void>;
  auto record_end(std::int64_t id, outcome o) -> boost::asio::awaitable<void>;
  auto execute(active_job& a) -> boost::asio::awaitable<outcome>;
  auto wait_until_final(std::int64_t id) -> boost::asio::awaitable<std::optional<job>>;
  /// A state change that must not be lost: retried (with back-off) while the database fails,
  /// until the drain gives up on it.
  template <class F>
  auto persist(F change) -> boost::asio::awaitable<std::invoke_result_t<F&, store&>>;
  void spawn(boost::asio::awaitable<void> work, const char* what);
  void retire(std::int64_t id);

  boost::asio::any_io_executor ex_;
  procpool::process_pool& pool_;
  database& db_;
  notifier& notify_;
  service_metrics& metrics_;
  progress_board& progress_;
  runner_options options_;
  std::map<std::int64_t, active_job> active_;
  std::size_t executing_ = 0, background_ = 0;
  std::size_t claiming_ = 0;  // slots asked for by claims on their way to the database
  bool stopping_ = false, fenced_ = false, listening_ = true, woken_ = true;
  bool abandon_writes_ = false, claimer_alive_ = false;
  boost::asio::steady_timer wake_, idle_;
};

}  // namespace service
