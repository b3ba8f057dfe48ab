// Test support for the reference service: start procpool-service as a real process, talk to it
// over loopback with a real HTTP client, receive its webhooks, read its /events stream.
#pragma once

#include <fcntl.h>
#include <libpq-fe.h>
#include <signal.h>
#include <spawn.h>
#include <sqlite3.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <boost/asio/connect.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/read.hpp>
#include <boost/asio/read_until.hpp>
#include <boost/asio/streambuf.hpp>
#include <boost/asio/write.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/http.hpp>
#include <boost/json.hpp>
#include <cctype>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <map>
#include <mutex>
#include <optional>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "pg_server.hpp"

extern char** environ;

namespace service_test {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
namespace json = boost::json;
using asio::ip::tcp;
using namespace std::chrono_literals;

/// Hang guard for every wait in these tests (never a condition for passing).
inline constexpr auto hang_guard = 60s;

struct reply {
  unsigned status = 0;
  std::string body;
  std::map<std::string, std::string> headers;
  [[nodiscard]] auto json() const -> json::value { return json::parse(body); }
};

/// Request headers to add, as (name, value).
using header_list = std::vector<std::pair<std::string, std::string>>;

/// `Authorization: Bearer <token>` (none for an empty token).
inline auto bearer(const std::string& token) -> header_list {
  if (token.empty()) return {};
  return {{"Authorization", "Bearer " + token}};
}

/// A blocking HTTP/1.1 client: one request per connection.
inline auto call(std::uint16_t port, http::verb verb, const std::string& target,
                 const std::string& body = "", const header_list& headers = {}) -> reply {
  asio::io_context ioc;
  tcp::socket socket(ioc);
  socket.connect(tcp::endpoint(asio::ip::make_address("127.0.0.1"), port));
  http::request<http::string_body> req{verb, target, 11};
  req.set(http::field::host, "127.0.0.1");
  for (const auto& [name, value] : headers) req.set(name, value);
  if (!body.empty()) {
    req.set(http::field::content_type, "application/json");
    req.body() = body;
  }
  req.keep_alive(false);
  req.prepare_payload();
  http::write(socket, req);
  beast::flat_buffer buffer;
  http::response<http::string_body> res;
  http::read(socket, buffer, res);
  reply r{res.result_int(), res.body(), {}};
  for (const auto& h : res) r.headers[std::string(h.name_string())] = std::string(h.value());
  return r;
}

/// Sends raw bytes and returns everything the server answers before it closes the connection.
inline auto raw(std::uint16_t port, const std::string& bytes) -> std::string {
  asio::io_context ioc;
  tcp::socket socket(ioc);
  socket.connect(tcp::endpoint(asio::ip::make_address("127.0.0.1"), port));
  // The server may answer and close before all of it is sent (a 503 at the connection limit):
  // what it answered is read either way.
  boost::system::error_code ec;
  asio::write(socket, asio::buffer(bytes), ec);
  socket.shutdown(tcp::socket::shutdown_send, ec);
  std::string out;
  asio::read(socket, asio::dynamic_buffer(out), ec);
  return out;
}

/// Where the service under test may send webhooks. The tests' receivers listen on 127.0.0.1,
/// which the service refuses by default (SSRF protection), so the harness allows loopback unless
/// the test sets its own --webhook-allow-* flags or asks for the service's own defaults.
enum class webhook_addresses { loopback_allowed, service_defaults };

/// procpool-service running as a child process, on a free port, with its own database file.
class service_process {
 public:
  /// Starts the service and waits until it serves; with `wait` false, call wait_ready() (so
  /// that several instances can start at the same moment).
  /// With `stderr_file`, the service's stderr (its log) goes to that file. Webhooks may reach
  /// loopback receivers unless the test sets its own policy (`webhooks` or a --webhook-allow flag).
  explicit service_process(std::string db, std::vector<std::string> flags = {}, bool wait = true,
                           webhook_addresses webhooks = webhook_addresses::loopback_allowed,
                           std::string stderr_file = "")
      : db_(std::move(db)), flags_(std::move(flags)), stderr_file_(std::move(stderr_file)) {
    bool own_policy = webhooks == webhook_addresses::service_defaults;
    for (const auto& f : flags_) own_policy = own_policy || f.starts_with("--webhook-allow");
    if (!own_policy) flags_.insert(flags_.begin(), {"--webhook-allow-network", "127.0.0.0/8"});
    spawn();
    if (wait) wait_ready();
  }
  ~service_process() {
    if (pid_ > 0) {
      ::kill(pid_, SIGKILL);
      wait_exit();
    }
  }
  service_process(const service_process&) = delete;
  auto operator=(const service_process&) -> service_process& = delete;

