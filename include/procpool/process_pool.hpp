// procpool - a pool of worker processes whose results you co_await from Boost.Asio.
#pragma once

#include <algorithm>
#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/associated_cancellation_slot.hpp>
#include <boost/asio/associated_executor.hpp>
#include <boost/asio/async_result.hpp>
#include <boost/asio/awaitable.hpp>
#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <exception>
#include <memory>
#include <ranges>
#include <tuple>
#include <utility>
#include <vector>

#include "procpool/detail/invoke.hpp"
#include "procpool/detail/map.hpp"
#include "procpool/detail/pool_core.hpp"
#include "procpool/detail/progress_mailbox.hpp"
#include "procpool/detail/signature.hpp"
#include "procpool/error.hpp"
#include "procpool/pool_options.hpp"
#include "procpool/pool_stats.hpp"
#include "procpool/task_options.hpp"

namespace procpool {

namespace detail {

// Hands a finished task to the caller: posts to the handler's associated executor (so the handler
// never runs inline and always runs where the caller expects), decoding the result there.
template <class R, class Handler>
struct submit_completer {
  Handler handler;
  boost::asio::executor_work_guard<
      boost::asio::associated_executor_t<Handler, boost::asio::any_io_executor>>
      work;

  void operator()(std::exception_ptr ep, byte_buffer result) {
    auto ex = work.get_executor();
    boost::asio::post(ex, [h = std::move(handler), w = std::move(work), ep,
                           result = std::move(result)]() mutable {
      boost::asio::get_associated_cancellation_slot(h).clear();
      if constexpr (std::is_void_v<R>) {
        std::move(h)(ep);
      } else {
        R value{};
        if (!ep) {
          try {
            decode_from(result, value);
          } catch (...) {
            ep = std::current_exception();
          }
        }
        std::move(h)(ep, std::move(value));
      }
    });
  }
};

template <class Handler>
struct shutdown_completer {
  Handler handler;
  boost::asio::executor_work_guard<
      boost::asio::associated_executor_t<Handler, boost::asio::any_io_executor>>
      work;
  void operator()() {
    auto ex = work.get_executor();
    boost::asio::post(ex,
                      [h = std::move(handler), w = std::move(work)]() mutable { std::move(h)(); });
  }
};

}  // namespace detail

/// A pool of worker processes. Create it once in a clear scope (like asyncpg.Pool or a web
/// framework's lifespan) and pass it by reference to the code that submits work.
///
/// Workers are forked from procpool's fork server, so they run this very binary: any free function
/// or captureless lambda can be submitted without registration. Call procpool::init() at the top of
/// main() (see the README's gotchas).
class process_pool {
 public:
  using executor_type = boost::asio::any_io_executor;

  /// Starts `options.workers` workers. Their I/O runs on `ex`. Throws init_required if the process
  /// is already multi-threaded and procpool::init() was never called, worker_start_failed if the
  /// fork server cannot be reached.
  explicit process_pool(executor_type ex, pool_options options = {})
      : executor_(std::move(ex)), core_(detail::make_pool_core(executor_, options)) {}

  /// Stops the pool without ever blocking indefinitely: pending tasks fail with pool_closed, busy
  /// workers get SIGTERM, then SIGKILL after options.stop_grace; every worker is reaped.
  ~process_pool() { detail::destroy(*core_); }

  process_pool(const process_pool&) = delete;
  auto operator=(const process_pool&) -> process_pool& = delete;

  [[nodiscard]] auto get_executor() const noexcept -> executor_type { return executor_; }

  /// Runs `f(args...)` in a worker process; the token form.
  ///
  /// Usage: `pool.async_submit(f, arg1, arg2, token)`, where the token is the last argument.
  ///
  /// Completion signature: `void(std::exception_ptr, R)` where R is f's return type with
  /// references and cv-qualifiers removed; `void(std::exception_ptr)` when R is void. The arguments
  /// are converted to f's parameter types and encoded before this function returns, so they may be
  /// temporaries. The handler is called exactly once, never from inside this call, through
  /// its associated executor. On failure the exception_ptr holds: the task's own exception (std
  /// types and registered types rebuilt as themselves, anything else as remote_error),
  /// worker_crashed, cancelled, pool_closed or serialization_error.
  ///
  /// Cancellation (the handler's associated cancellation slot):
  /// - any type, task still queued: the task is removed and completes with procpool::cancelled;
  /// - terminal, task running: its worker is killed (SIGKILL); the task completes with
  ///   procpool::cancelled once the worker is gone, and a replacement worker starts;
  /// - partial or total, task running: ignored (the work cannot be undone without killing it).
  template <class F, class... ArgsAndToken>
  requires(!std::is_same_v<F, task_options>) auto async_submit(F f,
                                                               ArgsAndToken&&... args_and_token) {
    return async_submit(task_options{}, f, std::forward<ArgsAndToken>(args_and_token)...);
  }

