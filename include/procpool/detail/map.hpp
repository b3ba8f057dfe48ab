// procpool - process_pool::async_map: a unary function over a range, in chunks, one task per chunk.
#pragma once

#include <boost/asio/associated_executor.hpp>
#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/post.hpp>
#include <cstddef>
#include <cstdint>
#include <exception>
#include <functional>
#include <iterator>
#include <memory>
#include <mutex>
#include <ranges>
#include <type_traits>
#include <utility>
#include <vector>

#include "procpool/detail/invoke.hpp"
#include "procpool/detail/pool_core.hpp"
#include "procpool/detail/progress_mailbox.hpp"

namespace procpool::detail {

template <class Pointer>
struct map_traits {
  static_assert(dependent_false_v<Pointer>,
                "procpool: map needs a function of exactly one parameter that returns a value");
};
template <class R, class P>
requires(!std::is_void_v<R>) struct map_traits<R (*)(P)> {
  static_assert(!std::is_same_v<std::decay_t<R>, shared_bytes>,
                "procpool: a task cannot return shared_bytes (a view of the worker's task bytes, "
                "gone when it returns); return a std::vector<std::byte>");
  using item_type = std::decay_t<P>;
  using result_type = std::decay_t<R>;

  // Runs in the worker: the whole chunk is one task, so a crash fails the chunk.
  static void thunk(std::uintptr_t function, std::span<const std::byte> in, byte_buffer& out) {
    auto* fn = reinterpret_cast<R (*)(P)>(function);
    std::vector<item_type> items;
    decode_arguments_from(in, items);
    std::vector<result_type> results;
    results.reserve(items.size());
    for (auto& item : items) results.push_back(fn(static_cast<P&&>(item)));
    encode_into(out, results);
  }
};
template <class R, class P>
struct map_traits<R (*)(P) noexcept> : map_traits<R (*)(P)> {};

template <class F>
using map_result_t = typename map_traits<pointer_of_t<F>>::result_type;

/// A task frame for f over `chunk`.
template <class F, class Chunk>
auto make_map_request(byte_buffer frame, F f, const Chunk& chunk) -> task_request {
  using traits = map_traits<pointer_of_t<F>>;
  static_assert(check_transferable<typename traits::item_type>() &&
                check_transferable<typename traits::result_type>());
  task_request req = start_task_request(std::move(frame), f, &traits::thunk);
  std::vector<typename traits::item_type> items;
  items.reserve(static_cast<std::size_t>(std::ranges::distance(chunk)));
  for (auto&& x : chunk) items.emplace_back(x);
  encode_into(req.frame, items);
  return req;
}

/// What the chunks of one map share: their results in order, and the handler to call once the
/// last chunk is in.
template <class R, class Handler>
struct map_state : std::enable_shared_from_this<map_state<R, Handler>> {
  using work_guard = boost::asio::executor_work_guard<
      boost::asio::associated_executor_t<Handler, boost::asio::any_io_executor>>;

  using mailbox = progress_mailbox<typename work_guard::executor_type>;

  map_state(Handler h, work_guard w, std::size_t chunks)
      : handler(std::move(h)), work(std::move(w)), parts(chunks), remaining(chunks) {}

  // Reports {items done, items_total} to `callback` as chunks succeed.
  void watch_progress(std::function<void(const progress&)> callback, std::uint64_t items_total) {
    progress_out = std::make_shared<mailbox>(work.get_executor(), std::move(callback));
    total_items = items_total;
  }

  // On the handler's executor: records chunk `i`'s outcome; the last one completes the map.
  void chunk_done(std::size_t i, std::exception_ptr ep, const byte_buffer& result,
                  const std::weak_ptr<pool_core>& core) {
    std::unique_lock lock(mutex);
    if (!ep) {
      try {
        decode_from(result, parts[i]);
      } catch (...) {
        ep = std::current_exception();
      }
    }
    if (!ep && progress_out) {
      done_items += parts[i].size();
      // Under the lock: chunks finishing on two threads hand their counts on in order.
      progress_out->deliver(progress{done_items, total_items, {}}, ++progress_sequence);
    }
    if (ep && i < first_failed) {
      const bool first = !error;
      first_failed = i;
      error = ep;
      // The rest cannot change the outcome: drop the chunks still queued.
      if (first) {
        if (auto c = core.lock()) {
          for (std::size_t j = 0; j < ids.size(); ++j) {
            if (j != i) cancel(*c, ids[j], boost::asio::cancellation_type::total);
          }
        }
      }
    }
    if (--remaining != 0) return;
    lock.unlock();
    if (progress_out) {
      // Taken out of the state: the mailbox's held completion owns the state, not the reverse.
      std::exchange(progress_out, nullptr)->finish([self = this->shared_from_this()] {
        self->complete();
      });
    } else {
      complete();
    }
  }

  void complete() {
    boost::asio::get_associated_cancellation_slot(handler).clear();
    std::vector<R> all;
    if (!error) {
      std::size_t n = 0;
      for (const auto& p : parts) n += p.size();
      all.reserve(n);
      for (auto& p : parts) std::move(p.begin(), p.end(), std::back_inserter(all));
    }
    auto w = std::move(work);
    std::move(handler)(error, std::move(all));
  }

  Handler handler;
  work_guard work;
  std::mutex mutex;
  std::vector<std::vector<R>> parts;
  std::vector<std::uint64_t> ids;  // the chunks' task ids, for cancellation
  std::size_t remaining;
  std::size_t first_failed = static_cast<std::size_t>(-1);
  std::exception_ptr error;               // the failure of the earliest failing chunk
  std::shared_ptr<mailbox> progress_out;  // null unless task_options::on_progress was given
  std::uint64_t done_items = 0;
  std::uint64_t total_items = 0;
  std::uint64_t progress_sequence = 0;  // under mutex
};

}  // namespace procpool::detail
