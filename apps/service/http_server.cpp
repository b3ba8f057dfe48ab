#include "http_server.hpp"
#include "log.hpp"

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/redirect_error.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/write.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/http/empty_body.hpp>
#include <boost/beast/http/error.hpp>
#include <boost/beast/http/read.hpp>
#include <boost/beast/http/write.hpp>
#include <boost/beast/ssl/ssl_stream.hpp>
#include <charconv>
#include <cstdio>

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using asio::ip::tcp;

namespace service {

http_server::http_server(asio::any_io_executor ex, const tcp::endpoint& at, api& handler,
                         authenticator& auth, event_hub& events, server_options options,
                         const tls_context* tls)
    : ex_(ex),
      acceptor_(ex, at),
      api_(handler),
      auth_(auth),
      events_(events),
      options_(options),
      tls_(tls),
      all_closed_(ex, asio::steady_timer::time_point::max()) {}

void http_server::start() {
  asio::co_spawn(ex_, accept_loop(), [](std::exception_ptr ep) {
    if (ep) log("http: accept loop ended with an error");
  });
}

void http_server::stop() {
  stopping_ = true;
  boost::system::error_code ignored;
  acceptor_.close(ignored);
  for (auto* s : sessions_) s->socket().cancel(ignored);
}

auto http_server::wait_closed(std::chrono::steady_clock::time_point deadline)
    -> asio::awaitable<void> {
  while (session_count_ > 0 && std::chrono::steady_clock::now() < deadline) {
    all_closed_.expires_at(deadline);
    boost::system::error_code ec;
    co_await all_closed_.async_wait(asio::redirect_error(asio::use_awaitable, ec));
  }
}

void http_server::session_ended() {
  if (--session_count_ == 0) all_closed_.cancel();
}

auto http_server::accept_loop() -> asio::awaitable<void> {
  while (!stopping_) {
    auto [ec, socket] = co_await acceptor_.async_accept(asio::as_tuple(asio::use_awaitable));
    if (stopping_) break;
    if (ec) {
      // Out of descriptors or a connection reset before accept: wait a moment, keep serving.
      log("http: accept failed: %s", ec.message().c_str());
      asio::steady_timer pause(ex_, std::chrono::milliseconds(50));
      co_await pause.async_wait(asio::as_tuple(asio::use_awaitable));
      continue;
    }
    ++session_count_;
    asio::co_spawn(ex_, session(std::move(socket)),
                   [this](std::exception_ptr) { session_ended(); });
  }
}

auto http_server::session(tcp::socket socket) -> asio::awaitable<void> {
  boost::system::error_code ec;
  // Responses and /events messages are small and written as they happen: without this, Nagle's
  // algorithm holds one back until the client's delayed ACK (~40 ms), which showed up as a 40 ms
  // p99 in the load run.
  socket.set_option(tcp::no_delay(true), ec);
  const std::string client = socket.remote_endpoint(ec).address().to_string();
  beast::tcp_stream stream(std::move(socket));
  if (session_count_ > options_.max_connections) {
    if (tls_ != nullptr) co_return;  // an answer would cost a handshake: just close
    response busy = error_response(503, "too many connections; retry later");
    busy.set(http::field::retry_after, "1");
    busy.keep_alive(false);
    stream.expires_after(std::chrono::seconds(5));
    co_await http::async_write(stream, busy, asio::redirect_error(asio::use_awaitable, ec));
    co_return;
  }
  // Registered for its whole life (a TLS handshake included), so that stop() can end it.
  struct unregister {
    std::set<beast::tcp_stream*>& set;
    beast::tcp_stream* s;
    ~unregister() { set.erase(s); }
  };
  if (tls_ == nullptr) {
    sessions_.insert(&stream);
    unregister guard{sessions_, &stream};
    co_await serve(stream, client);
    stream.socket().shutdown(tcp::socket::shutdown_send, ec);
    co_return;
  }
  // The context is kept alive by this connection: a reload (SIGHUP) replaces it for new ones.
  const std::shared_ptr<asio::ssl::context> context = tls_->current();
  beast::ssl_stream<beast::tcp_stream> tls_stream(std::move(stream), *context);
  sessions_.insert(&tls_stream.next_layer());
  unregister guard{sessions_, &tls_stream.next_layer()};
  tls_stream.next_layer().expires_after(options_.tls_handshake_timeout);
  co_await tls_stream.async_handshake(asio::ssl::stream_base::server,
                                      asio::redirect_error(asio::use_awaitable, ec));
  // Not TLS (plain HTTP gets an alert, never an HTTP answer), or a client that does not trust
  // the certificate: nothing to serve.
  if (ec) co_return;
  co_await serve(tls_stream, client);
  if (stopping_) co_return;  // no waiting for the client's close_notify while stopping
  tls_stream.next_layer().expires_after(std::chrono::seconds(5));
  co_await tls_stream.async_shutdown(asio::redirect_error(asio::use_awaitable, ec));
}

template <class Stream>
auto http_server::serve(Stream& stream, const std::string& client) -> asio::awaitable<void> {
  boost::system::error_code ec;
  beast::tcp_stream& tcp = beast::get_lowest_layer(stream);

  beast::flat_buffer buffer;
  while (!stopping_) {
    http::request_parser<http::string_body> parser;
    parser.header_limit(static_cast<std::uint32_t>(options_.max_header_bytes));
    parser.body_limit(options_.max_body_bytes);
    tcp.expires_after(options_.idle_timeout);
    co_await http::async_read(stream, buffer, parser,
                              asio::redirect_error(asio::use_awaitable, ec));
    if (ec == http::error::end_of_stream || ec == beast::error::timeout ||
        ec == asio::error::operation_aborted || ec == asio::error::connection_reset ||
        ec == asio::ssl::error::stream_truncated) {
      break;
    }
    if (ec) {
      const bool too_large = ec == http::error::body_limit || ec == http::error::header_limit;
      response res = error_response(
          too_large ? 413 : 400,
          (too_large ? "request too large: " : "malformed HTTP request: ") + ec.message());
      res.keep_alive(false);
      tcp.expires_after(std::chrono::seconds(5));
      co_await http::async_write(stream, res, asio::redirect_error(asio::use_awaitable, ec));
      break;
    }
    request req = parser.release();
    if (req.target() == "/session") {
      response res = co_await auth_.session(req, tls_ != nullptr, client);
      res.keep_alive(req.keep_alive() && !stopping_);
      tcp.expires_after(options_.idle_timeout);
      co_await http::async_write(stream, res, asio::redirect_error(asio::use_awaitable, ec));
      if (ec || !res.keep_alive()) break;
      continue;
    }
    if (auto refused = co_await auth_.check(req, client)) {
      refused->keep_alive(req.keep_alive() && !stopping_);
      tcp.expires_after(options_.idle_timeout);
      co_await http::async_write(stream, *refused, asio::redirect_error(asio::use_awaitable, ec));
      if (ec || !refused->keep_alive()) break;
      continue;
    }
    if (req.method() == http::verb::get &&
        (req.target() == "/events" || req.target().starts_with("/events?"))) {
      co_await serve_events(stream, req);
      break;
    }
    response res = co_await api_.handle(req);
    res.keep_alive(req.keep_alive() && !stopping_);
    tcp.expires_after(options_.idle_timeout);
    co_await http::async_write(stream, res, asio::redirect_error(asio::use_awaitable, ec));
    if (ec || !res.keep_alive()) break;
  }
}

template <class Stream>
auto http_server::serve_events(Stream& stream, const request& req) -> asio::awaitable<void> {
  beast::tcp_stream& tcp = beast::get_lowest_layer(stream);
  http::response<http::empty_body> head{http::status::ok, 11};
  head.set(http::field::content_type, "text/event-stream");
  head.set(http::field::cache_control, "no-cache");
  head.keep_alive(false);  // the body runs until the connection closes
  http::response_serializer<http::empty_body> serializer{head};
  boost::system::error_code ec;
  tcp.expires_after(options_.idle_timeout);
  co_await http::async_write_header(stream, serializer,
                                    asio::redirect_error(asio::use_awaitable, ec));
  if (ec) co_return;
  auto sub = events_.subscribe(ex_);
  struct unsubscribe {
    event_hub& hub;
    std::shared_ptr<event_subscriber> s;
    ~unsubscribe() { hub.unsubscribe(s); }
  } guard{events_, sub};
  // Subscribed before the replay is read: the live stream starts after the last change the feed
  // published, and the replay reads up to exactly there, so every change arrives once, in order.
  std::string out = "retry: 1000\n: connected\n\n";
  std::int64_t replayed_up_to = 0;
  if (auto last = req.find("Last-Event-ID"); last != req.end()) {
    std::int64_t seq = 0;
    const std::string_view text = last->value();
    const auto [end, err] = std::from_chars(text.data(), text.data() + text.size(), seq);
    if (err == std::errc{} && end == text.data() + text.size() && seq >= 0) {
      // The client has seen everything up to seq (perhaps from another instance whose feed is
      // ahead of this one's): nothing up to there is sent again, live or replayed.
      replayed_up_to = seq;
      constexpr std::int64_t replay_limit = 10'000;
      const std::int64_t live_from = api_.live_from();
      const auto changes = co_await api_.changes_since(seq, live_from, replay_limit);
      for (const auto& c : changes) {
        out += format_event(c);
        replayed_up_to = c.seq;
      }
      if (static_cast<std::int64_t>(changes.size()) == replay_limit) {
        out += ": replay truncated; read GET /jobs to catch up\n\n";
      }
    }
  }
  try {
    out += co_await api_.stats_event();  // what the counts are now; later ones as they change
  } catch (const std::exception&) {
    // The database is away: the stats feed sends them once it is back.
  }
  for (;;) {
    if (!out.empty()) {
      tcp.expires_after(options_.idle_timeout);  // a client that stops reading is dropped
      co_await asio::async_write(stream, asio::buffer(out),
                                 asio::redirect_error(asio::use_awaitable, ec));
      if (ec) co_return;
      out.clear();
    }
    if (sub->closed || sub->overflowed || stopping_) co_return;
    if (sub->pending.empty()) {
      sub->wake.expires_after(options_.event_heartbeat);
      co_await sub->wake.async_wait(asio::redirect_error(asio::use_awaitable, ec));
      if (!ec) out = ": heartbeat\n\n";
    }
    while (!sub->pending.empty()) {
      const auto seq = sub->pending.front().first;
      if (seq < 0 || seq > replayed_up_to) out += sub->pending.front().second;
      sub->pending.pop_front();
    }
  }
}

}  // namespace service