  [[nodiscard]] auto port() const -> std::uint16_t { return port_; }
  [[nodiscard]] auto pid() const -> pid_t { return pid_; }
  /// What the service printed on stdout up to its "listening" line.
  [[nodiscard]] auto banner() const -> const std::string& { return banner_; }

  /// The API token get, post, del and submit send (none when empty).
  void use_token(std::string token) { token_ = std::move(token); }

  auto post(const std::string& body) -> reply {
    return call(port_, http::verb::post, "/jobs", body, bearer(token_));
  }
  auto get(const std::string& target) -> reply {
    return call(port_, http::verb::get, target, "", bearer(token_));
  }
  auto del(const std::string& target) -> reply {
    return call(port_, http::verb::delete_, target, "", bearer(token_));
  }

  /// POSTs a job that must be accepted; returns its id.
  auto submit(const std::string& body) -> std::int64_t {
    const reply r = post(body);
    if (r.status != 202)
      throw std::runtime_error("POST /jobs: " + std::to_string(r.status) + " " + r.body);
    return r.json().at("id").as_int64();
  }

  /// Polls GET /jobs/{id} until its state is `state` (or final, if `state` is empty).
  auto wait_for(std::int64_t id, const std::string& state = "") -> json::object {
    const auto deadline = std::chrono::steady_clock::now() + hang_guard;
    for (;;) {
      json::object job = get("/jobs/" + std::to_string(id)).json().as_object();
      const std::string s(job.at("state").as_string());
      const bool final = s != "queued" && s != "running";
      if (state.empty() ? final : s == state) return job;
      if (std::chrono::steady_clock::now() > deadline) {
        throw std::runtime_error("job " + std::to_string(id) + " stuck in " + s);
      }
      std::this_thread::sleep_for(10ms);
    }
  }

  /// Sends `sig` (SIGSTOP, SIGCONT...) without waiting for anything.
  void signal(int sig) { ::kill(pid_, sig); }

  /// Sends `sig` and returns the exit status (or 128 + signal).
  auto stop(int sig) -> int {
    ::kill(pid_, sig);
    return wait_exit();
  }
  auto wait_exit() -> int {
    int status = 0;
    ::waitpid(pid_, &status, 0);
    pid_ = -1;
    if (out_ >= 0) {
      char buf[4096];
      ssize_t n;
      while ((n = ::read(out_, buf, sizeof buf)) > 0)
        rest_.append(buf, static_cast<std::size_t>(n));
      ::close(out_);
      out_ = -1;
    }
    return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  }
  /// Stdout after the banner, read once the process has exited.
  [[nodiscard]] auto rest_of_output() const -> const std::string& { return rest_; }

  /// Starts again on the same database (after stop()).
  void restart() {
    spawn();
    wait_ready();
  }

  /// Reads the service's stdout until it says it serves; throws if it exits first.
  void wait_ready() {
    banner_.clear();
    // The service prints "listening on http://ADDRESS:PORT " (https with TLS) once it serves.
    const std::string marker = "listening on http";
    char c;
    while (banner_.find(marker) == std::string::npos || banner_.back() != '\n') {
      if (::read(out_, &c, 1) != 1) throw std::runtime_error("service exited: " + banner_);
      banner_ += c;
    }
    const auto url_end = banner_.find(' ', banner_.find(marker) + marker.size());
    port_ = static_cast<std::uint16_t>(std::stoi(banner_.substr(banner_.rfind(':', url_end) + 1)));
    const auto id_at = banner_.find("(instance ");
    if (id_at != std::string::npos) {
      instance_ = banner_.substr(id_at + 10, banner_.find(',', id_at) - id_at - 10);
    }
  }
  /// The instance id the service printed in its banner.
  [[nodiscard]] auto instance() const -> const std::string& { return instance_; }

