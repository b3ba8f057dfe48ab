#include "rate_limit.hpp"

#include <algorithm>
#include <charconv>
#include <cmath>
#include <stdexcept>

namespace service {

namespace {

// Beyond this many clients, buckets that have refilled completely are dropped: a full bucket is
// the same as no bucket, so forgetting it changes nothing but the memory held.
constexpr std::size_t max_buckets = 10'000;

}  // namespace

auto parse_rate(const std::string& text) -> rate_limit_options {
  const auto fail = [&] {
    return std::invalid_argument(
        "--rate-limit: expected requests per time such as 20/s, 600/min "
        "or 1000/h, got '" +
        text + "'");
  };
  const auto slash = text.find('/');
  const std::string number = text.substr(0, slash);
  const std::string unit = slash == std::string::npos ? "s" : text.substr(slash + 1);
  double rate = 0;
  const auto [end, ec] = std::from_chars(number.data(), number.data() + number.size(), rate);
  if (ec != std::errc{} || end != number.data() + number.size() || !(rate >= 0) || rate > 1e9) {
    throw fail();
  }
  rate_limit_options o;
  o.rate = rate;
  if (unit == "s") {
    o.per = std::chrono::seconds(1);
  } else if (unit == "min") {
    o.per = std::chrono::minutes(1);
  } else if (unit == "h") {
    o.per = std::chrono::hours(1);
  } else {
    throw fail();
  }
  return o;
}

auto rate_limiter::per_second() const -> double {
  return options_.rate / std::chrono::duration<double>(options_.per).count();
}

auto rate_limiter::take(const std::string& key, std::chrono::steady_clock::time_point now)
    -> std::optional<std::int64_t> {
  if (!enabled()) return std::nullopt;
  if (buckets_.size() >= max_buckets) forget_full_buckets(now);
  auto [it, added] = buckets_.try_emplace(key, bucket{burst(), now});
  bucket& b = it->second;
  if (!added) {
    const double elapsed = std::chrono::duration<double>(now - b.at).count();
    b.tokens = std::min(burst(), b.tokens + elapsed * per_second());
    b.at = now;
  }
  if (b.tokens >= 1) {
    b.tokens -= 1;
    return std::nullopt;
  }
  const double wait = (1 - b.tokens) / per_second();
  return std::max<std::int64_t>(1, static_cast<std::int64_t>(std::ceil(wait)));
}

void rate_limiter::forget_full_buckets(std::chrono::steady_clock::time_point now) {
  std::erase_if(buckets_, [&](const auto& entry) {
    const double elapsed = std::chrono::duration<double>(now - entry.second.at).count();
    return entry.second.tokens + elapsed * per_second() >= burst();
  });
}

}  // namespace service
