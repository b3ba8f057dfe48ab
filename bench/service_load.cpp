// Load run for the reference service: starts procpool-service on a fresh database; N clients,
// each on one keep-alive connection, POST a small job, wait for it to end (seen on /events), and
// POST the next, for a fixed time. Prints throughput, latency percentiles and error counts as
// `name: value unit` lines.
//
// Usage: service_load [--clients 16] [--seconds 10] [--sync full|normal] [--workers 2]
//                     [--n 10000] [--task count_primes|sleep] [--ms 0]
//                     [--db FILE|postgresql://...] [--instances 1] [--prefetch 0]
//                     [--prefix service_load]
//
// With --instances N (a postgresql:// --db), N services share the database; the clients spread
// their jobs over them, and /events of the first shows every instance's changes.
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/read_until.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/streambuf.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/write.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/core/tcp_stream.hpp>
#include <boost/beast/http.hpp>
#include <boost/json.hpp>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <ctime>
#include <filesystem>
#include <map>
#include <string>
#include <vector>

extern char** environ;

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
namespace json = boost::json;
using asio::ip::tcp;
using clock_type = std::chrono::steady_clock;
using namespace std::chrono_literals;

namespace {

struct options {
  int clients = 16;
  int seconds = 10;
  std::string sync = "full";
  int workers = 2;
  int n = 10000;
  std::string task = "count_primes";
  int ms = 0;
  std::string db;
  int instances = 1;
  int prefetch = 0;
  std::string prefix = "service_load";
};

struct results;
using waiters = std::map<std::int64_t, asio::steady_timer*>;

struct results {
  std::vector<double> post_ms;   // POST -> 202
  std::vector<double> e2e_ms;    // POST sent -> final state on /events
  std::vector<double> queue_ms;  // created -> started (the claim), by the database's record
  std::map<std::int64_t, clock_type::time_point> started, ended;
  waiters waiting;  // job id -> its client's timer, cancelled when the job ends
  std::size_t accepted = 0, rejected = 0, errors = 0, completed = 0, not_succeeded = 0;
};

auto percentile(std::vector<double> v, double p) -> double {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  return v[std::min(v.size() - 1, static_cast<std::size_t>(p * static_cast<double>(v.size())))];
}

// Milliseconds since the epoch of an RFC 3339 UTC timestamp with milliseconds, as the service
// writes them ("2026-12-01T13:47:56.840Z").
auto epoch_ms(const json::value& v) -> double {
  if (!v.is_string()) return 0;
  const std::string t(v.as_string());
  std::tm tm{};
  if (!strptime(t.c_str(), "%Y-%m-%dT%H:%M:%S", &tm)) return 0;
  return static_cast<double>(timegm(&tm)) * 1000.0 + std::atof(t.c_str() + 19) * 1000.0;
}

auto client(tcp::endpoint at, const options& opt, results& r, clock_type::time_point until)
    -> asio::awaitable<void> {
  beast::tcp_stream stream(co_await asio::this_coro::executor);
  co_await stream.async_connect(at, asio::use_awaitable);
  beast::flat_buffer buffer;
  const std::string body =
      opt.task == "sleep"
          ? R"({"task": "sleep", "input": {"ms": )" + std::to_string(opt.ms) + "}}"
          : R"({"task": "count_primes", "input": {"n": )" + std::to_string(opt.n) + "}}";
  while (clock_type::now() < until) {
    http::request<http::string_body> req{http::verb::post, "/jobs", 11};
    req.set(http::field::host, "127.0.0.1");
    req.set(http::field::content_type, "application/json");
    req.body() = body;
    req.prepare_payload();
    const auto t0 = clock_type::now();
    auto [wec, wn] = co_await http::async_write(stream, req, asio::as_tuple(asio::use_awaitable));
    http::response<http::string_body> res;
    auto [rec, rn] =
        co_await http::async_read(stream, buffer, res, asio::as_tuple(asio::use_awaitable));
    if (wec || rec) {
      ++r.errors;
      co_return;
    }
    const auto t1 = clock_type::now();
    if (res.result_int() == 202) {
      ++r.accepted;
      r.post_ms.push_back(std::chrono::duration<double, std::milli>(t1 - t0).count());
      const std::int64_t id = json::parse(res.body()).at("id").as_int64();
      r.started[id] = t0;
      if (!r.ended.contains(id)) {
        asio::steady_timer done(stream.get_executor(), clock_type::time_point::max());
        r.waiting[id] = &done;
        co_await done.async_wait(asio::as_tuple(asio::use_awaitable));
        r.waiting.erase(id);
      }
    } else if (res.result_int() == 429) {
      ++r.rejected;
      asio::steady_timer wait(stream.get_executor(), 5ms);
      co_await wait.async_wait(asio::use_awaitable);
    } else {
      ++r.errors;
    }
  }
}

// Follows /events; records each tracked job's end.
auto follow(tcp::socket socket, asio::streambuf& buf, results& r) -> asio::awaitable<void> {
  for (;;) {
    auto [ec, n] =
        co_await asio::async_read_until(socket, buf, "\n\n", asio::as_tuple(asio::use_awaitable));
    if (ec) co_return;
    std::string block(asio::buffers_begin(buf.data()),
                      asio::buffers_begin(buf.data()) + static_cast<std::ptrdiff_t>(n));
    buf.consume(n);
    const auto data = block.find("data: ");
    // Only state changes: progress and stats events are not changes of a job.
    if (data == std::string::npos || block.find("event: job\n") == std::string::npos) continue;
    const json::value v = json::parse(block.substr(data + 6, block.find('\n', data) - data - 6));
    const std::string state(v.at("state").as_string());
    if (state == "queued" || state == "running") continue;
    const std::int64_t id = v.at("id").as_int64();
    r.ended[id] = clock_type::now();
    const double created = epoch_ms(v.at("created_at")), started = epoch_ms(v.at("started_at"));
    if (created > 0 && started > 0) r.queue_ms.push_back(started - created);
    if (state != "succeeded") ++r.not_succeeded;
    if (auto it = r.waiting.find(id); it != r.waiting.end()) it->second->cancel();
  }
}

}  // namespace