 private:
  void spawn() {
    int pipe_fds[2];
    if (::pipe2(pipe_fds, O_CLOEXEC) != 0) throw std::runtime_error("pipe");
    std::vector<std::string> args = {PROCPOOL_SERVICE_BINARY, "--port", "0", "--db", db_};
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
    args.insert(args.end(), {"--memory-limit-mb", "0"});  // sanitizers reserve huge address ranges
#endif
    if (db_.starts_with("postgresql://")) {
      // A killed instance is found dead after --dead-after-ms (30 s by default): tests that kill
      // one would wait that long for its jobs. Tests that set their own timings come after.
      args.insert(args.end(), {"--heartbeat-ms", "200", "--dead-after-ms", "2000"});
      // PROCPOOL_TEST_DB=postgres_poll_only: the whole suite on polling alone, as behind a
      // transaction pooler.
      const char* backend = std::getenv("PROCPOOL_TEST_DB");
      if (backend != nullptr && std::string_view(backend) == "postgres_poll_only") {
        args.insert(args.end(), {"--notify", "off"});
      }
    }
    args.insert(args.end(), flags_.begin(), flags_.end());
    std::vector<char*> argv;
    for (auto& a : args) argv.push_back(a.data());
    argv.push_back(nullptr);
    posix_spawn_file_actions_t actions;
    posix_spawn_file_actions_init(&actions);
    posix_spawn_file_actions_adddup2(&actions, pipe_fds[1], STDOUT_FILENO);
    if (!stderr_file_.empty()) {
      posix_spawn_file_actions_addopen(&actions, STDERR_FILENO, stderr_file_.c_str(),
                                       O_WRONLY | O_CREAT | O_APPEND, 0644);
    }
    const int rc = ::posix_spawn(&pid_, argv[0], &actions, nullptr, argv.data(), environ);
    posix_spawn_file_actions_destroy(&actions);
    ::close(pipe_fds[1]);
    if (rc != 0) throw std::runtime_error("cannot start " + args[0]);
    out_ = pipe_fds[0];
  }

  std::string db_;
  std::vector<std::string> flags_;
  std::string stderr_file_;
  std::string token_;
  pid_t pid_ = -1;
  int out_ = -1;
  std::uint16_t port_ = 0;
  std::string banner_, rest_, instance_;
};

/// What a command of the service binary printed, and its exit status.
struct command_result {
  int status = -1;
  std::string out, err;
};

/// Runs procpool-service with `args` (e.g. {"token", "list", "--db", db}) to its end.
inline auto run_service_command(const std::vector<std::string>& arguments) -> command_result {
  std::vector<std::string> args = {PROCPOOL_SERVICE_BINARY};
  args.insert(args.end(), arguments.begin(), arguments.end());
  std::vector<char*> argv;
  for (auto& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);
  int out_fds[2], err_fds[2];
  if (::pipe2(out_fds, O_CLOEXEC) != 0 || ::pipe2(err_fds, O_CLOEXEC) != 0) {
    throw std::runtime_error("pipe");
  }
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_adddup2(&actions, out_fds[1], STDOUT_FILENO);
  posix_spawn_file_actions_adddup2(&actions, err_fds[1], STDERR_FILENO);
  pid_t pid = -1;
  const int rc = ::posix_spawn(&pid, argv[0], &actions, nullptr, argv.data(), environ);
  posix_spawn_file_actions_destroy(&actions);
  ::close(out_fds[1]);
  ::close(err_fds[1]);
  command_result r;
  // Both outputs are short (well under a pipe's buffer): read one, then the other.
  for (auto [fd, text] : {std::pair{out_fds[0], &r.out}, std::pair{err_fds[0], &r.err}}) {
    char buf[4096];
    ssize_t n;
    while (rc == 0 && (n = ::read(fd, buf, sizeof buf)) > 0) {
      text->append(buf, static_cast<std::size_t>(n));
    }
    ::close(fd);
  }
  if (rc != 0) throw std::runtime_error("cannot start " + args[0]);
  int status = 0;
  ::waitpid(pid, &status, 0);
  r.status = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  return r;
}

/// Creates an API token on `db` with `scope`; returns it.
inline auto create_token(const std::string& db, const std::string& scope,
                         const std::string& name = "test") -> std::string {
  const auto r =
      run_service_command({"token", "create", "--scope", scope, "--name", name, "--db", db});
  if (r.status != 0) throw std::runtime_error("token create: " + r.err);
  return r.out.substr(0, r.out.find('\n'));
}

/// A webhook receiver on a thread: records every POST; answers `fail_first` attempts per
/// Idempotency-Key with 503, then 200.
class webhook_receiver {
 public:
  struct delivery {
    std::string key, attempt;
    json::object job;
  };