  /// async_submit with per-task options (see task_options).
  template <class F, class... ArgsAndToken>
  auto async_submit(const task_options& options, F f, ArgsAndToken&&... args_and_token) {
    static_assert(sizeof...(ArgsAndToken) >= 1,
                  "procpool: async_submit(f, args..., token) needs a completion token as its last "
                  "argument; to co_await, use submit(f, args...)");
    auto all = std::forward_as_tuple(std::forward<ArgsAndToken>(args_and_token)...);
    constexpr std::size_t n_args = sizeof...(ArgsAndToken) - 1;
    return [&]<std::size_t... I>(std::index_sequence<I...>) {
      return async_submit_request<detail::submit_result_t<F>>(
          with_options(options, detail::make_task_request(
                                    detail::take_frame_buffer(*core_), f,
                                    std::forward<std::tuple_element_t<I, decltype(all)>>(
                                        std::get<I>(all))...)),
          options.on_progress,
          std::forward<std::tuple_element_t<n_args, decltype(all)>>(std::get<n_args>(all)));
    }
    (std::make_index_sequence<n_args>{});
  }

  /// Runs `f(args...)` in a worker process and returns an awaitable of its result: the coroutine
  /// form of async_submit, `co_await pool.submit(cpu_heavy, 123)`. Errors are thrown at the
  /// co_await. The arguments are encoded before submit returns.
  template <class F, class... Args>
  requires(!std::is_same_v<F, task_options>) auto submit(F f, Args&&... args)
      -> boost::asio::awaitable<detail::submit_result_t<F>> {
    return submit(task_options{}, f, std::forward<Args>(args)...);
  }

  /// submit with per-task options: `co_await pool.submit(task_options{.timeout = 2s}, f, x)`.
  template <class F, class... Args>
  auto submit(const task_options& options, F f, Args&&... args)
      -> boost::asio::awaitable<detail::submit_result_t<F>> {
    return async_submit_request<detail::submit_result_t<F>>(
        with_options(options, detail::make_task_request(detail::take_frame_buffer(*core_), f,
                                                        std::forward<Args>(args)...)),
        options.on_progress, boost::asio::use_awaitable);
  }

  /// Runs `f(item)` for every item of `items` in the workers, `chunk_size` items per task (like
  /// ProcessPoolExecutor.map's chunksize: one frame, one wake-up and one result per chunk, which
  /// is what makes many tiny calls cheap), and completes with the results in order. `f` takes
  /// one parameter and returns a value.
  ///
  /// Completion signature `void(std::exception_ptr, std::vector<R>)`, called exactly once, never
  /// inline, through the handler's associated executor, after every chunk has ended. On failure
  /// the exception_ptr holds the earliest failing chunk's error (the item's exception, or
  /// worker_crashed — a crash fails its whole chunk), the vector is empty, and chunks still queued
  /// when the first failure arrived were dropped. The items are encoded before this returns.
  ///
  /// Cancellation: as for async_submit, applied to every chunk.
  template <class F, std::ranges::forward_range Range, class Token>
  auto async_map(F f, const Range& items, std::size_t chunk_size, Token&& token) {
    return async_map(task_options{}, f, items, chunk_size, std::forward<Token>(token));
  }

