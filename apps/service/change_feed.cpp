#include "change_feed.hpp"

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/redirect_error.hpp>
#include <boost/asio/use_awaitable.hpp>

#include "background.hpp"

namespace asio = boost::asio;

namespace service {

change_feed::change_feed(asio::any_io_executor ex, database& db, event_hub& hub,
                         std::chrono::milliseconds poll,
                         std::chrono::milliseconds poll_without_notify)
    : ex_(ex),
      db_(db),
      hub_(hub),
      poll_(poll),
      poll_without_notify_(poll_without_notify),
      wake_(ex) {}

auto change_feed::start() -> asio::awaitable<void> {
  cursor_ = co_await db_.read([](store& s) { return s.last_seq(); });
  asio::co_spawn(ex_, run(), report_failure("change feed stopped", [] {}));
}

void change_feed::stop() {
  stopping_ = true;
  wake_.cancel();
}

void change_feed::kick() {
  kicked_ = true;
  wake_.cancel();
}

void change_feed::set_listening(bool listening) {
  listening_ = listening;
  wake_.cancel();
}

auto change_feed::run() -> asio::awaitable<void> {
  constexpr std::int64_t page = 1000;
  while (!stopping_) {
    if (!kicked_) {
      wake_.expires_after(listening_ ? poll_ : poll_without_notify_);
      boost::system::error_code ec;
      co_await wake_.async_wait(asio::redirect_error(asio::use_awaitable, ec));
      if (stopping_) break;
    }
    kicked_ = false;
    try {
      for (;;) {
        const auto changes =
            co_await db_.read([after = cursor_](store& s) { return s.changes_after(after, page); });
        for (const auto& c : changes) {
          hub_.publish(c);
          cursor_ = c.seq;
        }
        if (static_cast<std::int64_t>(changes.size()) < page) break;
      }
    } catch (const std::exception&) {
      // The database is away; the next kick or poll reads from the same place.
    }
  }
}

}  // namespace service