  explicit webhook_receiver(int fail_first = 0)
      : acceptor_(ioc_, tcp::endpoint(asio::ip::make_address("127.0.0.1"), 0)),
        fail_first_(fail_first),
        thread_([this] { serve(); }) {}
  ~webhook_receiver() {
    stop_ = true;
    // Unblocks the accept with a connection of our own.
    try {
      asio::io_context c;
      tcp::socket s(c);
      s.connect(tcp::endpoint(asio::ip::make_address("127.0.0.1"), port_));
    } catch (...) {
    }
    thread_.join();
  }
  webhook_receiver(const webhook_receiver&) = delete;
  auto operator=(const webhook_receiver&) -> webhook_receiver& = delete;

  [[nodiscard]] auto url() const -> std::string {
    return "http://127.0.0.1:" + std::to_string(port_) + "/hook";
  }
  /// Waits until at least `n` deliveries arrived; returns them all.
  auto wait_for(std::size_t n) -> std::vector<delivery> {
    std::unique_lock lock(mutex_);
    if (!cv_.wait_for(lock, hang_guard, [&] { return deliveries_.size() >= n; })) {
      throw std::runtime_error("only " + std::to_string(deliveries_.size()) + " webhooks arrived");
    }
    return deliveries_;
  }
  auto all() -> std::vector<delivery> {
    std::lock_guard lock(mutex_);
    return deliveries_;
  }
  /// While refusing, every attempt gets 503 (and is not recorded as a delivery).
  void set_refusing(bool refusing) {
    std::lock_guard lock(mutex_);
    refusing_ = refusing;
  }
  /// Attempts made so far (refused ones included).
  auto attempts() -> int {
    std::lock_guard lock(mutex_);
    int n = 0;
    for (const auto& [key, count] : attempts_) n += count;
    return n;
  }

 private:
  void serve() {
    for (;;) {
      boost::system::error_code ec;
      tcp::socket socket(ioc_);
      acceptor_.accept(socket, ec);
      if (ec || stopping()) return;
      beast::flat_buffer buffer;
      http::request<http::string_body> req;
      http::read(socket, buffer, req, ec);
      if (ec) continue;
      const std::string key(req["Idempotency-Key"]);
      bool fail = false;
      {
        std::lock_guard lock(mutex_);
        fail = attempts_[key]++ < fail_first_ || refusing_;
        boost::system::error_code jec;
        json::value v = json::parse(req.body(), jec);
        if (!fail && !jec && v.is_object()) {
          deliveries_.push_back({key, std::string(req["X-Procpool-Attempt"]), v.as_object()});
        }
      }
      http::response<http::string_body> res{
          fail ? http::status::service_unavailable : http::status::ok, 11};
      res.keep_alive(false);
      res.prepare_payload();
      http::write(socket, res, ec);
      cv_.notify_all();
    }
  }
  auto stopping() -> bool { return stop_.load(); }