int main(int argc, char** argv) {
  options opt;
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string k = argv[i], v = argv[i + 1];
    if (k == "--clients")
      opt.clients = std::stoi(v);
    else if (k == "--seconds")
      opt.seconds = std::stoi(v);
    else if (k == "--sync")
      opt.sync = v;
    else if (k == "--workers")
      opt.workers = std::stoi(v);
    else if (k == "--n")
      opt.n = std::stoi(v);
    else if (k == "--prefix")
      opt.prefix = v;
    else if (k == "--task")
      opt.task = v;
    else if (k == "--ms")
      opt.ms = std::stoi(v);
    else if (k == "--db")
      opt.db = v;
    else if (k == "--instances")
      opt.instances = std::stoi(v);
    else if (k == "--prefetch")
      opt.prefetch = std::stoi(v);
    else {
      std::fprintf(stderr, "unknown option %s\n", k.c_str());
      return 2;
    }
  }
  const bool own_db = opt.db.empty();
  const std::string db = own_db ? (std::filesystem::temp_directory_path() /
                                   ("procpool-service-load-" + std::to_string(::getpid()) + ".db"))
                                      .string()
                                : opt.db;
  // The services, as separate processes, each printing its port.
  std::vector<pid_t> pids;
  std::vector<tcp::endpoint> ats;
  for (int i = 0; i < opt.instances; ++i) {
    int out[2];
    if (::pipe(out) != 0) return 1;
    std::vector<std::string> args = {PROCPOOL_SERVICE_BINARY,
                                     "--port",
                                     "0",
                                     "--db",
                                     db,
                                     "--sync",
                                     opt.sync,
                                     "--workers",
                                     std::to_string(opt.workers),
                                     "--max-active-jobs",
                                     "100000",
                                     "--prefetch",
                                     std::to_string(opt.prefetch)};
    std::vector<char*> cargs;
    for (auto& a : args) cargs.push_back(a.data());
    cargs.push_back(nullptr);
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_adddup2(&fa, out[1], STDOUT_FILENO);
    posix_spawn_file_actions_addclose(&fa, out[0]);
    pid_t pid = 0;
    const int spawned = ::posix_spawn(&pid, cargs[0], &fa, nullptr, cargs.data(), environ);
    posix_spawn_file_actions_destroy(&fa);
    if (spawned != 0) return 1;
    ::close(out[1]);
    pids.push_back(pid);
    std::string banner;
    const std::string marker = "listening on http://127.0.0.1:";
    char c;
    while (banner.find(marker) == std::string::npos || banner.back() != ' ') {
      if (::read(out[0], &c, 1) != 1) return 1;
      banner += c;
    }
    // out[0] stays open: the service writes to its stdout when it stops (a closed pipe would
    // kill it with SIGPIPE).
    const auto port =
        static_cast<std::uint16_t>(std::stoi(banner.substr(banner.find(marker) + marker.size())));
    ats.emplace_back(asio::ip::make_address("127.0.0.1"), port);
  }
  const tcp::endpoint at = ats.front();

  asio::io_context ioc(1);
  results r;
  // Subscribed to /events before the first job, so that no job's end is missed.
  tcp::socket events(ioc);
  events.connect(at);
  asio::write(events, asio::buffer(std::string("GET /events HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")));
  asio::streambuf buf;
  asio::read_until(events, buf, ": connected\n\n");
  buf.consume(buf.size());
  asio::co_spawn(ioc, follow(std::move(events), buf, r), asio::detached);
  const auto t0 = clock_type::now();
  const auto until = t0 + std::chrono::seconds(opt.seconds);
  int clients_left = opt.clients;
  for (int i = 0; i < opt.clients; ++i) {
    asio::co_spawn(ioc, client(ats[static_cast<std::size_t>(i) % ats.size()], opt, r, until),
                   [&](std::exception_ptr) { --clients_left; });
  }
  // After the load: wait (bounded) for every accepted job to end, then stop.
  asio::co_spawn(
      ioc,
      [&]() -> asio::awaitable<void> {
        asio::steady_timer t(ioc);
        const auto give_up = until + 120s;
        while (clients_left > 0 || r.ended.size() < r.started.size()) {
          if (clock_type::now() > give_up) break;
          t.expires_after(10ms);
          co_await t.async_wait(asio::use_awaitable);
        }
        ioc.stop();
      },
      asio::detached);
  ioc.run();
  const auto t_done = clock_type::now();
  for (const auto& [id, start] : r.started) {
    if (auto it = r.ended.find(id); it != r.ended.end()) {
      r.e2e_ms.push_back(std::chrono::duration<double, std::milli>(it->second - start).count());
      ++r.completed;
    }
  }
  int status = 0;
  for (const pid_t pid : pids) ::kill(pid, SIGTERM);
  for (const pid_t pid : pids) {
    int one = 0;
    ::waitpid(pid, &one, 0);
    if (status == 0) status = one;
  }
  if (own_db) {
    for (const char* suffix : {"", "-wal", "-shm", ".lock"}) {
      std::filesystem::remove(db + suffix);
    }
  }

  const double all_s = std::chrono::duration<double>(t_done - t0).count();
  const auto& p = opt.prefix;
  std::printf("%s_clients: %d clients\n", p.c_str(), opt.clients);
  std::printf("%s_throughput: %.0f jobs/s\n", p.c_str(), r.completed / all_s);
  std::printf("%s_post_p50: %.2f ms\n", p.c_str(), percentile(r.post_ms, 0.50));
  std::printf("%s_post_p99: %.2f ms\n", p.c_str(), percentile(r.post_ms, 0.99));
  std::printf("%s_job_p50: %.2f ms\n", p.c_str(), percentile(r.e2e_ms, 0.50));
  std::printf("%s_job_p99: %.2f ms\n", p.c_str(), percentile(r.e2e_ms, 0.99));
  std::printf("%s_queue_p50: %.2f ms\n", p.c_str(), percentile(r.queue_ms, 0.50));
  std::printf("%s_queue_p99: %.2f ms\n", p.c_str(), percentile(r.queue_ms, 0.99));
  std::printf("%s_jobs: %zu jobs\n", p.c_str(), r.accepted);
  std::printf("%s_unfinished: %zu jobs\n", p.c_str(), r.started.size() - r.completed);
  std::printf("%s_not_succeeded: %zu jobs\n", p.c_str(), r.not_succeeded);
  std::printf("%s_rejected_429: %zu requests\n", p.c_str(), r.rejected);
  std::printf("%s_errors: %zu requests\n", p.c_str(), r.errors);
  std::printf("%s_service_exit: %d status\n", p.c_str(),
              WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status));
  return r.errors == 0 && r.completed == r.accepted ? 0 : 1;
}
