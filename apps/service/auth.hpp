// procpool-service - the front door: which requests need a token, whether the one presented is
// valid and may do what is asked, and the rate limit. Checked before any endpoint runs.
#pragma once

#include <boost/asio/awaitable.hpp>
#include <chrono>
#include <cstdint>
#include <optional>
#include <string>
#include <unordered_map>

#include "api.hpp"
#include "database.hpp"
#include "rate_limit.hpp"
#include "tokens.hpp"

namespace service {

struct auth_options {
  /// Every endpoint but /healthz and the dashboard's files needs a token.
  bool require_tokens = false;
  /// /metrics needs no token even when tokens are required (for a scraper on a trusted network).
  bool open_metrics = false;
  /// How long a token looked up in the database is trusted before it is looked up again: a
  /// revocation takes effect on every instance within this time. 0: looked up at every request.
  std::chrono::milliseconds cache_for{5'000};
  rate_limit_options rate;
};

/// The scope a request needs; nullopt for the endpoints open to anyone (/healthz, the
/// dashboard's files, and /metrics when `open_metrics`).
[[nodiscard]] auto required_scope(boost::beast::http::verb method, std::string_view path,
                                  bool open_metrics) -> std::optional<token_scope>;

/// The token a request carries: `Authorization: Bearer <token>`, or else the dashboard's session
/// cookie (`procpool_session`, set by POST /session). Empty if none.
struct credentials {
  std::string token;
  bool from_cookie = false;
};
[[nodiscard]] auto presented(const request& req) -> credentials;

/// The answer to a request that would change something and that a browser made for a page of
/// another site (its `Origin` is not this `Host`, or `Sec-Fetch-Site` says cross-site or
/// same-site): 403. A form or script on any web page can make a browser POST to a service on
/// loopback; without tokens nothing else would stop it. Clients that are not browsers send
/// neither header and are not affected. nullopt: not refused.
[[nodiscard]] auto cross_site_refusal(const request& req) -> std::optional<response>;

/// Used on the event loop thread only.
class authenticator {
 public:
  authenticator(database& db, auth_options options)
      : db_(db), options_(options), limiter_(options.rate) {}

  [[nodiscard]] auto require_tokens() const -> bool { return options_.require_tokens; }

  /// nullopt: the request may be served. Otherwise the answer to send instead: 401 (no token, or
  /// one that is unknown or revoked), 403 (a valid token without the scope), 429 (over the rate
  /// limit, with Retry-After), 503 (the database cannot be read). `client` is the peer's address,
  /// the rate limit's key for requests without a token.
  auto check(const request& req, const std::string& client)
      -> boost::asio::awaitable<std::optional<response>>;

  /// /session, for the dashboard (EventSource cannot send an Authorization header, a cookie goes
  /// with every request): POST with `Authorization: Bearer <token>` answers 200 with
  /// `Set-Cookie: procpool_session=<token>; HttpOnly; SameSite=Strict; Path=/` (`Secure` when
  /// `tls`) if the token is valid, 401 if not (429 once `client` has spent its burst on invalid
  /// tokens, as for check); DELETE clears the cookie.
  auto session(const request& req, bool tls, const std::string& client)
      -> boost::asio::awaitable<response>;

  /// The token's record if it is valid (known, not revoked, the secret matches); nullopt if not.
  /// Throws if the database cannot be read.
  auto verify(const std::string& token) -> boost::asio::awaitable<std::optional<token_record>>;

 private:
  /// A token found in the database (revoked ones too); ids not found are not cached.
  struct cached {
    token_record record;
    std::chrono::steady_clock::time_point until;
  };

  database& db_;
  auth_options options_;
  rate_limiter limiter_;
  std::unordered_map<std::int64_t, cached> cache_;
};

}  // namespace service
