// procpool-service - the HTTP API: routes a request to the job runner and the database.
#pragma once

#include <boost/asio/awaitable.hpp>
#include <boost/beast/http/message.hpp>
#include <boost/beast/http/string_body.hpp>
#include <procpool/process_pool.hpp>

#include "change_feed.hpp"
#include "config.hpp"
#include "dashboard.hpp"
#include "database.hpp"
#include "events.hpp"
#include "job_runner.hpp"
#include "metrics.hpp"
#include "progress_board.hpp"
#include "request_reading.hpp"
#include "stats_feed.hpp"
#include "tasks.hpp"

namespace service {

using request = boost::beast::http::request<boost::beast::http::string_body>;
using response = boost::beast::http::response<boost::beast::http::string_body>;

/// A JSON response `{"error": message}`.
auto error_response(unsigned status, const std::string& message) -> response;

/// Everything but GET /events (a stream, served by the HTTP server itself) and /session (the
/// dashboard's sign-in, authenticator::session); the front door (auth.hpp) has already checked
/// the request's token, scope and rate:
///
///     POST   /jobs              {"task", "input", "timeout_ms", "notify_url", "priority"}
///                               -> 202 {"id", ...}
///     GET    /jobs/{id}         the job
///     GET    /jobs?state=&task=&limit=&before=   newest first
///     POST   /jobs/{id}/retry   a new job with the task and input of a failed, timed-out or
///                               cancelled one, linked by retry_of: 202, 409 for another state
///     GET    /stats             jobs by state and the pool's counters
///     GET    /                  the dashboard (and its files under /dashboard/)
///     DELETE /jobs/{id}         cancel: 200 with the final job, 409 if it had already ended,
///                               202 if the instance running it has not killed it yet
///     GET    /instances         the instances sharing the database
///     GET    /tasks             the registered tasks
///     GET    /metrics           Prometheus text
///     GET    /healthz           200 while serving, 503 while draining or fenced
///
/// Errors are JSON `{"error": "..."}` with a 4xx saying what to fix, 429 + Retry-After when the
/// queue is full, 503 + Retry-After while stopping or when the database fails.
class api {
 public:
  api(const config& cfg, std::string instance_id, const task_registry& tasks, job_runner& runner,
      database& db, procpool::process_pool& pool, event_hub& events, change_feed& feed,
      service_metrics& metrics, const progress_board& progress, stats_feed& stats,
      const dashboard_files& dashboard)
      : cfg_(cfg),
        instance_id_(std::move(instance_id)),
        tasks_(tasks),
        runner_(runner),
        db_(db),
        pool_(pool),
        events_(events),
        feed_(feed),
        metrics_(metrics),
        progress_(progress),
        stats_(stats),
        dashboard_(dashboard) {}

  auto handle(const request& req) -> boost::asio::awaitable<response>;

  /// For an /events client that reconnects with `Last-Event-ID: seq`: the changes after `seq` up
  /// to `up_to` (where its live stream starts), oldest first, at most `limit`.
  auto changes_since(std::int64_t seq, std::int64_t up_to, std::int64_t limit)
      -> boost::asio::awaitable<std::vector<job_change>>;
  /// The `event: stats` an /events client gets when it connects.
  auto stats_event() -> boost::asio::awaitable<std::string> { return stats_.event(); }
  /// Where a live /events stream that subscribes now starts.
  [[nodiscard]] auto live_from() const -> std::int64_t { return feed_.published_up_to(); }

 private:
  auto route(const request& req) -> boost::asio::awaitable<response>;
  auto get_job(std::int64_t id) -> boost::asio::awaitable<response>;
  auto list_jobs(list_query query) -> boost::asio::awaitable<response>;
  auto cancel_job(std::int64_t id) -> boost::asio::awaitable<response>;
  auto accepted(job j) -> boost::asio::awaitable<response>;
  auto retry_job(std::int64_t id) -> boost::asio::awaitable<response>;
  auto stats() -> boost::asio::awaitable<response>;
  auto static_file(std::string_view name) const -> response;
  /// The job as the API shows it, with its progress when it runs here and has reported.
  auto job_json(const job& j) const -> boost::json::value;
  auto metrics() -> boost::asio::awaitable<response>;
  auto instances() -> boost::asio::awaitable<response>;
  auto tasks() const -> response;
  auto health() const -> response;

  const config& cfg_;
  std::string instance_id_;
  const task_registry& tasks_;
  job_runner& runner_;
  database& db_;
  procpool::process_pool& pool_;
  event_hub& events_;
  change_feed& feed_;
  service_metrics& metrics_;
  const progress_board& progress_;
  stats_feed& stats_;
  const dashboard_files& dashboard_;
};

}  // namespace service
