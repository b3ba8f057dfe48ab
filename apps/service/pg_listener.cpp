#include "pg_listener.hpp"

#include <poll.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <boost/asio/post.hpp>
#include <cerrno>
#include <charconv>
#include <climits>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <exception>
#include <optional>
#include <string_view>
#include <system_error>
#include <utility>

#include "log.hpp"
#include "pg_connection.hpp"

namespace asio = boost::asio;

namespace service {

namespace {

using clock = std::chrono::steady_clock;

enum class wait_result { ready, timed_out, woken };

// Waits until `fd` has one of `events` (fd < 0: nothing but the wake fd counts), `wake_fd` is
// readable, or `deadline`.
auto wait_for(int fd, short events, int wake_fd, clock::time_point deadline) -> wait_result {
  for (;;) {
    const auto left = std::chrono::ceil<std::chrono::milliseconds>(deadline - clock::now());
    const int timeout = static_cast<int>(std::clamp<std::int64_t>(left.count(), 0, INT_MAX));
    std::array<pollfd, 2> fds{{{wake_fd, POLLIN, 0}, {fd, events, 0}}};
    const int n = ::poll(fds.data(), fd >= 0 ? 2 : 1, timeout);
    if (n < 0) {
      if (errno == EINTR) continue;
      throw std::system_error(errno, std::system_category(), "poll");
    }
    if (fds[0].revents != 0) return wait_result::woken;
    if (n > 0) return wait_result::ready;
    if (timeout == 0) return wait_result::timed_out;  // else poll rounded down: wait the rest
  }
}

// libpq's connect_timeout as libpq itself applies it, which PQconnectPoll leaves to us: seconds,
// at least 2, none if unset or not positive.
auto connect_timeout(PGconn* conn) -> std::optional<std::chrono::seconds> {
  std::optional<std::chrono::seconds> timeout;
  PQconninfoOption* options = PQconninfo(conn);
  for (auto* o = options; o != nullptr && o->keyword != nullptr; ++o) {
    if (std::strcmp(o->keyword, "connect_timeout") != 0 || o->val == nullptr) continue;
    int seconds = 0;
    std::from_chars(o->val, o->val + std::strlen(o->val), seconds);
    if (seconds > 0) timeout = std::chrono::seconds(std::max(seconds, 2));
  }
  PQconninfoFree(options);
  return timeout;
}

}  // namespace

struct pg_listener::handlers {
  notify_handler on_notify;
  state_handler on_state;
  std::atomic<bool> stopped{false};
};

/// One connection, from connect to loss. Failures leave their reason in `error`.
class pg_listener::session {
 public:
  explicit session(pg_listener& owner) : owner_(owner) {}
  ~session() {
    if (conn_ != nullptr) PQfinish(conn_);
  }
  session(const session&) = delete;
  auto operator=(const session&) -> session& = delete;

  /// Connects and LISTENs; false if that failed or stop() was called.
  auto open() -> bool;
  /// Delivers notifications and probes the connection until it fails or stop() is called.
  void serve();

  std::string error;

 private:
  auto await_results(clock::time_point deadline, bool deliver) -> bool;
  void deliver_notifications();
  void fail(const PGresult* result = nullptr) {
    // The server's own word ("terminating connection due to administrator command") came as a
    // notice just before it closed the connection; it says more than "closed unexpectedly".
    error = server_said_.empty() ? pg_error(conn_, result).what() : "postgresql: " + server_said_;
  }
  static void remember_notice(void* arg, const PGresult* notice) {
    const char* severity = PQresultErrorField(notice, PG_DIAG_SEVERITY_NONLOCALIZED);
    const char* message = PQresultErrorField(notice, PG_DIAG_MESSAGE_PRIMARY);
    if (severity == nullptr || message == nullptr) return;
    const std::string_view level(severity);
    if (level == "FATAL" || level == "PANIC" || level == "ERROR") {
      static_cast<session*>(arg)->server_said_ = message;
    }
  }

