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
  auto backoff = options_.first_backoff;
  for (int attempt = 1; url && !stopping_; ++attempt) {
    std::string why;
    std::chrono::milliseconds wait = backoff;
    try {
      const http_headers headers = {{"Idempotency-Key", key},
                                    {"X-Procpool-Attempt", std::to_string(attempt)}};
      const http_reply reply = co_await http_call(ex_, *url, boost::beast::http::verb::post, body,
                                                  headers, options_.attempt_timeout);
      if (reply.status >= 200 && reply.status < 300) {
        ++metrics_.webhook_delivered;
        co_await db_.run([id = j.id](store& s) {
          s.set_notification(id, notification_state::delivered);
          return 0;
        });
        co_return;
      }
      why = "HTTP " + std::to_string(reply.status);
      if (!reply.retry_after.empty() &&
          reply.retry_after.find_first_not_of("0123456789") == std::string::npos &&
          reply.retry_after.size() < 6) {
        wait = std::chrono::seconds(std::stoi(reply.retry_after));
      }
    } catch (const boost::system::system_error& e) {
      why = e.code().message();
    }
    if (attempt >= options_.attempts) {
      log("webhook for job %lld to %s failed after %d attempts (last: %s)",
          static_cast<long long>(j.id), j.notify_url.c_str(), attempt, why.c_str());
      break;
    }
    ++metrics_.webhook_retries;
    asio::steady_timer timer(ex_, std::min(wait, options_.max_backoff));
    backoff_timers_.insert(&timer);
    boost::system::error_code ec;
    co_await timer.async_wait(asio::redirect_error(asio::use_awaitable, ec));
    backoff_timers_.erase(&timer);
    backoff = std::min(backoff * 2, options_.max_backoff);
  }
  if (stopping_) co_return;  // stays pending: delivered again at the next start
  ++metrics_.webhook_failed;
  co_await db_.run([id = j.id](store& s) {
    s.set_notification(id, notification_state::failed);
    return 0;
  });
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
