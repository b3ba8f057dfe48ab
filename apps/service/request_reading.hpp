// procpool-service - reading a request: which endpoint it names, and the checks of what it
// carries (a job submission, a list's query), before anything touches the database or the pool.
// Pure functions of the request's text, so that the HTTP fuzzer (fuzz/http_request_fuzzer.cpp)
// runs them exactly as the API does.
#pragma once

#include <boost/beast/http/verb.hpp>
#include <cstdint>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>

#include "job.hpp"
#include "tasks.hpp"

namespace service {

/// What a client must fix: answered 400 with this message.
struct bad_request : std::runtime_error {
  using std::runtime_error::runtime_error;
};

/// A job id: 1 to 18 decimal digits, nothing else.
[[nodiscard]] auto parse_id(std::string_view text) -> std::optional<std::int64_t>;

enum class endpoint : std::uint8_t {
  post_job,
  list_jobs,
  get_job,
  cancel_job,
  retry_job,
  instances,
  metrics,
  healthz,
  tasks,
  stats,
  dashboard_file,
  bad_job_id,          ///< /jobs/{not an id}: 400
  method_not_allowed,  ///< 405 with `allow`
  not_found,           ///< 404
};

struct routed {
  endpoint to = endpoint::not_found;
  std::int64_t id = 0;          ///< for get_job, cancel_job, retry_job
  std::string_view query = {};  ///< for list_jobs: the text after '?'
  std::string_view file = {};   ///< for dashboard_file: the name under /dashboard/
  const char* allow = nullptr;  ///< for method_not_allowed: the methods the path takes
};

/// The endpoint `method` and `target` name (GET /events and /session are the server's own).
[[nodiscard]] auto route_request(boost::beast::http::verb method, std::string_view target)
    -> routed;

struct submission_limits {
  std::int64_t default_timeout_ms = 0;
  std::int64_t max_timeout_ms = 0;
};

/// The job a POST /jobs body describes, checked field by field and by its task's own parse;
/// throws bad_request saying what to fix.
[[nodiscard]] auto read_submission(std::string_view body, const task_registry& tasks,
                                   submission_limits limits) -> job;

struct list_query {
  std::optional<job_state> state;
  std::string task;
  std::int64_t limit = 100;
  std::int64_t before = 0;
};

/// GET /jobs's parameters; throws bad_request for an unknown or malformed one.
[[nodiscard]] auto read_list_query(std::string_view query) -> list_query;

}  // namespace service
