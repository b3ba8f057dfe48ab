// procpool - the non-template heart of a process pool (implemented in src/pool_core.cpp).
#pragma once

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/cancellation_type.hpp>
#include <cstdint>
#include <exception>
#include <memory>
#include <vector>

#include "procpool/detail/task_request.hpp"
#include "procpool/detail/unique_function.hpp"
#include "procpool/pool_options.hpp"
#include "procpool/pool_stats.hpp"

namespace procpool::detail {

/// Called exactly once per task, from whichever thread finishes it; it must only hand the result on
/// (the public layer posts it to the caller's executor).
using task_completion = unique_function<void(std::exception_ptr, byte_buffer)>;
using shutdown_completion = unique_function<void()>;

class pool_core;

auto make_pool_core(boost::asio::any_io_executor ex, const pool_options& options)
    -> std::shared_ptr<pool_core>;

/// A buffer to encode the next task into: one whose frame was already sent, when the pool kept
/// one (large buffers are reused, so their pages are not faulted in again), else an empty one.
auto take_frame_buffer(pool_core& core) -> byte_buffer;

/// A fresh task id, for a cancellation handler installed before the task is submitted.
auto reserve_task_id(pool_core& core) -> std::uint64_t;

/// Queues task `id`. `done` is called exactly once; it may be called before submit returns, so it
/// must only hand the outcome on (the public layer posts it).
void submit(pool_core& core, std::uint64_t id, task_request request, task_completion done);

/// Applies a cancellation request to a task, if it is still pending.
void cancel(pool_core& core, std::uint64_t task_id, boost::asio::cancellation_type type);

/// Calls `done` (exactly once; possibly before this returns, so it must only hand the outcome on)
/// as soon as the queue has room for another task: at once when it has, or when max_queue is 0;
/// with pool_closed once the pool is shut down; with cancelled after cancel_room_wait.
using room_completion = unique_function<void(std::exception_ptr)>;
void wait_for_room(pool_core& core, std::uint64_t id, room_completion done);
void cancel_room_wait(pool_core& core, std::uint64_t id);

void shutdown(pool_core& core, shutdown_mode mode, shutdown_completion done);

/// Stops everything now: terminate, grace period, kill; reaps every worker. Bounded; never blocks
/// indefinitely.
void destroy(pool_core& core) noexcept;

auto stats(const pool_core& core) -> pool_stats;
auto worker_pids(const pool_core& core) -> std::vector<int>;

}  // namespace procpool::detail
