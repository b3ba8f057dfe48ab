// procpool - one worker process as pool_core sees it: its phase, its units (process, channel,
// output) and the tasks it holds. A plain record: pool_core decides everything about it.
//
// Not thread-safe: guarded by pool_core's lock, like everything it holds.
#pragma once

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/steady_timer.hpp>
#include <cstdint>
#include <deque>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "output_forwarder.hpp"
#include "process_handle.hpp"
#include "sys_ops.hpp"
#include "task_queue.hpp"
#include "worker_lifecycle.hpp"
#include "worker_link.hpp"

namespace procpool::detail {

struct worker {
  worker(const boost::asio::any_io_executor& ex, worker_descriptors& fds, tail_policy policy)
      : link(ex, std::move(fds.channel)),
        output(ex, std::move(fds.out), std::move(fds.err), policy) {}

  void on(worker_event e) { phase = next_phase(phase, e); }

  std::uint64_t spawn_id = 0;
  std::size_t slot = 0;
  worker_phase phase = worker_phase::forking;
  process_handle process;
  worker_link link;
  worker_output output;
  std::shared_ptr<task> current;  // while busy (and while stopping, until its exit delivers it)
  // Sent ahead while `current` runs, in the order the worker runs them: the first becomes current
  // when current's outcome arrives (see pool_core::dispatch).
  std::deque<std::shared_ptr<task>> ahead;
  bool writing = false;  // an async_write of a frame is still in flight on its channel
  // Counts async writes started; a write's completion acts only if it is still the latest (a late
  // completion of an earlier write must not clear `writing` under a newer one).
  std::uint64_t write_generation = 0;
  std::vector<frame_header> unsent_skips;  // skip frames waiting for that write to finish
  bool worn = false;  // due for recycling once the tasks it holds ahead are done (see on_outcome)
  // Its death as the fork server reported it, kept until its channel has ended too: every frame it
  // wrote before dying (a result, then a crash in the next task) is handled before its death.
  struct exit_report {
    int status = 0;
    std::uint32_t memory = 0;
  };
  std::optional<exit_report> exit;
  bool channel_ended = false;
  std::unique_ptr<boost::asio::steady_timer> exit_timer;  // see pool_core::on_exit_event
  std::size_t tasks_run = 0;
  std::string kill_reason;     // why the pool killed it, for the error its task gets
  bool hung_up_alive = false;  // its channel ended while the process still ran
};

}  // namespace procpool::detail
