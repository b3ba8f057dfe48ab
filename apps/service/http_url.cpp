// procpool-service - URLs for webhooks and the demo (see http_url.hpp).
#include "http_url.hpp"

#include <boost/asio/ip/address.hpp>

namespace service {

namespace {

auto valid_port(std::string_view port) -> bool {
  return !port.empty() && port.size() <= 5 &&
         port.find_first_not_of("0123456789") == std::string_view::npos &&
         std::stoi(std::string(port)) <= 65535;
}

}  // namespace

auto parse_http_url(std::string_view text) -> std::optional<http_url> {
  http_url url;
  if (text.size() > 2048) return std::nullopt;
  if (text.starts_with("https://")) {
    url.tls = true;
    url.port = "443";
    text.remove_prefix(8);
  } else if (text.starts_with("http://")) {
    text.remove_prefix(7);
  } else {
    return std::nullopt;
  }
  const auto slash = text.find('/');
  std::string_view authority = text.substr(0, slash);
  if (slash != std::string_view::npos) url.target = std::string(text.substr(slash));
  if (authority.find('@') != std::string_view::npos) return std::nullopt;
  if (authority.starts_with('[')) {
    // An IPv6 literal: [address] or [address]:port.
    const auto close = authority.find(']');
    if (close == std::string_view::npos) return std::nullopt;
    url.host = std::string(authority.substr(1, close - 1));
    boost::system::error_code ec;
    const auto a = boost::asio::ip::make_address_v6(url.host, ec);
    if (ec || a.scope_id() != 0) return std::nullopt;
    const auto rest = authority.substr(close + 1);
    if (!rest.empty()) {
      if (!rest.starts_with(':') || !valid_port(rest.substr(1))) return std::nullopt;
      url.port = std::string(rest.substr(1));
    }
  } else {
    if (const auto colon = authority.rfind(':'); colon != std::string_view::npos) {
      const auto port = authority.substr(colon + 1);
      if (!valid_port(port)) return std::nullopt;
      url.port = std::string(port);
      authority = authority.substr(0, colon);
    }
    if (authority.empty() ||
        authority.find_first_not_of(
            "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.-") !=
            std::string_view::npos) {
      return std::nullopt;
    }
    url.host = std::string(authority);
  }
  for (char c : url.target) {
    if (static_cast<unsigned char>(c) <= ' ' || c == 0x7f) return std::nullopt;
  }
  return url;
}

}  // namespace service