  /// async_map with options applied to every chunk (timeout, crash_retries); `on_progress` gets
  /// {items done, items in all} as chunks finish, under the same guarantees as for one task.
  template <class F, std::ranges::forward_range Range, class Token>
  auto async_map(const task_options& options, F f, const Range& items, std::size_t chunk_size,
                 Token&& token) {
    using R = detail::map_result_t<F>;
    chunk_size = std::max<std::size_t>(chunk_size, 1);
    std::vector<detail::task_request> requests;
    std::uint64_t total_items = 0;
    for (auto it = std::ranges::begin(items); it != std::ranges::end(items);) {
      auto stop =
          std::ranges::next(it, static_cast<std::ptrdiff_t>(chunk_size), std::ranges::end(items));
      total_items += static_cast<std::uint64_t>(std::ranges::distance(it, stop));
      requests.push_back(
          with_options(options, detail::make_map_request(detail::take_frame_buffer(*core_), f,
                                                         std::ranges::subrange(it, stop))));
      it = stop;
    }
    return boost::asio::async_initiate<Token, void(std::exception_ptr, std::vector<R>)>(
        [core = core_, ex = executor_](auto handler, std::vector<detail::task_request> chunks,
                                       std::function<void(const progress&)> on_progress,
                                       std::uint64_t items_in_all) {
          using handler_t = decltype(handler);
          using state_t = detail::map_state<R, handler_t>;
          auto slot = boost::asio::get_associated_cancellation_slot(handler);
          auto work =
              boost::asio::make_work_guard(boost::asio::get_associated_executor(handler, ex));
          auto state =
              std::make_shared<state_t>(std::move(handler), std::move(work), chunks.size());
          if (on_progress) state->watch_progress(std::move(on_progress), items_in_all);
          if (chunks.empty()) {
            boost::asio::post(state->work.get_executor(), [state] { state->complete(); });
            return;
          }
          for (std::size_t i = 0; i < chunks.size(); ++i) {
            state->ids.push_back(detail::reserve_task_id(*core));
          }
          const std::weak_ptr<detail::pool_core> weak = core;
          if (slot.is_connected()) {
            slot.assign([weak, ids = state->ids](boost::asio::cancellation_type type) {
              if (auto c = weak.lock()) {
                for (auto id : ids) detail::cancel(*c, id, type);
              }
            });
          }
          for (std::size_t i = 0; i < chunks.size(); ++i) {
            chunks[i].cancellable = slot.is_connected();
            detail::submit(*core, state->ids[i], std::move(chunks[i]),
                           [state, i, weak](std::exception_ptr ep, detail::byte_buffer result) {
                             auto ex2 = state->work.get_executor();
                             boost::asio::post(
                                 ex2, [state, i, weak, ep, result = std::move(result)]() mutable {
                                   state->chunk_done(i, ep, result, weak);
                                 });
                           });
          }
        },
        token, std::move(requests), options.on_progress, total_items);
  }

  /// `co_await pool.map(f, items, chunk_size)`: async_map as an awaitable.
  template <class F, std::ranges::forward_range Range>
  auto map(F f, const Range& items, std::size_t chunk_size)
      -> boost::asio::awaitable<std::vector<detail::map_result_t<F>>> {
    return async_map(f, items, chunk_size, boost::asio::use_awaitable);
  }

  /// `co_await pool.map(options, f, items, chunk_size)`.
  template <class F, std::ranges::forward_range Range>
  auto map(const task_options& options, F f, const Range& items, std::size_t chunk_size)
      -> boost::asio::awaitable<std::vector<detail::map_result_t<F>>> {
    return async_map(options, f, items, chunk_size, boost::asio::use_awaitable);
  }

  /// Waits until the queue has room for another task (see pool_options::max_queue): the
  /// backpressure point for a producer that creates tasks faster than the pool runs them.
  ///
  ///     for (auto& item : items) {
  ///       co_await pool.wait_for_room();   // at most max_queue tasks wait in the pool
  ///       co_spawn(ex, handle(pool, item), detached);
  ///     }
  ///
  /// Completion signature `void(std::exception_ptr)`: null when there is room (at once when the
  /// queue has room or max_queue is 0); pool_closed once the pool is shut down. Called exactly
  /// once, never inline, through the handler's associated executor. Room is not reserved: several
  /// producers released together may find the queue full again, and their submits then wait
  /// (or fail, with queue_full_action::fail).
  ///
  /// Cancellation: any type completes the wait with procpool::cancelled.
  template <class Token>
  auto async_wait_for_room(Token&& token) {
    return boost::asio::async_initiate<Token, void(std::exception_ptr)>(
        [core = core_, ex = executor_](auto handler) {
          using handler_t = decltype(handler);
          auto slot = boost::asio::get_associated_cancellation_slot(handler);
          auto work =
              boost::asio::make_work_guard(boost::asio::get_associated_executor(handler, ex));
          const std::uint64_t id = detail::reserve_task_id(*core);
          if (slot.is_connected()) {
            slot.assign([weak = std::weak_ptr<detail::pool_core>(core),
                         id](boost::asio::cancellation_type) {
              if (auto c = weak.lock()) detail::cancel_room_wait(*c, id);
            });
          }
          detail::wait_for_room(
              *core, id,
              [done =
                   detail::submit_completer<void, handler_t>{std::move(handler), std::move(work)}](
                  std::exception_ptr ep) mutable { done(ep, {}); });
        },
        token);
  }

