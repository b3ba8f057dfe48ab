// procpool-service - webhooks: a POST to a job's notify_url when it ends, at least once.
#pragma once

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/awaitable.hpp>
#include <boost/asio/steady_timer.hpp>
#include <chrono>
#include <cstddef>
#include <memory>
#include <set>
#include <string>

#include "address_policy.hpp"
#include "database.hpp"
#include "http_client.hpp"
#include "job.hpp"
#include "metrics.hpp"

namespace service {

struct notifier_options {
  /// Attempts per webhook before it is marked failed (the first try included).
  int attempts = 6;
  /// Wait before the first retry; doubled after each failure, up to max_backoff. A 429 or 503
  /// with Retry-After waits that long instead (within max_backoff).
  std::chrono::milliseconds first_backoff{200};
  std::chrono::milliseconds max_backoff{10'000};
  /// Bound on one attempt (connect, send, answer).
  std::chrono::milliseconds attempt_timeout{5'000};
  /// Signs every delivery (Procpool-Signature) when not empty.
  std::string secret = {};
  /// Checked on every address a notify_url resolves to, right before connecting.
  address_policy addresses = {};
  /// For https:// notify URLs: whom to trust.
  std::shared_ptr<boost::asio::ssl::context> tls = {};
};

/// Delivers each final job to its notify_url: POST of the job's JSON with headers
/// `Idempotency-Key: <service id>-<job id>` (the same on every attempt and after a restart, so a
/// receiver can drop duplicates), `X-Procpool-Attempt: n` and, with a secret,
/// `Procpool-Signature: t=<unix seconds>,v1=<HMAC-SHA256 of "<t>." + body>`. A 2xx answer counts
/// as delivered; anything else (a 3xx too: redirects are not followed) is retried with
/// exponential back-off, except an address the policy refuses, which fails at once. The outcome
/// is stored in the job (notification: delivered or failed, and notification_error); a delivery
/// still pending when the service stops is made again at the next start, hence "at least once".
/// Used on the event loop thread only.
class notifier {
 public:
  notifier(boost::asio::any_io_executor ex, database& db, service_metrics& metrics,
           notifier_options options);

  /// Starts delivering `j` (a final job with a notify_url) in the background.
  void deliver(job j);
  [[nodiscard]] auto in_flight() const -> std::size_t { return in_flight_; }
  /// Completes when no delivery is in flight, or at `deadline`; true if none is left.
  auto wait_idle(std::chrono::steady_clock::time_point deadline) -> boost::asio::awaitable<bool>;
  /// Stops retrying: deliveries waiting for their next attempt end now and stay pending in the
  /// database for the next start.
  void stop();

 private:
  auto run(job j) -> boost::asio::awaitable<void>;
  boost::asio::any_io_executor ex_;
  database& db_;
  service_metrics& metrics_;
  notifier_options options_;
  std::size_t in_flight_ = 0;
  bool stopping_ = false;
  std::set<boost::asio::steady_timer*> backoff_timers_;
  boost::asio::steady_timer idle_;
};

}  // namespace service
