#include "auth.hpp"

#include <algorithm>
#include <boost/beast/http/field.hpp>
#include <cctype>

#include "log.hpp"

namespace asio = boost::asio;
namespace http = boost::beast::http;

namespace service {

namespace {

constexpr std::string_view session_cookie = "procpool_session";
// Only tokens found are cached (at most as many as were ever made); the cache is emptied when it
// grows past this all the same.
constexpr std::size_t max_cached = 10'000;

auto json_text(std::string body) -> response {
  response r{http::status::ok, 11};
  r.set(http::field::content_type, "application/json");
  r.set(http::field::cache_control, "no-store");
  r.body() = std::move(body);
  r.prepare_payload();
  return r;
}

auto too_many(std::int64_t wait) -> response {
  response r =
      error_response(429, "rate limit reached; retry after " + std::to_string(wait) + " s");
  r.set(http::field::retry_after, std::to_string(wait));
  return r;
}

auto unauthorized(const std::string& message, bool invalid_token) -> response {
  response r = error_response(401, message);
  r.set(http::field::www_authenticate, invalid_token
                                           ? R"(Bearer realm="procpool", error="invalid_token")"
                                           : R"(Bearer realm="procpool")");
  return r;
}

// The value of cookie `name` in a Cookie header ("a=1; b=2"), or empty.
auto cookie_value(std::string_view header, std::string_view name) -> std::string_view {
  while (!header.empty()) {
    const auto semi = header.find(';');
    std::string_view pair = header.substr(0, semi);
    header = semi == std::string_view::npos ? std::string_view{} : header.substr(semi + 1);
    while (pair.starts_with(' ')) pair.remove_prefix(1);
    if (pair.size() > name.size() && pair.starts_with(name) && pair[name.size()] == '=') {
      return pair.substr(name.size() + 1);
    }
  }
  return {};
}

}  // namespace

auto required_scope(http::verb method, std::string_view path, bool open_metrics)
    -> std::optional<token_scope> {
  if (path == "/healthz") return std::nullopt;
  if (path == "/metrics" && open_metrics) return std::nullopt;
  // The page and its scripts hold no data; it must load to show its login form.
  if ((path == "/" || path == "/index.html" || path.starts_with("/dashboard/")) &&
      method == http::verb::get) {
    return std::nullopt;
  }
  if (method == http::verb::get || method == http::verb::head) return token_scope::read;
  if (method == http::verb::post && path == "/jobs") return token_scope::submit;
  // Cancel, retry, and any method not listed: the widest scope.
  return token_scope::admin;
}

auto presented(const request& req) -> credentials {
  if (auto h = req.find(http::field::authorization); h != req.end()) {
    std::string_view v = h->value();
    constexpr std::string_view bearer = "Bearer ";
    if (v.size() > bearer.size() && v.substr(0, bearer.size()) == bearer) {
      return {std::string(v.substr(bearer.size())), false};
    }
    return {};
  }
  if (auto h = req.find(http::field::cookie); h != req.end()) {
    return {std::string(cookie_value(h->value(), session_cookie)), true};
  }
  return {};
}

auto authenticator::session(const request& req, bool tls, const std::string& client)
    -> asio::awaitable<response> {
  const std::string attributes =
      std::string("; HttpOnly; SameSite=Strict; Path=/") + (tls ? "; Secure" : "");
  if (req.method() == http::verb::delete_) {
    response r = json_text("{}\n");
    r.set(http::field::set_cookie, std::string(session_cookie) + "=" + attributes + "; Max-Age=0");
    co_return r;
  }
  if (req.method() != http::verb::post) {
    response r = error_response(405, "method not allowed; use POST or DELETE");
    r.set(http::field::allow, "POST, DELETE");
    co_return r;
  }
  const credentials c = presented(req);
  if (c.token.empty() || c.from_cookie) {
    co_return unauthorized("POST /session needs Authorization: Bearer <token>", false);
  }
  std::optional<token_record> record;
  try {
    record = co_await verify(c.token);
  } catch (const std::exception& e) {
    log("cannot check an API token: %s", e.what());
    response r = error_response(503, "the service cannot check tokens now; retry later");
    r.set(http::field::retry_after, "1");
    co_return r;
  }
  if (!record) {
    // Like a request with an invalid token: trying tokens here is limited too.
    if (const auto wait = limiter_.take("address " + client)) co_return too_many(*wait);
    co_return unauthorized("the API token is not valid: unknown or revoked", true);
  }
  response r = json_text("{\"token_id\":" + std::to_string(record->id) + ",\"scope\":\"" +
                         scope_name(record->scope) + "\"}\n");
  // HttpOnly: scripts (an injected one included) cannot read it. SameSite=Strict: other sites'
  // pages cannot make the browser send it.
  r.set(http::field::set_cookie, std::string(session_cookie) + "=" + c.token + attributes);
  co_return r;
}

auto authenticator::verify(const std::string& token)
    -> asio::awaitable<std::optional<token_record>> {
  const auto parsed = parse_token(token);
  if (!parsed) co_return std::nullopt;
  const auto now = std::chrono::steady_clock::now();
  std::optional<token_record> record;
  if (auto it = cache_.find(parsed->id); it != cache_.end() && it->second.until > now) {
    record = it->second.record;
  } else {
    const std::int64_t id = parsed->id;
    auto lookup = [id](store& s) { return find_token(s.sql(), id); };
    record = co_await db_.read(lookup);
    if (record && options_.cache_for.count() > 0) {
      if (cache_.size() >= max_cached) cache_.clear();
      cache_[id] = {*record, std::chrono::steady_clock::now() + options_.cache_for};
    }
  }
  if (!record || record->revoked_ms != 0 || !secret_matches(parsed->secret, record->hash)) {
    co_return std::nullopt;
  }
  co_return record;
}

auto cross_site_refusal(const request& req) -> std::optional<response> {
  const auto method = req.method();
  if (method == http::verb::get || method == http::verb::head || method == http::verb::options) {
    return std::nullopt;
  }
  const std::string_view fetch_site = req["Sec-Fetch-Site"];
  const bool other_site = fetch_site == "cross-site" || fetch_site == "same-site";
  const std::string_view origin = req[http::field::origin];
  bool other_origin = false;
  if (!origin.empty()) {
    const auto scheme_end = origin.find("://");
    const std::string_view authority =
        scheme_end == std::string_view::npos ? std::string_view{} : origin.substr(scheme_end + 3);
    const std::string_view host = req[http::field::host];
    other_origin =
        authority.empty() || authority.size() != host.size() ||
        !std::equal(authority.begin(), authority.end(), host.begin(), [](char a, char b) {
          return std::tolower(static_cast<unsigned char>(a)) ==
                 std::tolower(static_cast<unsigned char>(b));
        });
  }
  if (!other_site && !other_origin) return std::nullopt;
  return error_response(403, "a request another site's page made (Origin: " +
                                 std::string(origin.empty() ? "-" : origin) +
                                 ") may not change anything here");
}

auto authenticator::check(const request& req, const std::string& client)
    -> asio::awaitable<std::optional<response>> {
  if (auto refused = cross_site_refusal(req)) co_return refused;
  const std::string_view target = req.target();
  const std::string_view path = target.substr(0, target.find('?'));
  const auto needed = required_scope(req.method(), path, options_.open_metrics);
  if (!needed) co_return std::nullopt;
  std::string key = "address " + client;
  if (options_.require_tokens) {
    const credentials c = presented(req);
    const std::string& token = c.token;
    // A request without a valid token counts against its address's bucket: a client trying
    // tokens gets 429 like any other, once its burst is spent.
    const auto refused_at_address = [&]() { return limiter_.take(key); };
    if (token.empty()) {
      if (const auto wait = refused_at_address()) co_return too_many(*wait);
      co_return unauthorized(
          "this service requires an API token: send Authorization: Bearer <token> (an operator "
          "makes one with: procpool-service token create --scope read|submit|admin)",
          false);
    }
    std::optional<token_record> record;
    try {
      record = co_await verify(token);
    } catch (const std::exception& e) {
      log("cannot check an API token: %s", e.what());
      response r = error_response(503, "the service cannot check tokens now; retry later");
      r.set(http::field::retry_after, "1");
      co_return r;
    }
    if (!record) {
      if (const auto wait = refused_at_address()) co_return too_many(*wait);
      co_return unauthorized(
          "the API token is not valid: unknown, revoked, or made for another database", true);
    }
    if (record->scope < *needed) {
      response r = error_response(
          403, std::string("this needs a token with scope '") + scope_name(*needed) + "'; token " +
                   std::to_string(record->id) + " has '" + scope_name(record->scope) + "'");
      r.set(http::field::www_authenticate,
            std::string(R"(Bearer realm="procpool", error="insufficient_scope", scope=")") +
                scope_name(*needed) + "\"");
      co_return r;
    }
    // A cookie goes with every request the browser makes to this origin, also those another
    // page triggers: a change made with one must carry a header no form or link can set
    // (SameSite=Strict already keeps other sites' requests from carrying the cookie; this is the
    // second line).
    if (c.from_cookie && req.method() != http::verb::get && req.method() != http::verb::head &&
        req["X-Procpool-Request"] != "1") {
      co_return error_response(403,
                               "a request signed in by the session cookie that changes something "
                               "needs the header X-Procpool-Request: 1");
    }
    key = "token " + std::to_string(record->id);
  }
  if (const auto wait = limiter_.take(key)) co_return too_many(*wait);
  co_return std::nullopt;
}

}  // namespace service