  asio::io_context ioc_;
  tcp::acceptor acceptor_;
  std::uint16_t port_ = acceptor_.local_endpoint().port();
  int fail_first_;
  std::atomic<bool> stop_{false};
  std::mutex mutex_;
  std::condition_variable cv_;
  std::map<std::string, int> attempts_;
  bool refusing_ = false;
  std::vector<delivery> deliveries_;
  std::thread thread_;
};

/// Reads GET /events on a thread and keeps every event's job.
class event_reader {
 public:
  /// With `last_event_id`, asks for the changes since that event (Last-Event-ID).
  /// With `headers` (a token: bearer(token)), sends them too.
  explicit event_reader(std::uint16_t port, std::optional<std::int64_t> last_event_id = {},
                        const header_list& headers = {})
      : socket_(ioc_) {
    socket_.connect(tcp::endpoint(asio::ip::make_address("127.0.0.1"), port));
    std::string req = "GET /events HTTP/1.1\r\nHost: 127.0.0.1\r\n";
    for (const auto& [name, value] : headers) req += name + ": " + value + "\r\n";
    if (last_event_id) req += "Last-Event-ID: " + std::to_string(*last_event_id) + "\r\n";
    asio::write(socket_, asio::buffer(req + "\r\n"));
    // The head, then the stream's opening comment: subscribed from here on.
    asio::read_until(socket_, buffer_, "\r\n\r\n");
    buffer_.consume(asio::read_until(socket_, buffer_, ": connected\n\n"));
    thread_ = std::thread([this] { read(); });
  }
  ~event_reader() {
    boost::system::error_code ec;
    socket_.shutdown(tcp::socket::shutdown_both, ec);
    thread_.join();
  }
  event_reader(const event_reader&) = delete;
  auto operator=(const event_reader&) -> event_reader& = delete;

  /// Waits until `pred(events)` holds; returns the events.
  template <class Pred>
  auto wait_until(Pred pred) -> std::vector<json::object> {
    return wait_on(events_, pred);
  }

  /// Waits until `pred(others)` holds for the events that are not state changes (each with its
  /// kind in "event": "progress" or "stats"); returns them.
  template <class Pred>
  auto wait_for_others(Pred pred) -> std::vector<json::object> {
    return wait_on(others_, pred);
  }

 private:
  template <class Pred>
  auto wait_on(const std::vector<json::object>& list, Pred& pred) -> std::vector<json::object> {
    std::unique_lock lock(mutex_);
    if (!cv_.wait_for(lock, hang_guard, [&] { return pred(list); })) {
      throw std::runtime_error("the awaited events did not arrive");
    }
    return list;
  }

