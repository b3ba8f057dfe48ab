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
#include "events.hpp"

namespace service {

struct server_options {
  std::size_t max_body_bytes = 1 << 20;
  std::size_t max_header_bytes = 16 * 1024;
  std::size_t max_connections = 1024;
  /// A connection that sends nothing (or too slowly) for this long is closed.
  std::chrono::milliseconds idle_timeout{30'000};
  /// Comment line sent on an idle /events stream, so proxies keep it and dead clients are noticed.
  std::chrono::milliseconds event_heartbeat{15'000};
};

/// Accepts connections and serves each on its own coroutine. A request that is not valid HTTP
/// gets 400 (413 when the body is too large) and its connection is closed; the process never
/// depends on a client behaving. Used on the event loop thread only.
class http_server {
 public:
  /// Binds and listens (throws boost::system::system_error if it cannot).
  http_server(boost::asio::any_io_executor ex, const boost::asio::ip::tcp::endpoint& at,
              api& handler, event_hub& events, server_options options);

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
  auto serve_events(boost::beast::tcp_stream& stream, const request& req)
      -> boost::asio::awaitable<void>;
  void session_ended();

  boost::asio::any_io_executor ex_;
  boost::asio::ip::tcp::acceptor acceptor_;
  api& api_;
  event_hub& events_;
  server_options options_;
  std::set<boost::beast::tcp_stream*> sessions_;
  std::size_t session_count_ = 0;
  bool stopping_ = false;
  boost::asio::steady_timer all_closed_;
};

}  // namespace service
