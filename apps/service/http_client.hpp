// procpool-service - a small HTTP/1.1 client (Beast) for webhooks and the demo.
#pragma once

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/awaitable.hpp>
#include <boost/beast/http/verb.hpp>
#include <chrono>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace service {

/// An `http://host[:port][/path]` URL. Only plain HTTP: a webhook receiver behind TLS sits behind
/// a local proxy (the README says why).
struct http_url {
  std::string host;
  std::string port = "80";
  std::string target = "/";
};

/// The URL's parts, or nullopt if it is not a plain-HTTP URL with a host.
[[nodiscard]] auto parse_http_url(std::string_view text) -> std::optional<http_url>;

struct http_reply {
  unsigned status = 0;
  std::string body;
  std::string retry_after;  ///< the Retry-After header, if any
};

using http_headers = std::vector<std::pair<std::string, std::string>>;

/// One request on a new connection, bounded by `timeout` as a whole (resolve, connect, write,
/// read). Throws boost::system::system_error on a network failure or timeout.
auto http_call(boost::asio::any_io_executor ex, const http_url& url, boost::beast::http::verb verb,
               std::string body, const http_headers& headers, std::chrono::milliseconds timeout)
    -> boost::asio::awaitable<http_reply>;

}  // namespace service
