#include "job.hpp"

#include <array>
#include <boost/json/parse.hpp>
#include <chrono>
#include <ctime>

namespace json = boost::json;

namespace service {

namespace {
constexpr std::array<std::string_view, 6> state_names = {"queued", "running",   "succeeded",
                                                         "failed", "timed_out", "cancelled"};
constexpr std::array<std::string_view, 4> notification_names = {"none", "pending", "delivered",
                                                                "failed"};

}  // namespace

auto to_json_timestamp(std::int64_t ms) -> json::value {
  if (ms == 0) return nullptr;
  const std::time_t seconds = ms / 1000;
  std::tm utc{};
  ::gmtime_r(&seconds, &utc);
  char text[40];
  const std::size_t n = std::strftime(text, sizeof text, "%Y-%m-%dT%H:%M:%S", &utc);
  std::snprintf(text + n, sizeof text - n, ".%03dZ", static_cast<int>(ms % 1000));
  return json::string(text);
}

namespace {

auto parse_or_null(const std::string& text) -> json::value {
  if (text.empty()) return nullptr;
  boost::system::error_code ec;
  json::value v = json::parse(text, ec);
  // Stored text that does not parse is shown as text rather than hidden.
  return ec ? json::value(json::string(text)) : v;
}
}  // namespace

auto to_string(job_state s) -> std::string_view {
  return state_names.at(static_cast<int>(s));
}

auto parse_job_state(std::string_view s) -> std::optional<job_state> {
  for (std::size_t i = 0; i < state_names.size(); ++i) {
    if (state_names[i] == s) return static_cast<job_state>(i);
  }
  return std::nullopt;
}

auto is_final(job_state s) -> bool {
  return s != job_state::queued && s != job_state::running;
}

auto parse_notification_state(std::string_view s) -> notification_state {
  for (std::size_t i = 0; i < notification_names.size(); ++i) {
    if (notification_names[i] == s) return static_cast<notification_state>(i);
  }
  return notification_state::none;
}

auto to_string(notification_state s) -> std::string_view {
  return notification_names.at(static_cast<int>(s));
}

auto to_json(const job& j) -> json::value {
  json::object o;
  o["id"] = j.id;
  o["task"] = j.task;
  o["state"] = to_string(j.state);
  o["input"] = parse_or_null(j.input);
  o["result"] = parse_or_null(j.result);
  o["error"] = parse_or_null(j.error);
  o["timeout_ms"] = j.timeout_ms;
  o["priority"] = j.priority;
  o["attempts"] = j.attempts;
  o["owner"] = j.owner.empty() ? json::value(nullptr) : json::value(j.owner);
  o["created_at"] = to_json_timestamp(j.created_ms);
  o["started_at"] = to_json_timestamp(j.started_ms);
  o["finished_at"] = to_json_timestamp(j.finished_ms);
  o["retry_of"] = j.retry_of == 0 ? json::value(nullptr) : json::value(j.retry_of);
  if (!j.notify_url.empty()) {
    o["notify_url"] = j.notify_url;
    o["notification"] = to_string(j.notification);
    o["notification_error"] =
        j.notification_error.empty() ? json::value(nullptr) : json::value(j.notification_error);
  }
  return o;
}

auto now_ms() -> std::int64_t {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

}  // namespace service
