// procpool - run blocking work (file or database I/O, a blocking client library) on a thread,
// like Python's asyncio.to_thread. For CPU-heavy or crash-prone work use a process_pool instead.
#pragma once

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/associated_executor.hpp>
#include <boost/asio/async_result.hpp>
#include <boost/asio/awaitable.hpp>
#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/thread_pool.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <exception>
#include <functional>
#include <tuple>
#include <type_traits>

#include "procpool/detail/signature.hpp"

namespace procpool {

/// The thread pool procpool::to_thread uses unless given another: created on first use with
/// max(4, hardware threads) threads, joined at program exit. Create process pools (or call
/// procpool::init()) before first use: it starts threads.
auto default_thread_pool() -> boost::asio::thread_pool&;

/// Runs `f(args...)` on a thread of `threads` and completes on the caller's executor; the token
/// form. Completion signature `void(std::exception_ptr, R)`, or `void(std::exception_ptr)` for a
/// void R. f and the arguments are copied (decayed) before this returns. Called exactly once,
/// never inline. Not cancellable: a running blocking call cannot be interrupted safely.
template <class Executor, class F, class... Args, class Token>
auto async_to_thread(const Executor& threads, Token&& token, F f, Args... args) {
  using R = std::decay_t<std::invoke_result_t<F&, Args&...>>;
  using call = std::tuple<F, Args...>;
  return boost::asio::async_initiate<Token, detail::completion_signature_t<R>>(
      [threads](auto handler, call c) {
        auto work = boost::asio::make_work_guard(
            boost::asio::get_associated_executor(handler, boost::asio::system_executor()));
        // The call is destroyed on the thread before the completion is posted, and the work
        // guard travels with the completion: once the caller resumes, nothing here touches the
        // caller's objects or its execution context again.
        boost::asio::post(
            threads, [h = std::move(handler), w = std::move(work), c = std::move(c)]() mutable {
              auto ex = w.get_executor();
              std::exception_ptr ep;
              if constexpr (std::is_void_v<R>) {
                try {
                  call local = std::move(c);
                  std::apply([](F& fn, Args&... a) { fn(a...); }, local);
                } catch (...) {
                  ep = std::current_exception();
                }
                boost::asio::post(
                    ex, [h = std::move(h), w = std::move(w), ep]() mutable { std::move(h)(ep); });
              } else {
                R value{};
                try {
                  call local = std::move(c);
                  value = std::apply([](F& fn, Args&... a) -> R { return fn(a...); }, local);
                } catch (...) {
                  ep = std::current_exception();
                }
                boost::asio::post(
                    ex, [h = std::move(h), w = std::move(w), ep, v = std::move(value)]() mutable {
                      std::move(h)(ep, std::move(v));
                    });
              }
            });
      },
      token, call(std::move(f), std::move(args)...));
}

/// `co_await procpool::to_thread(blocking_read, path)`: runs on default_thread_pool().
template <class F, class... Args>
auto to_thread(F f, Args... args)
    -> boost::asio::awaitable<std::decay_t<std::invoke_result_t<F&, Args&...>>> {
  return async_to_thread(default_thread_pool().get_executor(), boost::asio::use_awaitable,
                         std::move(f), std::move(args)...);
}

/// Same, on a thread pool (or any executor) of your choosing.
template <class Executor, class F, class... Args>
requires boost::asio::execution::executor<Executor>
auto to_thread_on(const Executor& threads, F f, Args... args)
    -> boost::asio::awaitable<std::decay_t<std::invoke_result_t<F&, Args&...>>> {
  return async_to_thread(threads, boost::asio::use_awaitable, std::move(f), std::move(args)...);
}

}  // namespace procpool
