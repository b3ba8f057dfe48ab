// procpool-service - a job: one request to run a task, and everything that happened to it.
#pragma once

#include <boost/json/value.hpp>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace service {

enum class job_state { queued, running, succeeded, failed, timed_out, cancelled };

[[nodiscard]] auto to_string(job_state s) -> std::string_view;
[[nodiscard]] auto parse_job_state(std::string_view s) -> std::optional<job_state>;

/// Where a job's webhook stands.
enum class notification_state { none, pending, delivered, failed };
[[nodiscard]] auto to_string(notification_state s) -> std::string_view;

/// A job as stored. Times are milliseconds since the Unix epoch, 0 when not reached yet.
struct job {
  std::int64_t id = 0;
  std::string task;
  std::string input = "{}";  ///< JSON text, checked by the task's parse before acceptance
  std::int64_t timeout_ms = 0;
  std::string notify_url;
  job_state state = job_state::queued;
  std::string result;  ///< JSON text, for succeeded jobs
  std::string error;   ///< JSON text {type, message, ...}, for failed, timed_out, cancelled jobs
  std::int64_t attempts = 0;  ///< times a worker started it (more than 1 after a service restart)
  std::int64_t created_ms = 0, started_ms = 0, finished_ms = 0;
  notification_state notification = notification_state::none;
  /// Why the last delivery attempt failed ("HTTP 503", "refused: ..."); "" once delivered.
  std::string notification_error;
  std::int64_t priority = 0;  ///< higher runs first; equal priorities run in id order
  std::string owner;  ///< the instance that runs it (or ran it last, or ended it); "" if none
  std::int64_t retry_of = 0;  ///< the job this one retries (POST /jobs/{id}/retry); 0 if none
};

[[nodiscard]] auto is_final(job_state s) -> bool;
[[nodiscard]] auto parse_notification_state(std::string_view s) -> notification_state;

/// The job as the API shows it.
[[nodiscard]] auto to_json(const job& j) -> boost::json::value;

[[nodiscard]] auto now_ms() -> std::int64_t;

/// RFC 3339 in UTC with milliseconds (`2026-12-01T23:07:21.123Z`), or null for 0 ("not yet").
[[nodiscard]] auto to_json_timestamp(std::int64_t ms) -> boost::json::value;

}  // namespace service
