// procpool-service - the HTTP/1.1 server (Beast): connections, keep-alive, limits, /events.
#pragma once

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/awaitable.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/beast/core/tcp_stream.hpp>
#include <chrono>
#include <set>

#include "api.hpp"
#include "auth.hpp"
#include "events.hpp"
#include "tls_context.hpp"

namespace service {

struct server_options {
  std::size_t max_body_bytes = 1 << 20;
  std::size_t max_header_bytes = 16 * 1024;
  std::size_t max_connections = 1024;
  /// A connection that sends nothing (or too slowly) for this long is closed.
  std::chrono::milliseconds idle_timeout{30'000};
  /// Comment line sent on an idle /events stream, so proxies keep it and dead clients are noticed.
  std::chrono::milliseconds event_heartbeat{15'000};
  /// How long a TLS client may take to complete its handshake.
  std::chrono::milliseconds tls_handshake_timeout{10'000};
};

/// Accepts connections and serves each on its own coroutine. A request that is not valid HTTP
/// gets 400 (413 when the body is too large) and its connection is closed; the process never
/// depends on a client behaving. Used on the event loop thread only.
class http_server {
 public:
  /// Binds and listens (throws boost::system::system_error if it cannot). With `tls`, every
  /// connection is TLS (with the context current when it is accepted); without, plain HTTP.
  http_server(boost::asio::any_io_executor ex, const boost::asio::ip::tcp::endpoint& at,
              api& handler, authenticator& auth, event_hub& events, server_options options,
              const tls_context* tls = nullptr);

  [[nodiscard]] auto port() const -> std::uint16_t { return acceptor_.local_endpoint().port(); }
  void start();
  /// Stops accepting and ends idle connections; a request being served gets its answer (with
  /// `Connection: close`).
  void stop();
  /// Completes when every connection has ended, or at `deadline`.
  auto wait_closed(std::chrono::steady_clock::time_point deadline) -> boost::asio::awaitable<void>;

 private:
  auto accept_loop() -> boost::asio::awaitable<void>;
  auto session(boost::asio::ip::tcp::socket socket) -> boost::asio::awaitable<void>;
  /// The requests of one connection, plain (beast::tcp_stream) or TLS (beast::ssl_stream).
  template <class Stream>
  auto serve(Stream& stream, const std::string& client) -> boost::asio::awaitable<void>;
  template <class Stream>
  auto serve_events(Stream& stream, const request& req) -> boost::asio::awaitable<void>;
  void session_ended();

  boost::asio::any_io_executor ex_;
  boost::asio::ip::tcp::acceptor acceptor_;
  api& api_;
  authenticator& auth_;
  event_hub& events_;
  server_options options_;
  const tls_context* tls_;
  std::set<boost::beast::tcp_stream*> sessions_;
  std::size_t session_count_ = 0;
  bool stopping_ = false;
  boost::asio::steady_timer all_closed_;
};

}  // namespace service
