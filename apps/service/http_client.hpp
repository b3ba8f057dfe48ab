// procpool-service - a small HTTP/1.1 client (Beast) for webhooks and the demo, over TCP or TLS.
#pragma once

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/awaitable.hpp>
#include <boost/asio/ip/address.hpp>
#include <boost/beast/http/verb.hpp>
#include <chrono>
#include <functional>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "http_url.hpp"

namespace boost::asio::ssl {
class context;
}

namespace service {

struct http_reply {
  unsigned status = 0;
  std::string body;
  std::string retry_after;  ///< the Retry-After header, if any
};

using http_headers = std::vector<std::pair<std::string, std::string>>;

/// A call that failed for a reason best said in words: an address the connect policy refused, a
/// certificate that did not verify. `retry` is false when trying again cannot help (the policy
/// will refuse the same address again).
class http_call_error : public std::runtime_error {
 public:
  http_call_error(const std::string& what, bool retry) : std::runtime_error(what), retry_(retry) {}
  [[nodiscard]] auto retry() const -> bool { return retry_; }

 private:
  bool retry_;
};

/// Where a call may connect and whom it trusts.
struct http_connect_options {
  /// Called with each resolved address right before connecting to it: "" to go ahead, or why
  /// not (the address is skipped; if all are, the call fails with http_call_error, no retry).
  /// Checked at connect time, not when a URL is accepted, so that a name resolving elsewhere
  /// later (DNS rebinding) is caught.
  std::function<std::string(const boost::asio::ip::address&)> screen = {};
  /// For https:// URLs (see make_tls_client_context); an https:// URL without one fails.
  std::shared_ptr<boost::asio::ssl::context> tls = {};
};

/// A TLS client context: TLS 1.2 or later, peers verified against the system's CAs plus the PEM
/// file `extra_ca_file` if not empty. Throws std::runtime_error if that file cannot be loaded.
[[nodiscard]] auto make_tls_client_context(const std::string& extra_ca_file)
    -> std::shared_ptr<boost::asio::ssl::context>;

/// One request on a new connection, bounded by `timeout` as a whole (resolve, connect, TLS
/// handshake, write, read). Redirects are not followed: a 3xx is returned like any answer.
/// Throws boost::system::system_error on a network failure or timeout, http_call_error as said
/// above. For https:// the server's certificate must verify and name the URL's host.
auto http_call(boost::asio::any_io_executor ex, const http_url& url, boost::beast::http::verb verb,
               std::string body, const http_headers& headers, std::chrono::milliseconds timeout,
               const http_connect_options& connect = {}) -> boost::asio::awaitable<http_reply>;

}  // namespace service