  /// `co_await pool.wait_for_room()`; throws pool_closed once the pool is shut down.
  auto wait_for_room() -> boost::asio::awaitable<void> {
    return async_wait_for_room(boost::asio::use_awaitable);
  }

  /// Stops the pool (see shutdown_mode). Completion signature `void()`; called exactly once, never
  /// inline, after every worker has exited and been reaped. Not cancellable. Later submits fail
  /// with pool_closed.
  template <class Token>
  auto async_shutdown(shutdown_mode mode, Token&& token) {
    return boost::asio::async_initiate<Token, void()>(
        [core = core_, ex = executor_, mode](auto handler) {
          using handler_t = decltype(handler);
          auto work =
              boost::asio::make_work_guard(boost::asio::get_associated_executor(handler, ex));
          detail::shutdown(
              *core, mode,
              detail::shutdown_completer<handler_t>{std::move(handler), std::move(work)});
        },
        token);
  }

  /// `co_await pool.shutdown(shutdown_mode::graceful)`.
  auto shutdown(shutdown_mode mode) -> boost::asio::awaitable<void> {
    return async_shutdown(mode, boost::asio::use_awaitable);
  }

  /// Current counters; cheap, safe from any thread.
  [[nodiscard]] auto stats() const -> pool_stats { return detail::stats(*core_); }

  /// Process ids of the live workers (for diagnostics and tests).
  [[nodiscard]] auto worker_pids() const -> std::vector<int> { return detail::worker_pids(*core_); }

 private:
  static auto with_options(const task_options& options, detail::task_request request)
      -> detail::task_request {
    request.timeout = options.timeout;
    request.crash_retries = options.crash_retries;
    return request;
  }

  template <class R, class Token>
  auto async_submit_request(detail::task_request request,
                            std::function<void(const progress&)> progress_callback, Token&& token) {
    return boost::asio::async_initiate<Token, detail::completion_signature_t<R>>(
        [core = core_, ex = executor_](auto handler, detail::task_request req,
                                       std::function<void(const progress&)> on_progress) {
          using handler_t = decltype(handler);
          auto slot = boost::asio::get_associated_cancellation_slot(handler);
          auto work =
              boost::asio::make_work_guard(boost::asio::get_associated_executor(handler, ex));
          // The id is reserved before the task is queued, so that the cancellation handler is in
          // place before the task can complete (and clear the slot) on another thread.
          const std::uint64_t id = detail::reserve_task_id(*core);
          if (slot.is_connected()) {
            slot.assign([weak = std::weak_ptr<detail::pool_core>(core),
                         id](boost::asio::cancellation_type type) {
              if (auto c = weak.lock()) detail::cancel(*c, id, type);
            });
          }
          req.cancellable = slot.is_connected();
          detail::submit_completer<R, handler_t> done{std::move(handler), std::move(work)};
          if (!on_progress) {
            detail::submit(*core, id, std::move(req), std::move(done));
            return;
          }
          // The completion waits for the last progress callback (progress_mailbox::finish).
          auto mailbox =
              std::make_shared<detail::progress_mailbox<decltype(done.work.get_executor())>>(
                  done.work.get_executor(), std::move(on_progress));
          req.progress = mailbox;
          detail::submit(
              *core, id, std::move(req),
              [mailbox, done = std::move(done)](std::exception_ptr ep,
                                                detail::byte_buffer result) mutable {
                mailbox->finish([done = std::move(done), ep, result = std::move(result)]() mutable {
                  done(ep, std::move(result));
                });
              });
        },
        token, std::move(request), std::move(progress_callback));
  }

  executor_type executor_;
  std::shared_ptr<detail::pool_core> core_;
};

}  // namespace procpool
