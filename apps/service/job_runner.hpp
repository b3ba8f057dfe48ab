// procpool-service - the pipeline: accepted job -> database -> process pool -> database ->
// notification, with the queue and cancellation in between.
#pragma once

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/awaitable.hpp>
#include <boost/asio/cancellation_signal.hpp>
#include <boost/asio/steady_timer.hpp>
#include <chrono>
#include <cstdint>
#include <deque>
#include <map>
#include <memory>
#include <optional>
#include <procpool/process_pool.hpp>

#include "database.hpp"
#include "events.hpp"
#include "metrics.hpp"
#include "notifier.hpp"

namespace service {

struct runner_options {
  /// Jobs run at once; the service sets it to the pool's worker count, so a job is `running`
  /// exactly while a worker has it.
  std::size_t lanes = 1;
  /// Most jobs queued or running at once; beyond it, POST /jobs answers 429.
  std::size_t max_active = 10'000;
  /// Most bytes of input held by jobs queued or running (the service keeps them in memory until
  /// the job ends); beyond it, POST /jobs answers 429 too.
  std::size_t max_active_input_bytes = std::size_t{256} << 20;
  /// A job interrupted this many times by a stopping service (a crash, kill -9, or a drain that
  /// ran out of time) fails as "interrupted" at the next start instead of running again.
  std::int64_t max_attempts = 3;
};

enum class accept_status { accepted, queue_full, stopping };

/// Runs jobs through the pool, `lanes` at a time, in the order they were accepted. Every state
/// change is committed to the database before anyone hears of it (HTTP answer, /events, webhook).
/// Used on the event loop thread only.
class job_runner {
 public:
  job_runner(boost::asio::any_io_executor ex, procpool::process_pool& pool, database& db,
             notifier& notify, event_hub& events, service_metrics& metrics, runner_options options);

  /// Start-up: re-queues what the database holds (see store::recover) and resumes pending
  /// webhooks. Call once, before start().
  auto recover() -> boost::asio::awaitable<recovery>;
  /// Starts the lanes.
  void start();

  /// Stores `j` as queued and queues it; the returned job carries its id. Throws if the database
  /// write fails (then nothing was accepted).
  auto accept(job j) -> boost::asio::awaitable<std::pair<accept_status, job>>;

  /// Cancels an active job: a queued one never runs; a running one's worker is killed. Completes
  /// once the job is final, with the job; nullopt if the job was not active.
  auto cancel(std::int64_t id) -> boost::asio::awaitable<std::optional<job>>;

  /// Stops starting jobs and waits for the running ones until `deadline`; then kills those still
  /// running and puts them back in the queue (in the database) for the next start. Queued jobs
  /// stay queued. True if every running job ended by itself.
  auto drain(std::chrono::steady_clock::time_point deadline) -> boost::asio::awaitable<bool>;

  [[nodiscard]] auto active() const -> std::size_t { return active_.size() + accepting_; }
  [[nodiscard]] auto stopping() const -> bool { return stopping_; }

 private:
  struct active_job {
    job record;
    bool running = false;
    bool stop_requested = false;  // killed by drain: back to the queue, not cancelled
    boost::asio::cancellation_signal kill;
    std::shared_ptr<boost::asio::steady_timer> ended;
  };
  struct outcome {
    job_state state;
    std::string result, error;
    bool requeue = false;
  };

  auto lane() -> boost::asio::awaitable<void>;
  void in_background(boost::asio::awaitable<void> write);
  auto record_start(std::int64_t id) -> boost::asio::awaitable<void>;
  auto record_end(std::int64_t id, outcome o) -> boost::asio::awaitable<void>;
  auto execute(active_job& a) -> boost::asio::awaitable<outcome>;
  /// A state change that must not be lost: retried (with back-off) while the database fails.
  template <class F>
  auto persist(F change) -> boost::asio::awaitable<job_change>;
  void finished(const job_change& c);
  void add_active(job j);
  /// Forgets an active job that has ended or gone back to the database's queue.
  void retire(std::int64_t id);

  boost::asio::any_io_executor ex_;
  procpool::process_pool& pool_;
  database& db_;
  notifier& notify_;
  event_hub& events_;
  service_metrics& metrics_;
  runner_options options_;
  std::map<std::int64_t, active_job> active_;
  std::deque<std::int64_t> queue_;
  std::size_t accepting_ = 0, lanes_alive_ = 0, writes_in_flight_ = 0;
  std::size_t active_input_bytes_ = 0;
  bool stopping_ = false;
  boost::asio::steady_timer work_ready_, lanes_done_;
};

}  // namespace service
