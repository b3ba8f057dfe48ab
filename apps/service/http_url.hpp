// procpool-service - the http:// and https:// URLs the service calls (webhooks, the demo).
#pragma once

#include <optional>
#include <string>
#include <string_view>

namespace service {

/// An `http://` or `https://` URL: `scheme://host[:port][/path]`, the host a DNS name, an IPv4
/// address or a bracketed IPv6 address (`[2001:db8::1]`).
struct http_url {
  std::string host;  ///< without brackets
  std::string port = "80";
  std::string target = "/";
  bool tls = false;  ///< https://
};

/// The URL's parts, or nullopt if it is not an http:// or https:// URL with a host (user info,
/// `user@host`, is refused: it would be sent nowhere and only hides the real host).
[[nodiscard]] auto parse_http_url(std::string_view text) -> std::optional<http_url>;

}  // namespace service
