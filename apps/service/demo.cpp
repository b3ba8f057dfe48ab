#include "demo.hpp"

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/core/tcp_stream.hpp>
#include <boost/beast/http/read.hpp>
#include <boost/beast/http/string_body.hpp>
#include <boost/beast/http/write.hpp>
#include <boost/json/parse.hpp>
#include <boost/json/serialize.hpp>
#include <cstdio>
#include <map>
#include <string>
#include <vector>

#include "http_client.hpp"

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
namespace json = boost::json;
using asio::ip::tcp;
using namespace std::chrono_literals;

namespace service {

namespace {

struct receiver_state {
  std::map<std::int64_t, std::string> final_state;  // job id -> state, from the webhooks
  asio::steady_timer arrived;
  explicit receiver_state(asio::any_io_executor ex) : arrived(ex) {}
};

// The webhook receiver: answers 200 to every POST and records the job's final state.
auto receive(tcp::socket socket, receiver_state& st) -> asio::awaitable<void> {
  beast::tcp_stream stream(std::move(socket));
  beast::flat_buffer buffer;
  http::request<http::string_body> req;
  auto [ec, n] =
      co_await http::async_read(stream, buffer, req, asio::as_tuple(asio::use_awaitable));
  if (ec) co_return;
  boost::system::error_code jec;
  const json::value job = json::parse(req.body(), jec);
  if (!jec && job.is_object()) {
    const auto& o = job.as_object();
    const std::int64_t id = o.at("id").as_int64();
    const std::string state(o.at("state").as_string());
    std::printf("  webhook: job %lld %-9s (Idempotency-Key %s, attempt %s)\n",
                static_cast<long long>(id), state.c_str(),
                std::string(req["Idempotency-Key"]).c_str(),
                std::string(req["X-Procpool-Attempt"]).c_str());
    std::fflush(stdout);
    st.final_state[id] = state;
    st.arrived.cancel();
  }
  http::response<http::string_body> res{http::status::ok, 11};
  res.keep_alive(false);
  res.prepare_payload();
  co_await http::async_write(stream, res, asio::as_tuple(asio::use_awaitable));
}

auto receiver_loop(tcp::acceptor& acceptor, receiver_state& st) -> asio::awaitable<void> {
  for (;;) {
    auto [ec, socket] = co_await acceptor.async_accept(asio::as_tuple(asio::use_awaitable));
    if (ec) co_return;
    asio::co_spawn(acceptor.get_executor(), receive(std::move(socket), st), asio::detached);
  }
}

struct demo_job {
  const char* what;
  std::string body;
  const char* expected_state;
  bool cancel = false;
};

}  // namespace

auto run_demo(asio::any_io_executor ex, std::uint16_t port) -> asio::awaitable<bool> {
  tcp::acceptor acceptor(ex, tcp::endpoint(asio::ip::make_address("127.0.0.1"), 0));
  receiver_state st(ex);
  asio::co_spawn(ex, receiver_loop(acceptor, st), asio::detached);
  const std::string notify =
      "\"notify_url\": \"http://127.0.0.1:" + std::to_string(acceptor.local_endpoint().port()) +
      "/hook\"";
  const http_url service{"127.0.0.1", std::to_string(port), "/jobs"};
  const http_headers no_headers;

  std::vector<demo_job> jobs = {
      {"primes below 20 million",
       R"({"task": "count_primes", "input": {"n": 20000000}, )" + notify + "}", "succeeded"},
      {"a Mandelbrot tile",
       R"({"task": "mandelbrot", "input": {"width": 600, "height": 400}, )" + notify + "}",
       "succeeded"},
      {"SHA-256 chained 500,000 times",
       R"({"task": "sha256_chain", "input": {"rounds": 500000}, )" + notify + "}", "succeeded"},
      {"sort 3 million numbers", R"({"task": "sort", "input": {"count": 3000000}, )" + notify + "}",
       "succeeded"},
      {"a task that throws",
       R"({"task": "throw", "input": {"message": "bad input row 7"}, )" + notify + "}", "failed"},
      {"a task that segfaults", R"({"task": "crash", "input": {"signal": "SEGV"}, )" + notify + "}",
       "failed"},
      {"a task that hangs, 500 ms limit", R"({"task": "hang", "timeout_ms": 500, )" + notify + "}",
       "timed_out"},
      {"a long task, cancelled", R"({"task": "sleep", "input": {"ms": 600000}, )" + notify + "}",
       "cancelled", true},
      {"primes again (the pool healed)",
       R"({"task": "count_primes", "input": {"n": 1000000}, )" + notify + "}", "succeeded"},
  };
  std::printf("demo: submitting %zu jobs to http://127.0.0.1:%u/jobs\n", jobs.size(), port);
  std::map<std::int64_t, const demo_job*> ids;
  for (const auto& j : jobs) {
    const http_reply r = co_await http_call(ex, service, http::verb::post, j.body, no_headers, 10s);
    if (r.status != 202) {
      std::printf("  POST /jobs for %s: HTTP %u %s\n", j.what, r.status, r.body.c_str());
      co_return false;
    }
    const std::int64_t id = json::parse(r.body).at("id").as_int64();
    ids[id] = &j;
    std::printf("  job %lld accepted: %s\n", static_cast<long long>(id), j.what);
  }
  std::fflush(stdout);
  for (const auto& [id, j] : ids) {
    if (!j->cancel) continue;
    http_url target = service;
    target.target = "/jobs/" + std::to_string(id);
    const http_reply r = co_await http_call(ex, target, http::verb::delete_, "", no_headers, 10s);
    std::printf("  DELETE /jobs/%lld -> HTTP %u\n", static_cast<long long>(id), r.status);
  }

  const auto deadline = std::chrono::steady_clock::now() + 120s;
  while (st.final_state.size() < ids.size() && std::chrono::steady_clock::now() < deadline) {
    st.arrived.expires_at(deadline);
    co_await st.arrived.async_wait(asio::as_tuple(asio::use_awaitable));
  }
  acceptor.close();

  bool ok = st.final_state.size() == ids.size();
  std::printf("\ndemo: the jobs, as GET /jobs/{id} shows them\n");
  for (const auto& [id, j] : ids) {
    http_url target = service;
    target.target = "/jobs/" + std::to_string(id);
    const http_reply r = co_await http_call(ex, target, http::verb::get, "", no_headers, 10s);
    const json::object o = json::parse(r.body).as_object();
    const std::string state(o.at("state").as_string());
    std::string detail = json::serialize(state == "succeeded" ? o.at("result") : o.at("error"));
    if (detail.size() > 110) detail = detail.substr(0, 107) + "...";
    std::printf("  %3lld %-13s %-9s %s\n", static_cast<long long>(id),
                std::string(o.at("task").as_string()).c_str(), state.c_str(), detail.c_str());
    if (state != j->expected_state) {
      std::printf("      expected %s\n", j->expected_state);
      ok = false;
    }
  }
  http_url metrics = service;
  metrics.target = "/metrics";
  const http_reply m = co_await http_call(ex, metrics, http::verb::get, "", no_headers, 10s);
  std::printf("\ndemo: from GET /metrics\n");
  for (std::size_t pos = 0; pos < m.body.size();) {
    const auto end = m.body.find('\n', pos);
    const std::string line = m.body.substr(pos, end - pos);
    if (line.starts_with("service_jobs{") || line.starts_with("procpool_tasks_crashed") ||
        line.starts_with("procpool_workers_respawned") ||
        line.starts_with("procpool_tasks_timed_out")) {
      std::printf("  %s\n", line.c_str());
    }
    pos = end == std::string::npos ? end : end + 1;
  }
  std::printf("\ndemo: %s: %zu jobs, %zu webhooks received\n", ok ? "ok" : "FAILED", ids.size(),
              st.final_state.size());
  std::fflush(stdout);
  co_return ok;
}

}  // namespace service
