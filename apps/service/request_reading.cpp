// procpool-service - reading a request (see request_reading.hpp).
#include "request_reading.hpp"

#include <boost/json/parse.hpp>
#include <boost/json/serialize.hpp>
#include <charconv>

#include "http_url.hpp"

namespace http = boost::beast::http;
namespace json = boost::json;

namespace service {

namespace {

auto task_names(const task_registry& tasks) -> std::string {
  std::string names;
  for (const auto& t : tasks.all()) names += (names.empty() ? "" : ", ") + t.name;
  return names;
}

auto only(http::verb method, http::verb allowed, const char* allow, routed r) -> routed {
  if (method == allowed) return r;
  return {.to = endpoint::method_not_allowed, .allow = allow};
}

}  // namespace

auto parse_id(std::string_view text) -> std::optional<std::int64_t> {
  std::int64_t id = 0;
  if (text.empty() || text.size() > 18) return std::nullopt;
  const auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), id);
  if (ec != std::errc{} || end != text.data() + text.size() || id <= 0) return std::nullopt;
  return id;
}

auto route_request(http::verb method, std::string_view target) -> routed {
  const auto question = target.find('?');
  const std::string_view path = target.substr(0, question);
  const std::string_view query =
      question == std::string_view::npos ? std::string_view{} : target.substr(question + 1);
  if (path == "/jobs") {
    if (method == http::verb::post) return {.to = endpoint::post_job};
    if (method == http::verb::get) return {.to = endpoint::list_jobs, .query = query};
    return {.to = endpoint::method_not_allowed, .allow = "GET, POST"};
  }
  if (path.starts_with("/jobs/") && path.ends_with("/retry") && path.size() >= 12) {
    const auto id = parse_id(path.substr(6, path.size() - 6 - 6));
    if (!id) return {.to = endpoint::bad_job_id};
    return only(method, http::verb::post, "POST", {.to = endpoint::retry_job, .id = *id});
  }
  if (path.starts_with("/jobs/")) {
    const auto id = parse_id(path.substr(6));
    if (!id) return {.to = endpoint::bad_job_id};
    if (method == http::verb::get) return {.to = endpoint::get_job, .id = *id};
    if (method == http::verb::delete_) return {.to = endpoint::cancel_job, .id = *id};
    return {.to = endpoint::method_not_allowed, .allow = "GET, DELETE"};
  }
  if (path == "/instances")
    return only(method, http::verb::get, "GET", {.to = endpoint::instances});
  if (path == "/metrics") return only(method, http::verb::get, "GET", {.to = endpoint::metrics});
  if (path == "/healthz") return only(method, http::verb::get, "GET", {.to = endpoint::healthz});
  if (path == "/tasks") return only(method, http::verb::get, "GET", {.to = endpoint::tasks});
  if (path == "/stats") return only(method, http::verb::get, "GET", {.to = endpoint::stats});
  if (path == "/" || path == "/index.html" || path.starts_with("/dashboard/")) {
    const std::string_view file = path.starts_with("/dashboard/") ? path.substr(11) : "index.html";
    return only(method, http::verb::get, "GET", {.to = endpoint::dashboard_file, .file = file});
  }
  return {};
}

auto read_submission(std::string_view body, const task_registry& tasks, submission_limits limits)
    -> job {
  boost::system::error_code ec;
  const json::value parsed = json::parse(body, ec);
  if (ec) throw bad_request("the body is not JSON: " + ec.message());
  if (!parsed.is_object()) throw bad_request("the body must be a JSON object");
  const json::object& o = parsed.as_object();
  for (const auto& field : o) {
    const std::string_view k = field.key();
    if (k != "task" && k != "input" && k != "timeout_ms" && k != "notify_url" && k != "priority") {
      throw bad_request("unknown field '" + std::string(k) +
                        "'; a job has task, input, timeout_ms, notify_url, priority");
    }
  }
  job j;
  const json::value* task = o.if_contains("task");
  if (task == nullptr || !task->is_string()) {
    throw bad_request("'task' is required and must be a string; tasks: " + task_names(tasks));
  }
  const task_definition* def = tasks.find(task->get_string());
  if (def == nullptr) {
    throw bad_request("unknown task '" + std::string(task->get_string()) +
                      "'; tasks: " + task_names(tasks));
  }
  j.task = def->name;
  json::object input;
  if (const json::value* in = o.if_contains("input"); in != nullptr && !in->is_null()) {
    if (!in->is_object()) throw bad_request("'input' must be a JSON object");
    input = in->as_object();
  }
  try {
    def->check(input);
  } catch (const bad_task_input& e) {
    throw bad_request(e.what());
  }
  j.input = json::serialize(input);
  j.timeout_ms = limits.default_timeout_ms;
  if (const json::value* t = o.if_contains("timeout_ms"); t != nullptr && !t->is_null()) {
    const auto* n = t->if_int64();
    if (n == nullptr || *n < 1 || *n > limits.max_timeout_ms) {
      throw bad_request("'timeout_ms' must be an integer from 1 to " +
                        std::to_string(limits.max_timeout_ms));
    }
    j.timeout_ms = *n;
  }
  if (const json::value* p = o.if_contains("priority"); p != nullptr && !p->is_null()) {
    const auto* n = p->if_int64();
    if (n == nullptr || *n < -1000 || *n > 1000) {
      throw bad_request("'priority' must be an integer from -1000 to 1000 (higher runs first)");
    }
    j.priority = *n;
  }
  if (const json::value* url = o.if_contains("notify_url"); url != nullptr && !url->is_null()) {
    if (!url->is_string() || !parse_http_url(url->get_string())) {
      throw bad_request("'notify_url' must be an http:// or https:// URL with a host");
    }
    j.notify_url = std::string(url->get_string());
  }
  return j;
}

auto read_list_query(std::string_view query) -> list_query {
  list_query q;
  while (!query.empty()) {
    const auto amp = query.find('&');
    const std::string_view pair = query.substr(0, amp);
    query = amp == std::string_view::npos ? std::string_view{} : query.substr(amp + 1);
    const auto eq = pair.find('=');
    const std::string_view key = pair.substr(0, eq);
    const std::string_view value =
        eq == std::string_view::npos ? std::string_view{} : pair.substr(eq + 1);
    if (key == "state") {
      q.state = parse_job_state(value);
      if (!q.state) {
        throw bad_request(
            "state must be one of queued, running, succeeded, failed, timed_out, cancelled");
      }
    } else if (key == "task") {
      if (value.size() > 256) throw bad_request("task must be a task's name");
      q.task = std::string(value);
    } else if (key == "limit") {
      const auto n = parse_id(value);
      if (!n || *n > 1000) throw bad_request("limit must be an integer from 1 to 1000");
      q.limit = *n;
    } else if (key == "before") {
      const auto n = parse_id(value);
      if (!n) throw bad_request("before must be a job id");
      q.before = *n;
    } else if (!key.empty()) {
      throw bad_request("unknown parameter '" + std::string(key) +
                        "'; use state, task, limit, before");
    }
  }
  return q;
}

}  // namespace service
