#include "http_client.hpp"

#include <openssl/ssl.h>
#include <openssl/x509_vfy.h>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/ssl/context.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/core/tcp_stream.hpp>
#include <boost/beast/http/read.hpp>
#include <boost/beast/http/string_body.hpp>
#include <boost/beast/http/write.hpp>
#include <boost/beast/ssl/ssl_stream.hpp>

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
namespace ssl = asio::ssl;
using asio::ip::tcp;

namespace service {

namespace {

auto is_ip_literal(const std::string& host) -> bool {
  boost::system::error_code ec;
  asio::ip::make_address(host, ec);
  return !ec;
}

// Connects to the first resolved address the policy allows and that answers.
auto connect(beast::tcp_stream& stream, const http_url& url, const http_connect_options& options)
    -> asio::awaitable<void> {
  tcp::resolver resolver(stream.get_executor());
  const auto endpoints = co_await resolver.async_resolve(url.host, url.port, asio::use_awaitable);
  std::string refused;
  const auto screen = [&](const boost::system::error_code&, const tcp::endpoint& ep) {
    if (!options.screen) return true;
    std::string why = options.screen(ep.address());
    if (why.empty()) return true;
    if (refused.empty()) refused = std::move(why);
    return false;
  };
  auto [ec, ep] =
      co_await stream.async_connect(endpoints, screen, asio::as_tuple(asio::use_awaitable));
  if (ec == asio::error::not_found && !refused.empty()) {
    // Every address was refused (none was tried): the same URL will be refused again.
    throw http_call_error(refused, false);
  }
  if (ec) throw boost::system::system_error(ec);
}

template <class Stream>
auto exchange(Stream& stream, const http_url& url, http::verb verb, std::string body,
              const http_headers& headers) -> asio::awaitable<http_reply> {
  http::request<http::string_body> req{verb, url.target, 11};
  const std::string host =
      url.host.find(':') == std::string::npos ? url.host : "[" + url.host + "]";
  req.set(http::field::host, host + ":" + url.port);
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
  http_reply reply{res.result_int(), std::move(res.body()), {}};
  if (auto it = res.find(http::field::retry_after); it != res.end()) {
    reply.retry_after = std::string(it->value());
  }
  co_return reply;
}

}  // namespace

auto make_tls_client_context(const std::string& extra_ca_file) -> std::shared_ptr<ssl::context> {
  auto ctx = std::make_shared<ssl::context>(ssl::context::tls_client);
  SSL_CTX_set_min_proto_version(ctx->native_handle(), TLS1_2_VERSION);
  ctx->set_options(ssl::context::default_workarounds | ssl::context::no_compression);
  ctx->set_default_verify_paths();
  if (!extra_ca_file.empty()) {
    boost::system::error_code ec;
    ctx->load_verify_file(extra_ca_file, ec);
    if (ec) {
      throw std::runtime_error("--webhook-ca-file " + extra_ca_file +
                               ": cannot load it as PEM certificates (" + ec.message() + ")");
    }
  }
  ctx->set_verify_mode(ssl::verify_peer);
  return ctx;
}

auto http_call(asio::any_io_executor ex, const http_url& url, http::verb verb, std::string body,
               const http_headers& headers, std::chrono::milliseconds timeout,
               const http_connect_options& options) -> asio::awaitable<http_reply> {
  if (!url.tls) {
    beast::tcp_stream stream(ex);
    stream.expires_after(timeout);
    co_await connect(stream, url, options);
    http_reply reply = co_await exchange(stream, url, verb, std::move(body), headers);
    boost::system::error_code ignored;
    stream.socket().shutdown(tcp::socket::shutdown_both, ignored);
    co_return reply;
  }
  if (!options.tls) throw http_call_error("https:// is not set up in this client", false);
  beast::ssl_stream<beast::tcp_stream> stream(ex, *options.tls);
  beast::get_lowest_layer(stream).expires_after(timeout);
  co_await connect(beast::get_lowest_layer(stream), url, options);
  SSL* ssl_handle = stream.native_handle();
  // The certificate must name the URL's host. OpenSSL's own check (rather than a verify
  // callback) so that a mismatch is reported as such in the verify result.
  if (is_ip_literal(url.host)) {
    X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(ssl_handle), url.host.c_str());
  } else {
    // Only subjectAltName names count, never the subject's CN (RFC 6125; browsers ignore it
    // too): OpenSSL would otherwise accept a certificate for an IP address whose CN is the host.
    SSL_set_hostflags(ssl_handle,
                      X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS | X509_CHECK_FLAG_NEVER_CHECK_SUBJECT);
    // SNI, for servers with several names; never for an IP address (RFC 6066).
    if (SSL_set1_host(ssl_handle, url.host.c_str()) != 1 ||
        SSL_set_tlsext_host_name(ssl_handle, url.host.c_str()) != 1) {
      throw http_call_error("TLS: cannot set the server name " + url.host, false);
    }
  }
  auto [ec] = co_await stream.async_handshake(ssl::stream_base::client,
                                              asio::as_tuple(asio::use_awaitable));
  if (ec) {
    const long verify = SSL_get_verify_result(ssl_handle);
    if (verify != X509_V_OK) {
      throw http_call_error("TLS: the certificate of " + url.host +
                                " did not verify: " + X509_verify_cert_error_string(verify),
                            true);
    }
    throw boost::system::system_error(ec);
  }
  // No TLS close_notify exchange afterwards: the answer is complete (its length is known), and a
  // receiver that never answers the close would hold the attempt until its timeout.
  co_return co_await exchange(stream, url, verb, std::move(body), headers);
}

}  // namespace service
