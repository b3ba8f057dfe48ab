#include "api.hpp"

#include <boost/json/parse.hpp>
#include <boost/json/serialize.hpp>
#include <charconv>

#include "http_client.hpp"
#include "log.hpp"

namespace asio = boost::asio;
namespace http = boost::beast::http;
namespace json = boost::json;

namespace service {

namespace {

auto json_response(unsigned status, const json::value& body) -> response {
  response res{static_cast<http::status>(status), 11};
  res.set(http::field::content_type, "application/json");
  res.body() = json::serialize(body);
  res.body() += '\n';
  res.prepare_payload();
  return res;
}

// A job id: 1 to 18 decimal digits, nothing else.
auto parse_id(std::string_view text) -> std::optional<std::int64_t> {
  std::int64_t id = 0;
  if (text.empty() || text.size() > 18) return std::nullopt;
  const auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), id);
  if (ec != std::errc{} || end != text.data() + text.size() || id <= 0) return std::nullopt;
  return id;
}

struct bad_request : std::runtime_error {
  using std::runtime_error::runtime_error;
};

auto task_names(const task_registry& tasks) -> std::string {
  std::string names;
  for (const auto& t : tasks.all()) names += (names.empty() ? "" : ", ") + t.name;
  return names;
}

}  // namespace

auto error_response(unsigned status, const std::string& message) -> response {
  return json_response(status, json::object{{"error", message}});
}

auto api::handle(const request& req) -> asio::awaitable<response> {
  ++metrics_.http_requests;
  response res;
  try {
    res = co_await route(req);
  } catch (const bad_request& e) {
    res = error_response(400, e.what());
  } catch (const std::exception& e) {
    // The database (or something under it) failed: nothing was changed that the client was told.
    log("request %s %s failed: %s", std::string(req.method_string()).c_str(),
        std::string(req.target()).c_str(), e.what());
    res = error_response(503, std::string("the service cannot serve this now: ") + e.what());
    res.set(http::field::retry_after, "1");
  }
  if (res.result_int() >= 400 && res.result_int() < 500) ++metrics_.bad_requests;
  co_return res;
}

auto api::changes_since(std::int64_t seq, std::int64_t up_to, std::int64_t limit)
    -> asio::awaitable<std::vector<job_change>> {
  auto changes = co_await db_.read([seq, limit](store& s) { return s.changes_after(seq, limit); });
  std::erase_if(changes, [up_to](const job_change& c) { return c.seq > up_to; });
  co_return changes;
}

auto api::route(const request& req) -> asio::awaitable<response> {
  const std::string_view target = req.target();
  const auto question = target.find('?');
  const std::string_view path = target.substr(0, question);
  const std::string_view query =
      question == std::string_view::npos ? std::string_view{} : target.substr(question + 1);
  const auto method = req.method();
  auto not_allowed = [](const char* allow) {
    response r = error_response(405, std::string("method not allowed; use ") + allow);
    r.set(http::field::allow, allow);
    return r;
  };

  if (path == "/jobs") {
    if (method == http::verb::post) co_return co_await post_job(req);
    if (method == http::verb::get) co_return co_await list_jobs(query);
    co_return not_allowed("GET, POST");
  }
  if (path.starts_with("/jobs/") && path.ends_with("/retry")) {
    const auto id = parse_id(path.substr(6, path.size() - 6 - 6));
    if (!id) co_return error_response(400, "a job id is a positive integer");
    if (method != http::verb::post) co_return not_allowed("POST");
    co_return co_await retry_job(*id);
  }
  if (path.starts_with("/jobs/")) {
    const auto id = parse_id(path.substr(6));
    if (!id) co_return error_response(400, "a job id is a positive integer");
    if (method == http::verb::get) co_return co_await get_job(*id);
    if (method == http::verb::delete_) co_return co_await cancel_job(*id);
    co_return not_allowed("GET, DELETE");
  }
  if (path == "/instances") {
    if (method != http::verb::get) co_return not_allowed("GET");
    co_return co_await instances();
  }
  if (path == "/metrics") {
    if (method != http::verb::get) co_return not_allowed("GET");
    co_return co_await metrics();
  }
  if (path == "/healthz") {
    if (method != http::verb::get) co_return not_allowed("GET");
    co_return health();
  }
  if (path == "/tasks") {
    if (method != http::verb::get) co_return not_allowed("GET");
    co_return tasks();
  }
  if (path == "/stats") {
    if (method != http::verb::get) co_return not_allowed("GET");
    co_return co_await stats();
  }
  if (path == "/" || path == "/index.html" || path.starts_with("/dashboard/")) {
    if (method != http::verb::get) co_return not_allowed("GET");
    co_return static_file(path.starts_with("/dashboard/") ? path.substr(11) : "index.html");
  }
  co_return error_response(404,
                           "no such endpoint; see / (the dashboard), /tasks, /jobs, /events, "
                           "/stats, /instances, /metrics, /healthz");
}

