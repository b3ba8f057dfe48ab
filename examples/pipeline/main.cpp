// The mixed pipeline in miniature: requests arrive asynchronously, each is computed in the process
// pool, its outcome is written to SQLite on a database thread, and a notification goes out over a
// loopback socket. One request crashes its worker, to show that only that request fails.
//
// Usage: pipeline [database-file]   (default: pipeline.db in the current directory)
#include <sqlite3.h>
#include <procpool/procpool.hpp>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/experimental/channel.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/read_until.hpp>
#include <boost/asio/redirect_error.hpp>
#include <boost/asio/streambuf.hpp>
#include <boost/asio/thread_pool.hpp>
#include <boost/asio/write.hpp>
#include <csignal>
#include <cstdint>
#include <cstdio>
#include <memory>
#include <stdexcept>
#include <string>

namespace asio = boost::asio;
using asio::ip::tcp;
using namespace std::chrono_literals;

// ---- the CPU-heavy step, run in worker processes ----

// Counts the primes below n by trial division. n == 13 stands for a bug in native code.
auto count_primes(std::uint32_t n) -> std::uint32_t {
  if (n == 13) std::raise(SIGSEGV);
  std::uint32_t count = 0;
  for (std::uint32_t i = 2; i < n; ++i) {
    bool prime = true;
    for (std::uint32_t d = 2; d * d <= i; ++d) {
      if (i % d == 0) {
        prime = false;
        break;
      }
    }
    count += prime;
  }
  return count;
}

// ---- the database step, run on one dedicated thread (blocking calls stay off the event loop) ----

class database {
 public:
  explicit database(const std::string& path) {
    if (sqlite3_open(path.c_str(), &db_) != SQLITE_OK)
      throw std::runtime_error(sqlite3_errmsg(db_));
    exec("PRAGMA journal_mode=WAL");
    exec("DROP TABLE IF EXISTS results");
    exec(
        "CREATE TABLE results (id INTEGER PRIMARY KEY, input INTEGER, outcome TEXT, value "
        "INTEGER)");
  }
  ~database() { sqlite3_close(db_); }
  database(const database&) = delete;
  auto operator=(const database&) -> database& = delete;

  void record(int id, std::uint32_t input, const std::string& outcome, std::int64_t value) {
    sqlite3_stmt* st = nullptr;
    sqlite3_prepare_v2(db_, "INSERT INTO results VALUES (?, ?, ?, ?)", -1, &st, nullptr);
    sqlite3_bind_int(st, 1, id);
    sqlite3_bind_int64(st, 2, input);
    sqlite3_bind_text(st, 3, outcome.c_str(), -1, SQLITE_TRANSIENT);
    sqlite3_bind_int64(st, 4, value);
    const int rc = sqlite3_step(st);
    sqlite3_finalize(st);
    if (rc != SQLITE_DONE) throw std::runtime_error(sqlite3_errmsg(db_));
  }

  auto count(const std::string& outcome) -> int {
    sqlite3_stmt* st = nullptr;
    sqlite3_prepare_v2(db_, "SELECT count(*) FROM results WHERE outcome = ?", -1, &st, nullptr);
    sqlite3_bind_text(st, 1, outcome.c_str(), -1, SQLITE_TRANSIENT);
    sqlite3_step(st);
    const int n = sqlite3_column_int(st, 0);
    sqlite3_finalize(st);
    return n;
  }

 private:
  void exec(const char* sql) {
    char* err = nullptr;
    if (sqlite3_exec(db_, sql, nullptr, nullptr, &err) != SQLITE_OK) {
      std::string msg = err ? err : "unknown";
      sqlite3_free(err);
      throw std::runtime_error(msg);
    }
  }
  sqlite3* db_ = nullptr;
};

// ---- the notification step: a line over a loopback socket to a receiver ----

auto receive_notifications(tcp::acceptor& acceptor, int expected, int& received)
    -> asio::awaitable<void> {
  tcp::socket peer = co_await acceptor.async_accept(asio::use_awaitable);
  asio::streambuf buf;
  while (received < expected) {
    boost::system::error_code ec;
    co_await asio::async_read_until(peer, buf, '\n', asio::redirect_error(asio::use_awaitable, ec));
    if (ec) break;
    std::istream in(&buf);
    std::string line;
    std::getline(in, line);
    std::printf("  notification received: %s\n", line.c_str());
    ++received;
  }
}

