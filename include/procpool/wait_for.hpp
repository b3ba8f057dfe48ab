// procpool - bound the wait for an awaitable, like Python's asyncio.wait_for.
#pragma once

#include <boost/asio/awaitable.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/deferred.hpp>
#include <boost/asio/experimental/parallel_group.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <chrono>
#include <exception>
#include <string>

#include "procpool/error.hpp"

namespace procpool {

/// Awaits `op` for at most `timeout`. If `op` finishes first, returns its value or rethrows its
/// exception at once. If the deadline passes first, `op` receives terminal cancellation (for a
/// process_pool task: its worker is killed), and once it has stopped, procpool::timeout_error is
/// thrown. `op` must honour cancellation for the timeout to be prompt; every procpool operation
/// does.
///
/// Built on a parallel group with wait_for_one, not on awaitable_operators `||`, which on
/// Boost 1.81 can report the timer as the winner and drop the task's exception.
template <class T, class Rep, class Period>
auto wait_for(boost::asio::awaitable<T> op, std::chrono::duration<Rep, Period> timeout)
    -> boost::asio::awaitable<T> {
  namespace asio = boost::asio;
  auto ex = co_await asio::this_coro::executor;
  asio::steady_timer timer(ex, timeout);
  auto results =
      co_await asio::experimental::make_parallel_group(
          asio::co_spawn(ex, std::move(op), asio::deferred), timer.async_wait(asio::deferred))
          .async_wait(asio::experimental::wait_for_one(), asio::use_awaitable);
  const auto& order = std::get<0>(results);
  if (order[0] == 1) {
    throw timeout_error(
        "procpool::wait_for: deadline of " +
        std::to_string(std::chrono::duration_cast<std::chrono::milliseconds>(timeout).count()) +
        " ms passed; the operation was cancelled");
  }
  if (std::exception_ptr ep = std::get<1>(results)) std::rethrow_exception(ep);
  if constexpr (!std::is_void_v<T>) co_return std::move(std::get<2>(results));
}

}  // namespace procpool