auto api::post_job(const request& req) -> asio::awaitable<response> {
  boost::system::error_code ec;
  const json::value body = json::parse(req.body(), ec);
  if (ec) throw bad_request("the body is not JSON: " + ec.message());
  if (!body.is_object()) throw bad_request("the body must be a JSON object");
  const json::object& o = body.as_object();
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
    throw bad_request("'task' is required and must be a string; tasks: " + task_names(tasks_));
  }
  const task_definition* def = tasks_.find(task->get_string());
  if (def == nullptr) {
    throw bad_request("unknown task '" + std::string(task->get_string()) +
                      "'; tasks: " + task_names(tasks_));
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
  j.timeout_ms = cfg_.default_timeout_ms;
  if (const json::value* t = o.if_contains("timeout_ms"); t != nullptr && !t->is_null()) {
    const auto* n = t->if_int64();
    if (n == nullptr || *n < 1 || *n > cfg_.max_timeout_ms) {
      throw bad_request("'timeout_ms' must be an integer from 1 to " +
                        std::to_string(cfg_.max_timeout_ms));
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

  co_return co_await accepted(std::move(j));
}

auto api::accepted(job j) -> asio::awaitable<response> {
  const std::int64_t retry_of = j.retry_of;
  auto [status, stored] = co_await runner_.accept(std::move(j));
  if (status == accept_status::queue_full) {
    response r = error_response(429, "the queue holds as many jobs as it may (" +
                                         std::to_string(cfg_.max_active_jobs) + " jobs or " +
                                         std::to_string(cfg_.max_active_input_mb) +
                                         " MiB of input, queued or running); retry later");
    r.set(http::field::retry_after, "1");
    co_return r;
  }
  if (status == accept_status::stopping) {
    response r = error_response(503, "the service is shutting down; retry against its successor");
    r.set(http::field::retry_after, "1");
    co_return r;
  }
  json::object body{
      {"id", stored.id}, {"state", "queued"}, {"href", "/jobs/" + std::to_string(stored.id)}};
  if (retry_of != 0) body["retry_of"] = retry_of;
  response r = json_response(202, body);
  r.set(http::field::location, "/jobs/" + std::to_string(stored.id));
  co_return r;
}

auto api::get_job(std::int64_t id) -> asio::awaitable<response> {
  auto j = co_await db_.read([id](store& s) { return s.get(id); });
  if (!j) co_return error_response(404, "no job " + std::to_string(id));
  co_return json_response(200, job_json(*j));
}

auto api::job_json(const job& j) const -> json::value {
  json::value v = to_json(j);
  if (j.state == job_state::running) {
    if (const job_progress* p = progress_.latest(j.id)) v.as_object()["progress"] = to_json(*p);
  }
  return v;
}

auto api::retry_job(std::int64_t id) -> asio::awaitable<response> {
  auto old = co_await db_.read([id](store& s) { return s.get(id); });
  if (!old) co_return error_response(404, "no job " + std::to_string(id));
  if (old->state != job_state::failed && old->state != job_state::timed_out &&
      old->state != job_state::cancelled) {
    co_return json_response(
        409, json::object{{"error", "job " + std::to_string(id) + " is " +
                                        std::string(to_string(old->state)) +
                                        "; only a failed, timed_out or cancelled job is retried"},
                          {"job", job_json(*old)}});
  }
  if (tasks_.find(old->task) == nullptr) {
    co_return error_response(409, "task '" + old->task + "' is not registered on this instance");
  }
  job j;
  j.task = old->task;
  j.input = old->input;
  j.timeout_ms = old->timeout_ms;
  j.notify_url = old->notify_url;
  j.priority = old->priority;
  j.retry_of = old->id;
  co_return co_await accepted(std::move(j));
}

auto api::stats() -> asio::awaitable<response> {
  co_return json_response(200, co_await stats_.snapshot());
}

auto api::static_file(std::string_view name) const -> response {
  auto file = dashboard_.find(name);
  if (!file) return error_response(404, "no such file: /dashboard/" + std::string(name));
  response res{http::status::ok, 11};
  res.set(http::field::content_type, file->content_type);
  // Revalidated on each load: a restarted, newer service never serves a stale page.
  res.set(http::field::cache_control, "no-cache");
  res.set("X-Content-Type-Options", "nosniff");
  res.body() = std::move(file->body);
  res.prepare_payload();
  return res;
}

auto api::list_jobs(std::string_view query) -> asio::awaitable<response> {
  std::optional<job_state> state;
  std::string task;
  std::int64_t limit = 100, before = 0;
  while (!query.empty()) {
    const auto amp = query.find('&');
    const std::string_view pair = query.substr(0, amp);
    query = amp == std::string_view::npos ? std::string_view{} : query.substr(amp + 1);
    const auto eq = pair.find('=');
    const std::string_view key = pair.substr(0, eq);
    const std::string_view value =
        eq == std::string_view::npos ? std::string_view{} : pair.substr(eq + 1);
    if (key == "state") {
      state = parse_job_state(value);
      if (!state) {
        throw bad_request(
            "state must be one of queued, running, succeeded, failed, timed_out, cancelled");
      }
    } else if (key == "task") {
      if (value.size() > 256) throw bad_request("task must be a task's name");
      task = std::string(value);
    } else if (key == "limit") {
      const auto n = parse_id(value);
      if (!n || *n > 1000) throw bad_request("limit must be an integer from 1 to 1000");
      limit = *n;
    } else if (key == "before") {
      const auto n = parse_id(value);
      if (!n) throw bad_request("before must be a job id");
      before = *n;
    } else if (!key.empty()) {
      throw bad_request("unknown parameter '" + std::string(key) +
                        "'; use state, task, limit, before");
    }
  }
  // Named, not a temporary inside the co_await expression: built with GCC 12, a temporary lambda
  // here that captured a std::string was destroyed with a dangling small-string pointer (ASan:
  // free of an address that was not malloc()-ed) — a coroutine temporary's miscompilation.
  auto read_page = [state, task = std::move(task), limit, before](store& s) {
    return s.list(state, task, limit, before);
  };
  auto jobs = co_await db_.read(std::move(read_page));
  json::array list;
  for (const auto& j : jobs) list.push_back(job_json(j));
  json::value next = nullptr;
  if (static_cast<std::int64_t>(jobs.size()) == limit) next = jobs.back().id;
  co_return json_response(200, json::object{{"jobs", std::move(list)}, {"next_before", next}});
}

auto api::cancel_job(std::int64_t id) -> asio::awaitable<response> {
  if (auto j = co_await runner_.cancel(id)) {
    if (is_final(j->state)) co_return json_response(200, to_json(*j));
    // Another instance runs it and has not acted yet; it kills the job when it reads the request.
    co_return json_response(
        202, json::object{{"message", "cancel requested; the instance running this job kills it"},
                          {"job", to_json(*j)}});
  }
  auto j = co_await db_.read([id](store& s) { return s.get(id); });
  if (!j) co_return error_response(404, "no job " + std::to_string(id));
  co_return json_response(
      409, json::object{{"error", "job " + std::to_string(id) +
                                      " already ended: " + std::string(to_string(j->state))},
                        {"job", to_json(*j)}});
}

auto api::metrics() -> asio::awaitable<response> {
  const auto counts = co_await db_.read([](store& s) { return s.count_by_state(); });
  response res{http::status::ok, 11};
  res.set(http::field::content_type, "text/plain; version=0.0.4");
  res.body() = render_metrics(metrics_, pool_.stats(), counts, events_.clients());
  res.prepare_payload();
  co_return res;
}

auto api::instances() -> asio::awaitable<response> {
  const auto all = co_await db_.read([](store& s) { return s.instances(); });
  json::array list;
  for (const auto& i : all) {
    json::array tasks;
    for (std::string_view rest = i.tasks; !rest.empty();) {
      const auto comma = rest.find(',');
      tasks.emplace_back(rest.substr(0, comma));
      rest = comma == std::string_view::npos ? std::string_view{} : rest.substr(comma + 1);
    }
    list.push_back(json::object{{"id", i.id},
                                {"host", i.host},
                                {"pid", i.pid},
                                {"address", i.address},
                                {"workers", i.workers},
                                {"running", i.running},
                                {"heartbeat_age_ms", i.heartbeat_age_ms},
                                {"started_at_ms", i.started_ms},
                                {"tasks", std::move(tasks)},
                                {"self", i.id == instance_id_}});
  }
  co_return json_response(200, json::object{{"instances", std::move(list)}});
}

auto api::tasks() const -> response {
  json::array list;
  for (const auto& t : tasks_.all()) {
    json::array fields;
    for (const auto& f : t.fields) {
      json::object field{{"name", f.name}, {"type", f.type}};
      if (f.type == "string") {
        field["max_length"] = f.maximum;
      } else {
        field["minimum"] = f.minimum;
        field["maximum"] = f.maximum;
      }
      field["default"] = f.fallback;
      fields.push_back(std::move(field));
    }
    list.push_back(
        json::object{{"name", t.name}, {"summary", t.summary}, {"fields", std::move(fields)}});
  }
  return json_response(200, json::object{{"tasks", std::move(list)}});
}

auto api::health() const -> response {
  const auto s = pool_.stats();
  const char* status = runner_.stopping() ? "draining" : runner_.fenced() ? "fenced" : "ok";
  json::object o{{"status", status},
                 {"instance", instance_id_},
                 {"workers", s.workers},
                 {"busy", s.busy},
                 {"running_jobs", runner_.running()},
                 {"notify_listening", metrics_.notify_listening != 0}};
  return json_response(runner_.stopping() || runner_.fenced() ? 503 : 200, o);
}

}  // namespace service