  void read() {
    boost::system::error_code ec;
    for (;;) {
      const std::size_t n = asio::read_until(socket_, buffer_, "\n\n", ec);
      if (ec) return;
      std::string block(asio::buffers_begin(buffer_.data()),
                        asio::buffers_begin(buffer_.data()) + static_cast<std::ptrdiff_t>(n));
      buffer_.consume(n);
      const auto data = block.find("data: ");
      if (data == std::string::npos) continue;
      const auto end = block.find('\n', data);
      json::object event = json::parse(block.substr(data + 6, end - data - 6)).as_object();
      // The event's id (the change's sequence number) rides along as "seq".
      if (block.starts_with("id: ")) event["seq"] = std::stoll(block.substr(4));
      std::lock_guard lock(mutex_);
      // State changes (event: job) apart from the rest (progress, stats), each kept in order.
      if (block.find("event: job\n") != std::string::npos) {
        events_.push_back(std::move(event));
      } else {
        const auto kind = block.find("event: ");
        event["event"] = block.substr(kind + 7, block.find('\n', kind) - kind - 7);
        others_.push_back(std::move(event));
      }
      cv_.notify_all();
    }
  }
  asio::io_context ioc_;
  tcp::socket socket_;
  asio::streambuf buffer_;
  std::mutex mutex_;
  std::condition_variable cv_;
  std::vector<json::object> events_;
  std::vector<json::object> others_;
  std::thread thread_;
};

/// The database backend the service tests run against: SQLite files (the default) or, with
/// PROCPOOL_TEST_DB=postgres (or postgres_poll_only: with --notify off), databases in a
/// PostgreSQL server this test program starts.
inline auto testing_postgres() -> bool {
  const char* backend = std::getenv("PROCPOOL_TEST_DB");
  return backend != nullptr && std::string_view(backend).starts_with("postgres");
}

/// This test program's PostgreSQL server: started at first use, stopped at exit.
inline auto shared_pg() -> pg_server& {
  static pg_server server;
  return server;
}

/// The URL of database `name` on `server` (the server's URL names the postgres database).
inline auto pg_database_url(const pg_server& server, const std::string& name) -> std::string {
  const std::string url = server.url();
  return url.substr(0, url.rfind('/') + 1) + name;
}

/// A new, empty PostgreSQL database on this program's server; returns its URL.
inline auto fresh_pg_db(const std::string& name) -> std::string {
  // A prefix keeps names such as "full" from being SQL keywords.
  std::string db_name = "test_" + name;
  for (char& c : db_name) c = std::isalnum(static_cast<unsigned char>(c)) ? c : '_';
  shared_pg().psql("DROP DATABASE IF EXISTS " + db_name + " WITH (FORCE)");
  shared_pg().psql("CREATE DATABASE " + db_name);
  return pg_database_url(shared_pg(), db_name);
}

/// A fresh database for one test: a new SQLite file, or a new PostgreSQL database.
inline auto fresh_db(const std::string& name) -> std::string {
  if (testing_postgres()) return fresh_pg_db(name);
  const auto dir = std::filesystem::temp_directory_path() /
                   ("procpool-service-test-" + std::to_string(::getpid()));
  std::filesystem::create_directories(dir);
  const auto path = dir / (name + ".db");
  for (const char* suffix : {"", "-wal", "-shm", ".lock"}) {
    std::filesystem::remove(path.string() + suffix);
  }
  return path.string();
}

/// Rows of a query on the service's database, read while the service may run (SQLite: WAL).
/// Fields as text; NULL as "".
inline auto query(const std::string& db, const std::string& sql)
    -> std::vector<std::vector<std::string>> {
  std::vector<std::vector<std::string>> rows;
  if (db.starts_with("postgresql://")) {
    PGconn* conn = PQconnectdb(db.c_str());
    if (PQstatus(conn) != CONNECTION_OK) {
      const std::string msg = PQerrorMessage(conn);
      PQfinish(conn);
      throw std::runtime_error("cannot connect to " + db + ": " + msg);
    }
    PGresult* res = PQexec(conn, sql.c_str());
    const auto status = PQresultStatus(res);
    if (status != PGRES_TUPLES_OK && status != PGRES_COMMAND_OK) {
      const std::string msg = PQresultErrorMessage(res);
      PQclear(res);
      PQfinish(conn);
      throw std::runtime_error(sql + ": " + msg);
    }
    for (int r = 0; r < PQntuples(res); ++r) {
      std::vector<std::string> row;
      for (int c = 0; c < PQnfields(res); ++c) row.emplace_back(PQgetvalue(res, r, c));
      rows.push_back(std::move(row));
    }
    PQclear(res);
    PQfinish(conn);
    return rows;
  }
  sqlite3* h = nullptr;
  if (sqlite3_open_v2(db.c_str(), &h, SQLITE_OPEN_READONLY, nullptr) != SQLITE_OK) {
    throw std::runtime_error("cannot open " + db);
  }
  sqlite3_busy_timeout(h, 5000);
  sqlite3_stmt* st = nullptr;
  if (sqlite3_prepare_v2(h, sql.c_str(), -1, &st, nullptr) != SQLITE_OK) {
    const std::string msg = sqlite3_errmsg(h);
    sqlite3_close(h);
    throw std::runtime_error(msg);
  }
  while (sqlite3_step(st) == SQLITE_ROW) {
    std::vector<std::string> row;
    for (int i = 0; i < sqlite3_column_count(st); ++i) {
      const auto* t = reinterpret_cast<const char*>(sqlite3_column_text(st, i));
      row.emplace_back(t ? t : "");
    }
    rows.push_back(std::move(row));
  }
  sqlite3_finalize(st);
  sqlite3_close(h);
  return rows;
}

}  // namespace service_test