struct request {
  int id;
  std::uint32_t n;
};
using request_channel = asio::experimental::channel<void(boost::system::error_code, request)>;

// [pipeline]
auto handle(request req, procpool::process_pool& pool, asio::thread_pool& db_thread, database& db,
            tcp::socket& notify) -> asio::awaitable<void> {
  std::string outcome = "succeeded";
  std::int64_t value = -1;
  try {
    // Compute in the process pool; a crash fails only this request.
    value = co_await procpool::wait_for(pool.submit(count_primes, req.n), 10s);
  } catch (const procpool::worker_crashed& e) {
    outcome = "failed";
    std::printf("  request %d failed: %s\n", req.id, e.what());
  }
  // Write the database on its own thread, off the event loop.
  auto write_row = [&db, req, outcome, value] { db.record(req.id, req.n, outcome, value); };
  co_await procpool::to_thread_on(db_thread.get_executor(), write_row);
  // Notify.
  const std::string line = "request " + std::to_string(req.id) + " " + outcome +
                           " value=" + std::to_string(value) + "\n";
  co_await asio::async_write(notify, asio::buffer(line), asio::use_awaitable);
}
// [pipeline]

auto serve(request_channel& requests, int expected, procpool::process_pool& pool,
           asio::thread_pool& db_thread, database& db, tcp::socket& notify)
    -> asio::awaitable<void> {
  auto ex = co_await asio::this_coro::executor;
  int finished = 0;
  auto all_done = std::make_shared<request_channel>(ex, expected);
  for (int i = 0; i < expected; ++i) {
    request req = co_await requests.async_receive(asio::use_awaitable);  // requests arrive async
    asio::co_spawn(
        ex,
        [&, req, all_done]() -> asio::awaitable<void> {
          co_await handle(req, pool, db_thread, db, notify);
          co_await all_done->async_send({}, req, asio::use_awaitable);
        },
        asio::detached);
  }
  while (finished < expected) {
    co_await all_done->async_receive(asio::use_awaitable);
    ++finished;
  }
}

int main(int argc, char** argv) {
  procpool::init();
  const std::string path = argc > 1 ? argv[1] : "pipeline.db";
  constexpr int n_requests = 10;

  asio::io_context io;
  procpool::process_pool pool{io.get_executor(), {.workers = 2}};
  asio::thread_pool db_thread(1);
  database db(path);

  tcp::acceptor acceptor(io, {asio::ip::make_address("127.0.0.1"), 0});
  int notifications = 0;
  asio::experimental::channel<void(boost::system::error_code)> receiver_done(io, 1);
  asio::co_spawn(io, receive_notifications(acceptor, n_requests, notifications),
                 [&](std::exception_ptr) { receiver_done.try_send(boost::system::error_code{}); });

  request_channel requests(io, n_requests);
  asio::co_spawn(
      io,
      [&]() -> asio::awaitable<void> {
        tcp::socket notify(io);
        co_await notify.async_connect(acceptor.local_endpoint(), asio::use_awaitable);
        // A producer standing in for network clients: requests arrive over a channel.
        asio::co_spawn(
            io,
            [&]() -> asio::awaitable<void> {
              for (int i = 0; i < n_requests; ++i) {
                co_await requests.async_send(
                    {}, request{i, static_cast<std::uint32_t>(i == 3 ? 13 : 20'000 + 5'000 * i)},
                    asio::use_awaitable);
              }
            },
            asio::detached);
        co_await serve(requests, n_requests, pool, db_thread, db, notify);
        const int ok = co_await procpool::to_thread_on(db_thread.get_executor(),
                                                       [&] { return db.count("succeeded"); });
        const int failed = co_await procpool::to_thread_on(db_thread.get_executor(),
                                                           [&] { return db.count("failed"); });
        co_await pool.shutdown(procpool::shutdown_mode::graceful);
        notify.shutdown(tcp::socket::shutdown_send);
        co_await receiver_done.async_receive(asio::use_awaitable);  // the last lines have arrived
        std::printf("summary: %d succeeded, %d failed, %d notifications (database: %s)\n", ok,
                    failed, notifications, path.c_str());
        acceptor.close();
      },
      [](std::exception_ptr e) {
        if (e) std::rethrow_exception(e);
      });
  io.run();
  db_thread.join();
}
