#include "api.hpp"

#include <boost/json/parse.hpp>
#include <boost/json/serialize.hpp>
#include <charconv>

#include "log.hpp"
#include "request_reading.hpp"

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
  const routed r = route_request(req.method(), req.target());
  switch (r.to) {
    // Named before the co_await: GCC 12 can copy an aggregate temporary inside a co_await
    // expression bytewise, leaving its strings dangling (see list_jobs).
    case endpoint::post_job: {
      job j = read_submission(req.body(), tasks_, {cfg_.default_timeout_ms, cfg_.max_timeout_ms});
      co_return co_await accepted(std::move(j));
    }
    case endpoint::list_jobs: {
      list_query q = read_list_query(r.query);
      co_return co_await list_jobs(std::move(q));
    }
    case endpoint::get_job:
      co_return co_await get_job(r.id);
    case endpoint::cancel_job:
      co_return co_await cancel_job(r.id);
    case endpoint::retry_job:
      co_return co_await retry_job(r.id);
    case endpoint::instances:
      co_return co_await instances();
    case endpoint::metrics:
      co_return co_await metrics();
    case endpoint::healthz:
      co_return health();
    case endpoint::tasks:
      co_return tasks();
    case endpoint::stats:
      co_return co_await stats();
    case endpoint::dashboard_file:
      co_return static_file(r.file);
    case endpoint::bad_job_id:
      co_return error_response(400, "a job id is a positive integer");
    case endpoint::method_not_allowed: {
      response res = error_response(405, std::string("method not allowed; use ") + r.allow);
      res.set(http::field::allow, r.allow);
      co_return res;
    }
    case endpoint::not_found:
      break;
  }
  co_return error_response(404,
                           "no such endpoint; see / (the dashboard), /tasks, /jobs, /events, "
                           "/stats, /instances, /metrics, /healthz");
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

auto api::list_jobs(list_query q) -> asio::awaitable<response> {
  const std::int64_t limit = q.limit;
  // Named, not a temporary inside the co_await expression: built with GCC 12, a temporary lambda
  // here that captured a std::string was destroyed with a dangling small-string pointer (ASan:
  // free of an address that was not malloc()-ed) — a coroutine temporary's miscompilation.
  auto read_page = [q = std::move(q)](store& s) {
    return s.list(q.state, q.task, q.limit, q.before);
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