  pg_listener& owner_;
  PGconn* conn_ = nullptr;
  std::string server_said_;
};

auto pg_listener::session::open() -> bool {
  const pg_conninfo info{owner_.conninfo_, owner_.application_name_};
  const auto keys = info.keywords();
  const auto values = info.values();
  // The asynchronous connect, so stop() need not wait out connect_timeout.
  conn_ = PQconnectStartParams(keys.data(), values.data(), /*expand_dbname=*/1);
  if (conn_ == nullptr) {
    error = "postgresql: out of memory";
    return false;
  }
  const auto deadline = clock::now() + connect_timeout(conn_).value_or(std::chrono::hours(24));
  auto status = PQstatus(conn_) == CONNECTION_BAD ? PGRES_POLLING_FAILED : PGRES_POLLING_WRITING;
  while (status != PGRES_POLLING_OK) {
    if (status == PGRES_POLLING_FAILED) {
      fail();
      return false;
    }
    const short events = status == PGRES_POLLING_READING ? POLLIN : POLLOUT;
    switch (wait_for(PQsocket(conn_), events, owner_.wake_fd_, deadline)) {
      case wait_result::woken:
        return false;
      case wait_result::timed_out:
        error = "postgresql: connect timed out";
        return false;
      case wait_result::ready:
        status = PQconnectPoll(conn_);
        break;
    }
  }
  PQsetNoticeReceiver(conn_, remember_notice, this);
  // A probe must never block in send() on a dead peer; await_results flushes.
  if (PQsetnonblocking(conn_, 1) != 0) {
    fail();
    return false;
  }
  std::string sql;
  for (const auto& channel : owner_.channels_) {
    char* quoted = PQescapeIdentifier(conn_, channel.data(), channel.size());
    if (quoted == nullptr) {
      fail();
      return false;
    }
    sql += "LISTEN ";
    sql += quoted;
    sql += ';';
    PQfreemem(quoted);
  }
  if (sql.empty()) return true;
  if (PQsendQuery(conn_, sql.c_str()) == 0) {
    fail();
    return false;
  }
  return await_results(clock::now() + owner_.options_.probe_timeout, /*deliver=*/false);
}

void pg_listener::session::serve() {
  auto next_probe = clock::now() + owner_.options_.probe_interval;
  for (;;) {
    deliver_notifications();
    switch (wait_for(PQsocket(conn_), POLLIN, owner_.wake_fd_, next_probe)) {
      case wait_result::woken:
        return;
      case wait_result::ready:
        if (PQconsumeInput(conn_) == 0 || PQstatus(conn_) != CONNECTION_OK) {
          fail();
          return;
        }
        // The server just spoke, so the connection is not half-open: no probe needed yet.
        next_probe = clock::now() + owner_.options_.probe_interval;
        break;
      case wait_result::timed_out:
        if (PQsendQuery(conn_, "SELECT 1") == 0) {
          fail();
          return;
        }
        if (!await_results(clock::now() + owner_.options_.probe_timeout, /*deliver=*/true)) {
          deliver_notifications();  // those that did arrive still count
          return;
        }
        next_probe = clock::now() + owner_.options_.probe_interval;
        break;
    }
  }
}

// Reads the results of the query just sent, until `deadline`; true if all succeeded.
auto pg_listener::session::await_results(clock::time_point deadline, bool deliver) -> bool {
  bool ok = true;
  for (;;) {
    const int unsent = PQflush(conn_);
    if (unsent < 0) {
      fail();
      return false;
    }
    if (unsent == 0 && PQisBusy(conn_) == 0) {
      PGresult* result = PQgetResult(conn_);
      if (result == nullptr) return ok;
      const auto status = PQresultStatus(result);
      if (ok && status != PGRES_COMMAND_OK && status != PGRES_TUPLES_OK) {
        fail(result);
        ok = false;
      }
      PQclear(result);
      continue;
    }
    const short events = unsent == 1 ? POLLIN | POLLOUT : POLLIN;
    switch (wait_for(PQsocket(conn_), events, owner_.wake_fd_, deadline)) {
      case wait_result::woken:
        return false;
      case wait_result::timed_out:
        error = "postgresql: no answer within " +
                std::to_string(owner_.options_.probe_timeout.count()) + " ms";
        return false;
      case wait_result::ready:
        if (PQconsumeInput(conn_) == 0) {
          fail();
          return false;
        }
        if (deliver) deliver_notifications();
        break;
    }
  }
}

void pg_listener::session::deliver_notifications() {
  while (PGnotify* n = PQnotifies(conn_)) {
    asio::post(owner_.ex_, [h = owner_.handlers_, channel = std::string(n->relname),
                            payload = std::string(n->extra)]() mutable {
      if (!h->stopped && h->on_notify) h->on_notify(std::move(channel), std::move(payload));
    });
    PQfreemem(n);
  }
}

pg_listener::pg_listener(asio::any_io_executor ex, std::string conninfo,
                         std::string application_name, std::vector<std::string> channels,
                         notify_handler on_notify, state_handler on_state,
                         pg_listener_options options)
    : ex_(std::move(ex)),
      conninfo_(std::move(conninfo)),
      application_name_(std::move(application_name)),
      channels_(std::move(channels)),
      options_(options),
      handlers_(std::make_shared<handlers>()) {
  handlers_->on_notify = std::move(on_notify);
  handlers_->on_state = std::move(on_state);
}

pg_listener::~pg_listener() {
  stop();
}

void pg_listener::start() {
  if (thread_.joinable() || stopping_) return;
  if (wake_fd_ < 0) wake_fd_ = ::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  if (wake_fd_ < 0) throw std::system_error(errno, std::system_category(), "eventfd");
  thread_ = std::thread([this] { run(); });
}

void pg_listener::stop() {
  handlers_->stopped = true;
  stopping_ = true;
  if (wake_fd_ >= 0) {
    const std::uint64_t one = 1;
    // Only fails if the counter is about to overflow, and then it is readable anyway.
    [[maybe_unused]] const auto written = ::write(wake_fd_, &one, sizeof one);
  }
  if (thread_.joinable()) thread_.join();
  if (wake_fd_ >= 0) ::close(wake_fd_);
  wake_fd_ = -1;
}

void pg_listener::run() {
  const auto post_state = [this](bool listening) {
    asio::post(ex_, [h = handlers_, listening] {
      if (!h->stopped && h->on_state) h->on_state(listening);
    });
  };
  auto backoff = options_.first_backoff;
  bool failing = false;  // one log line per outage, not one per attempt
  try {
    while (!stopping_) {
      {
        session s(*this);
        if (s.open()) {
          if (failing) log("postgresql listener: listening again");
          backoff = options_.first_backoff;
          post_state(true);
          s.serve();
          if (stopping_) break;
          log("postgresql listener: connection lost, reconnecting: %s", s.error.c_str());
          failing = true;
          post_state(false);
        } else if (stopping_) {
          break;
        } else if (!failing) {
          log("postgresql listener: cannot connect, retrying: %s", s.error.c_str());
          failing = true;
        }
      }  // the connection is closed before the wait
      if (wait_for(-1, 0, wake_fd_, clock::now() + backoff) == wait_result::woken) break;
      // At least 1 ms, so a zero first_backoff cannot make a busy loop.
      backoff = std::min(std::max(backoff * 2, std::chrono::milliseconds(1)), options_.max_backoff);
    }
  } catch (const std::exception& e) {
    // Nothing to hand it to on this thread; the owner sees the listener as not listening.
    log("postgresql listener: stopped: %s", e.what());
    post_state(false);
  }
}

}  // namespace service
