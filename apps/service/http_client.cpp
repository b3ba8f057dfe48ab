#include "http_client.hpp"

#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/core/tcp_stream.hpp>
#include <boost/beast/http/read.hpp>
#include <boost/beast/http/string_body.hpp>
#include <boost/beast/http/write.hpp>

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;

namespace service {

auto parse_http_url(std::string_view text) -> std::optional<http_url> {
  constexpr std::string_view scheme = "http://";
  if (text.size() > 2048 || !text.starts_with(scheme)) return std::nullopt;
  text.remove_prefix(scheme.size());
  http_url url;
  const auto slash = text.find('/');
  std::string_view authority = text.substr(0, slash);
  if (slash != std::string_view::npos) url.target = std::string(text.substr(slash));
  if (authority.find('@') != std::string_view::npos) return std::nullopt;
  if (const auto colon = authority.rfind(':'); colon != std::string_view::npos) {
    const auto port = authority.substr(colon + 1);
    if (port.empty() || port.size() > 5 ||
        port.find_first_not_of("0123456789") != std::string_view::npos ||
        std::stoi(std::string(port)) > 65535) {
      return std::nullopt;
    }
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
  for (char c : url.target) {
    if (static_cast<unsigned char>(c) <= ' ' || c == 0x7f) return std::nullopt;
  }
  return url;
}

auto http_call(asio::any_io_executor ex, const http_url& url, http::verb verb, std::string body,
               const http_headers& headers, std::chrono::milliseconds timeout)
    -> asio::awaitable<http_reply> {
  beast::tcp_stream stream(ex);
  stream.expires_after(timeout);
  asio::ip::tcp::resolver resolver(ex);
  const auto endpoints = co_await resolver.async_resolve(url.host, url.port, asio::use_awaitable);
  co_await stream.async_connect(endpoints, asio::use_awaitable);

  http::request<http::string_body> req{verb, url.target, 11};
  req.set(http::field::host, url.host + ":" + url.port);
  req.set(http::field::user_agent, "procpool-service");
  for (const auto& [name, value] : headers) req.set(name, value);
  if (!body.empty() || verb == http::verb::post) {
    req.set(http::field::content_type, "application/json");
    req.body() = std::move(body);
  }
  req.keep_alive(false);
  req.prepare_payload();
  co_await http::async_write(stream, req, asio::use_awaitable);

  beast::flat_buffer buffer;
  http::response_parser<http::string_body> parser;
  parser.body_limit(1 << 20);
  co_await http::async_read(stream, buffer, parser, asio::use_awaitable);
  auto res = parser.release();
  boost::system::error_code ignored;
  stream.socket().shutdown(asio::ip::tcp::socket::shutdown_both, ignored);
  http_reply reply{res.result_int(), std::move(res.body()), {}};
  if (auto it = res.find(http::field::retry_after); it != res.end()) {
    reply.retry_after = std::string(it->value());
  }
  co_return reply;
}

}  // namespace service
