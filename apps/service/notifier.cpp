#include "notifier.hpp"

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/redirect_error.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/json/serialize.hpp>
#include <cstdio>
#include <string>

#include "background.hpp"
#include "http_client.hpp"
#include "log.hpp"
#include "webhook_signature.hpp"

namespace asio = boost::asio;

namespace service {

notifier::notifier(asio::any_io_executor ex, database& db, service_metrics& metrics,
                   notifier_options options)
    : ex_(ex), db_(db), metrics_(metrics), options_(options), idle_(ex) {}

void notifier::deliver(job j) {
  ++in_flight_;
  asio::co_spawn(ex_, run(std::move(j)), report_failure("webhook", [this] {
                   if (--in_flight_ == 0) idle_.cancel();
                 }));
}

auto notifier::run(job j) -> asio::awaitable<void> {
  const auto url = parse_http_url(j.notify_url);
  const std::string key = db_.service_id() + "-" + std::to_string(j.id);
  const std::string body = boost::json::serialize(to_json(j));
  http_connect_options connect;
  connect.screen = [this](const asio::ip::address& a) { return options_.addresses.check(a); };
  connect.tls = options_.tls;
  auto backoff = options_.first_backoff;
  // A notify_url stored before this version's checks, and no longer accepted, fails at once.
  std::string why = url ? "" : "not an http:// or https:// URL";
  for (int attempt = 1; url && !stopping_; ++attempt) {
    std::chrono::milliseconds wait = backoff;
    bool retry = true;
    try {
      http_headers headers = {{"Idempotency-Key", key},
                              {"X-Procpool-Attempt", std::to_string(attempt)}};
      if (!options_.secret.empty()) {
        // Signed with the time of this attempt: a receiver bounds how old a delivery may be.
        const auto now = std::chrono::duration_cast<std::chrono::seconds>(
                             std::chrono::system_clock::now().time_since_epoch())
                             .count();
        headers.emplace_back(signature_header, webhook_signature(options_.secret, now, body));
      }
      const http_reply reply = co_await http_call(ex_, *url, boost::beast::http::verb::post, body,
                                                  headers, options_.attempt_timeout, connect);
      if (reply.status >= 200 && reply.status < 300) {
        ++metrics_.webhook_delivered;
        co_await db_.run([id = j.id](store& s) {
          s.set_notification(id, notification_state::delivered);
          return 0;
        });
        co_return;
      }
      why = "HTTP " + std::to_string(reply.status);
      if (reply.status >= 300 && reply.status < 400) why += " (redirects are not followed)";
      if (!reply.retry_after.empty() &&
          reply.retry_after.find_first_not_of("0123456789") == std::string::npos &&
          reply.retry_after.size() < 6) {
        wait = std::chrono::seconds(std::stoi(reply.retry_after));
      }
    } catch (const http_call_error& e) {
      why = e.what();
      retry = e.retry();
      if (!retry) ++metrics_.webhook_refused;
    } catch (const boost::system::system_error& e) {
      why = e.code().message();
    }
    if (attempt >= options_.attempts || !retry) {
      log("webhook for job %lld to %s failed after %d attempt%s (last: %s)",
          static_cast<long long>(j.id), j.notify_url.c_str(), attempt, attempt == 1 ? "" : "s",
          why.c_str());
      break;
    }
    ++metrics_.webhook_retries;
    // Still pending, but GET /jobs/{id} shows why the last attempt failed.
    // Named before the co_await: GCC 12 miscompiles a lambda capturing a string inside one.
    auto note_pending = [id = j.id, why](store& s) {
      s.set_notification(id, notification_state::pending, why);
      return 0;
    };
    try {
      co_await db_.run(std::move(note_pending));
    } catch (const std::exception&) {
      // Only informative: a database outage must not end the delivery (its end is written
      // after the last attempt, or it stays pending for the next start).
    }
    asio::steady_timer timer(ex_, std::min(wait, options_.max_backoff));
    backoff_timers_.insert(&timer);
    boost::system::error_code ec;
    co_await timer.async_wait(asio::redirect_error(asio::use_awaitable, ec));
    backoff_timers_.erase(&timer);
    backoff = std::min(backoff * 2, options_.max_backoff);
  }
  if (stopping_) co_return;  // stays pending: delivered again at the next start
  ++metrics_.webhook_failed;
  auto note_failed = [id = j.id, why](store& s) {
    s.set_notification(id, notification_state::failed, why);
    return 0;
  };
  co_await db_.run(std::move(note_failed));
}

auto notifier::wait_idle(std::chrono::steady_clock::time_point deadline) -> asio::awaitable<bool> {
  while (in_flight_ > 0 && std::chrono::steady_clock::now() < deadline) {
    idle_.expires_at(deadline);
    boost::system::error_code ec;
    co_await idle_.async_wait(asio::redirect_error(asio::use_awaitable, ec));
  }
  co_return in_flight_ == 0;
}

void notifier::stop() {
  stopping_ = true;
  for (auto* t : backoff_timers_) t->cancel();
}

}  // namespace service
