// procpool-service - a token bucket per client (an API token, or an address when there is none).
#pragma once

#include <chrono>
#include <cstdint>
#include <optional>
#include <string>
#include <unordered_map>

namespace service {

/// `rate` requests per `per`, with bursts of up to `burst`. rate 0: no limit.
struct rate_limit_options {
  double rate = 0;
  std::chrono::steady_clock::duration per = std::chrono::seconds(1);
  double burst = 0;  ///< 0: the same as rate
};

/// Parses "20/s", "600/min", "1000/h" (and "20", per second); throws std::invalid_argument
/// saying what is expected.
auto parse_rate(const std::string& text) -> rate_limit_options;

/// Each key has a bucket of `burst` requests that refills at `rate`; a request takes one. Used on
/// the event loop thread only.
class rate_limiter {
 public:
  explicit rate_limiter(rate_limit_options options) : options_(options) {}

  [[nodiscard]] auto enabled() const -> bool { return options_.rate > 0; }
  /// nullopt: allowed (and counted). Otherwise refused: the whole seconds until a request of
  /// `key` would be allowed (at least 1).
  auto take(const std::string& key,
            std::chrono::steady_clock::time_point now = std::chrono::steady_clock::now())
      -> std::optional<std::int64_t>;

 private:
  struct bucket {
    double tokens = 0;
    std::chrono::steady_clock::time_point at;
  };
  [[nodiscard]] auto burst() const -> double {
    return options_.burst > 0 ? options_.burst : options_.rate;
  }
  [[nodiscard]] auto per_second() const -> double;
  void forget_full_buckets(std::chrono::steady_clock::time_point now);

  rate_limit_options options_;
  std::unordered_map<std::string, bucket> buckets_;
};

}  // namespace service
