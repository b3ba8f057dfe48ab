// procpool - the pool's core: one lock, the options, the stats, and the glue between its units
// (task_queue, worker_supervisor, worker_link, worker_output, process_handle, zygote_client),
// which return what happened; this file decides what follows. See design.md, "Inside the pool".
#include "procpool/detail/pool_core.hpp"

#include <signal.h>

#include <algorithm>
#include <atomic>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/write.hpp>
#include <chrono>
#include <cstring>
#include <map>
#include <thread>

#include "completion_batch.hpp"
#include "diagnose_exit.hpp"
#include "frame_check.hpp"
#include "internal.hpp"
#include "output_forwarder.hpp"
#include "pool_worker.hpp"
#include "process_handle.hpp"
#include "procpool/error.hpp"
#include "stop_sequence.hpp"
#include "task_queue.hpp"
#include "thread_annotations.hpp"
#include "worker_lifecycle.hpp"
#include "worker_link.hpp"
#include "worker_supervisor.hpp"
#include "zygote_client.hpp"

namespace procpool::detail {
namespace asio = boost::asio;

namespace {

// Tasks of at least this many bytes go through the worker's shared region (see worker_link).
constexpr std::size_t shared_task_threshold = std::size_t{1} << 20;

}  // namespace

class pool_core : public std::enable_shared_from_this<pool_core> {
 public:
  pool_core(asio::any_io_executor ex, const pool_options& options)
      : ex_(std::move(ex)),
        options_(options),
        target_(options.workers != 0 ? options.workers
                                     : std::max(1U, std::thread::hardware_concurrency())),
        tasks_(options.max_queue),
        supervisor_(options, target_),
        zygote_(ex_),
        emitter_(options.output),
        respawn_timer_(ex_),
        spare_timer_(ex_) {}

  void start() {
    unique_fd conn = connect_zygote();
    scoped_lock lock(mutex_);
    zygote_.assign(std::move(conn));
    read_events();
    for (std::size_t i = 0; i < supervisor_.full_strength(); ++i) spawn_worker();
    auto outcomes = take_gathered();
    lock.unlock();
    deliver(std::move(outcomes));
  }

  auto reserve_task_id() -> std::uint64_t {
    return next_task_id_.fetch_add(1, std::memory_order_relaxed);
  }

  void submit(std::uint64_t id, task_request request, task_completion done) {
    auto t = std::make_shared<task>();
    t->id = id;
    t->request = std::move(request);
    t->done = std::move(done);
    scoped_lock lock(mutex_);
    if (auto refusal = refuse(*t)) {
      finish(*t, std::move(refusal));
    } else {
      tasks_.admit(std::move(t));
      if (supervisor_.resume_on_new_task()) replenish();
      dispatch();
    }
    auto outcomes = take_gathered();
    lock.unlock();
    deliver(std::move(outcomes));
  }

  void cancel(std::uint64_t id, asio::cancellation_type type) {
    scoped_lock lock(mutex_);
    if (auto t = tasks_.take_unstarted(id)) {
      ++stats_.cancelled;
      finish(*t, std::make_exception_ptr(cancelled("procpool: task cancelled before it started")));
      release_room();
    } else if (t = tasks_.find(id);
               t && !t->ending &&
               (type & asio::cancellation_type::terminal) != asio::cancellation_type::none) {
      if (auto w = worker_running(*t)) {
        t->ending = std::make_exception_ptr(
            cancelled("procpool: task cancelled while running; its worker (pid " +
                      std::to_string(w->process.pid()) + ") was killed"));
        ++stats_.cancelled;
        stop(*w, SIGKILL);
      }
    }
    if (auto t = tasks_.find(id); t && !t->ending && !t->skip_asked) {
      // Held ahead by a busy worker (any cancellation type, as for a queued task).
      if (auto w = worker_holding(*t)) {
        t->skip_asked = true;
        t->kill_if_started =
            (type & asio::cancellation_type::terminal) != asio::cancellation_type::none;
        send_skip(w, make_frame_header(frame_kind::skip, t->id, 0));
      }
    }
    auto outcomes = take_gathered();
    lock.unlock();
    deliver(std::move(outcomes));
  }

  void shutdown(shutdown_mode mode, shutdown_completion done) {
    scoped_lock lock(mutex_);
    if (destroyed_) {
      completions_.add(std::move(done));
    } else {
      closing_ = true;
      fail_room_waiters();
      if (mode == shutdown_mode::immediate) abandon_tasks(SIGKILL);
      shutdown_waiters_.push_back(std::move(done));
      dispatch();
      check_shutdown_done();
    }
    auto outcomes = take_gathered();
    lock.unlock();
    deliver(std::move(outcomes));
  }

  void destroy() noexcept PROCPOOL_EXCLUDES(mutex_) {
    scoped_lock lock(mutex_);
    if (destroyed_) return;
    destroyed_ = true;
    closing_ = true;
    respawn_timer_.cancel();
    spare_timer_.cancel();
    zygote_.cancel();
    // Deaths already reported whose channel has not ended yet: their handlers will not run now.
    std::vector<std::shared_ptr<worker>> reported;
    for (auto& [id, w] : workers_) {
      if (w->exit) reported.push_back(w);
    }
    for (auto& w : reported) finish_death(*w);
    bool fork_server_done = false;  // it closed its side after our hang-up
    for (const auto& step : stop_sequence(options_.stop_grace)) {
      const auto deadline = std::chrono::steady_clock::now() + step.wait;
      switch (step.action) {
        case stop_action::terminate:
          abandon_tasks(SIGTERM);
          for (auto& [id, w] : workers_) w->link.close();
          break;
        case stop_action::kill:
          for (auto& [id, w] : workers_) stop(*w, SIGKILL);
          break;
        case stop_action::hang_up_fork_server:
          zygote_.hang_up();
          fork_server_done = zygote_.discard_events();
          break;
      }
      const bool hanging_up = step.action == stop_action::hang_up_fork_server;
      while (zygote_.is_open() && (hanging_up ? !fork_server_done : !workers_.empty())) {
        const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
            deadline - std::chrono::steady_clock::now());
        if (left.count() <= 0) break;
        // Handlers on other threads are never blocked for the grace period: they take the lock,
        // see destroyed_ and return.
        const int fd = zygote_.native_handle();
        lock.unlock();
        zygote_client::wait_readable(fd, left);
        lock.lock();
        if (hanging_up) {
          fork_server_done = zygote_.discard_events();
        } else {
          handle_events();
        }
      }
    }
    zygote_.close();
    for (auto& [id, w] : workers_) {
      release_descriptors(*w);
      if (auto t = std::exchange(w->current, nullptr)) finish(*t, ending_of(*t));
      if (w->exit_timer) w->exit_timer->cancel();
    }
    workers_.clear();
    for (auto& t : tasks_.take_all()) {
      finish(*t, std::make_exception_ptr(pool_closed("procpool: the pool was destroyed")));
    }
    check_shutdown_done();
    auto outcomes = take_gathered();
    lock.unlock();
    deliver(std::move(outcomes));
  }

  auto stats() const -> pool_stats {
    scoped_lock lock(mutex_);
    pool_stats s = stats_;
    s.workers = workers_.size();
    for (const auto& [id, w] : workers_) {
      if (w->current) {
        ++s.busy;
      } else if (w->phase == worker_phase::idle) {
        ++s.idle;
      }
    }
    s.queued = tasks_.queued();
    for (const auto& [id, w] : workers_) s.queued += w->ahead.size();  // sent ahead, not started
    s.waiting = tasks_.parked();
    return s;
  }

  auto take_frame_buffer() -> byte_buffer {
    // Most pools never keep a buffer (small tasks): then a submit does not take the lock here.
    if (spare_frame_count_.load(std::memory_order_relaxed) == 0) return {};
    scoped_lock lock(mutex_);
    if (spare_frames_.empty()) return {};
    byte_buffer b = std::move(spare_frames_.back());
    spare_frames_.pop_back();
    spare_frame_count_.store(spare_frames_.size(), std::memory_order_relaxed);
    return b;
  }

  void wait_for_room(std::uint64_t id, room_completion done) {
    scoped_lock lock(mutex_);
    if (closing_) {
      completions_.add(std::move(done),
                       std::make_exception_ptr(
                           pool_closed("procpool: waited for room in a pool that was shut down")));
    } else if (tasks_.has_room()) {
      completions_.add(std::move(done), nullptr);
    } else {
      tasks_.add_room_waiter(id, std::move(done));
    }
    auto outcomes = take_gathered();
    lock.unlock();
    deliver(std::move(outcomes));
  }

  void cancel_room_wait(std::uint64_t id) {
    scoped_lock lock(mutex_);
    completions_.add(tasks_.take_room_waiter(id),
                     std::make_exception_ptr(
                         cancelled("procpool: the wait for room in the queue was cancelled")));
    auto outcomes = take_gathered();
    lock.unlock();
    deliver(std::move(outcomes));
  }

  auto worker_pids() const -> std::vector<int> {
    scoped_lock lock(mutex_);
    std::vector<int> pids;
    for (const auto& [id, w] : workers_) {
      if (w->process.pid() != 0) pids.push_back(w->process.pid());
    }
    return pids;
  }

 private:
  // ---- the lock's epilogue ----

  // What a critical section gathered: completions, and whether it collected output lines.
  struct gathered {
    completion_batch completions;
    bool has_lines = false;
  };

  // Every path that takes mutex_ and may complete something ends with
  //   auto outcomes = take_gathered(); lock.unlock(); deliver(std::move(outcomes));
  // so that what was gathered under the lock is handed on after it is released.
  gathered take_gathered() PROCPOOL_REQUIRES(mutex_) {
    return {std::exchange(completions_, {}), !pending_output_.empty()};
  }

  // Lines first: a task's output reaches the sink before its outcome is posted. If another thread
  // took our lines, flush_output waits for it to hand them on.
  void deliver(gathered done) PROCPOOL_EXCLUDES(mutex_) {
    if (done.has_lines) flush_output();
    std::move(done.completions).run();
  }

  // Runs `f` under the lock unless the pool has been destroyed, then completes what it gathered:
  // the shape of every asynchronous handler below.
  // (`f` starts with mutex_.assert_held(): the analysis cannot see into a lambda's caller.)
  template <class F>
  void guarded(F&& f) PROCPOOL_EXCLUDES(mutex_) {
    scoped_lock lock(mutex_);
    if (destroyed_) return;
    f();
    auto outcomes = take_gathered();
    lock.unlock();
    deliver(std::move(outcomes));
  }

  // Hands collected lines to the sink, outside the pool's lock and in the order they were read.
  void flush_output() {
    std::lock_guard order(emitter_.order_mutex());
    std::vector<collected_line> lines;
    {
      scoped_lock lock(mutex_);
      lines.swap(pending_output_);
    }
    emitter_.emit(lines);
  }

  // ---- everything below runs with mutex_ held ----

  void finish(task& t, std::exception_ptr ep, byte_buffer result = {}) PROCPOOL_REQUIRES(mutex_) {
    if (t.deadline) t.deadline->cancel();
    if (t.request.progress) t.request.progress->set_reports_received(t.progress_reports);
    completions_.add(std::move(t.done), std::move(ep), std::move(result));
  }

  static auto ending_of(const task& t) -> std::exception_ptr {
    return t.ending ? t.ending
                    : std::make_exception_ptr(pool_closed("procpool: the pool was destroyed"));
  }

  // Why a new task cannot be taken in; null when it can.
  std::exception_ptr refuse(const task& t) PROCPOOL_REQUIRES(mutex_) {
    if (closing_) {
      return std::make_exception_ptr(pool_closed("procpool: submit after the pool was shut down"));
    }
    if (!zygote_error_.empty()) return std::make_exception_ptr(worker_start_failed(zygote_error_));
    if (t.request.frame.size() - sizeof(frame_header) > options_.max_message_bytes) {
      return std::make_exception_ptr(serialization_error(
          "procpool: the task's arguments encode to " + std::to_string(t.request.frame.size()) +
          " bytes, more than pool_options::max_message_bytes"));
    }
    if (!tasks_.has_room() && options_.when_queue_full == queue_full_action::fail) {
      ++stats_.rejected;
      return std::make_exception_ptr(
          queue_full("procpool: the queue holds pool_options::max_queue = " +
                     std::to_string(options_.max_queue) + " tasks; the pool is overloaded"));
    }
    return nullptr;
  }

  std::shared_ptr<worker> worker_holding(const task& t) const PROCPOOL_REQUIRES(mutex_) {
    for (const auto& [id, w] : workers_) {
      if (std::find_if(w->ahead.begin(), w->ahead.end(),
                       [&](const auto& n) { return n.get() == &t; }) != w->ahead.end()) {
        return w;
      }
    }
    return nullptr;
  }

  std::shared_ptr<worker> worker_running(const task& t) const PROCPOOL_REQUIRES(mutex_) {
    for (const auto& [id, w] : workers_) {
      if (w->current.get() == &t) return w;
    }
    return nullptr;
  }

  // The function's readable name, for error messages (output lines are named by the emitter).
  static auto name_of(task& t) -> const std::string& {
    if (t.name.empty()) t.name = function_name(t.request.function, t.request.callable_type);
    return t.name;
  }

  static auto label_of(const worker& w) -> output_label {
    output_label l{w.slot, w.process.pid(), 0, nullptr};
    if (w.current) {
      l.function = w.current->request.function;
      l.callable_type = w.current->request.callable_type;
    }
    return l;
  }

  // ---- the queue and backpressure ----

  // Moves parked tasks into the queue while it has room; releases the room waiters if some is left.
  void release_room() PROCPOOL_REQUIRES(mutex_) {
    for (auto& done : tasks_.admit_parked()) completions_.add(std::move(done), nullptr);
  }

  void fail_room_waiters() PROCPOOL_REQUIRES(mutex_) {
    for (auto& done : tasks_.take_room_waiters()) {
      completions_.add(std::move(done),
                       std::make_exception_ptr(pool_closed(
                           "procpool: the pool shut down while waiting for room in its queue")));
    }
  }

  // Fails tasks not started with pool_closed, and marks running tasks to end that way once
  // `signal` has stopped their workers.
  void abandon_tasks(int signal) PROCPOOL_REQUIRES(mutex_) {
    fail_room_waiters();
    for (auto& t : tasks_.take_all_unstarted()) {
      finish(*t, std::make_exception_ptr(
                     pool_closed("procpool: the pool shut down before the task started")));
    }
    for (auto& [id, w] : workers_) {
      for (auto& n : std::exchange(w->ahead, {})) {
        tasks_.forget(n->id);
        finish(*n, std::make_exception_ptr(pool_closed(
                       "procpool: the pool shut down before the task (held by a busy worker) "
                       "finished")));
      }
      if (!w->current || w->current->ending) continue;
      w->current->ending = std::make_exception_ptr(
          pool_closed("procpool: the pool shut down while the task ran; its worker (pid " +
                      std::to_string(w->process.pid()) + ") was stopped"));
      stop(*w, signal);
    }
  }

  void fail_queue(const std::string& why) PROCPOOL_REQUIRES(mutex_) {
    for (auto& t : tasks_.take_all_unstarted()) {
      finish(*t, std::make_exception_ptr(worker_start_failed(why)));
    }
    release_room();
  }

  void dispatch() PROCPOOL_REQUIRES(mutex_) {
    // Workers running a task that is not being ended; spares make the rest wait for a slot.
    std::size_t running = 0;
    for (auto& [id, w] : workers_) {
      if (w->phase == worker_phase::busy) ++running;
    }
    for (auto& [id, w] : workers_) {
      if (w->phase != worker_phase::idle) continue;
      if (tasks_.queued() != 0 && running < target_) {
        ++running;
        assign(w, tasks_.pop());
        release_room();  // so a later idle worker in this loop finds the next parked task
      } else if (closing_ && tasks_.queued() == 0) {
        retire(*w);
      }
    }
    // Tasks still queued go ahead of time to busy workers: a worker then starts its next task as
    // soon as it has written an outcome, without waiting for the pool's answer. A worker is topped
    // up once it holds half its allowance or less, so a stream of tasks costs one write for
    // several.
    for (auto& [id, w] : workers_) {
      if (tasks_.queued() == 0) break;
      const std::size_t room = room_ahead(*w);
      std::vector<std::shared_ptr<task>> batch;
      while (batch.size() < room && tasks_.queued() != 0 && can_go_ahead(*tasks_.front())) {
        batch.push_back(tasks_.pop());
      }
      if (!batch.empty()) send_ahead(w, std::move(batch));
    }
    release_room();
  }

  // How many more tasks the worker may be sent ahead now.
  [[nodiscard]] std::size_t room_ahead(const worker& w) const PROCPOOL_REQUIRES(mutex_) {
    const std::size_t allowance = std::min(options_.send_ahead, worker_link::max_frames_per_send);
    const bool can_take = w.phase == worker_phase::busy && !w.writing && !w.worn && w.current &&
                          !w.current->ending && w.ahead.size() <= allowance / 2;
    if (!can_take) return 0;
    std::size_t room = allowance - w.ahead.size();
    if (options_.max_tasks_per_worker != 0) {
      // None beyond its last task before it is recycled.
      const std::size_t committed = w.tasks_run + 1 + w.ahead.size();
      room = std::min(room, options_.max_tasks_per_worker > committed
                                ? options_.max_tasks_per_worker - committed
                                : std::size_t{0});
    }
    return room;
  }

  [[nodiscard]] std::chrono::milliseconds effective_timeout(const task& t) const {
    return t.request.timeout.count() > 0 ? t.request.timeout : options_.task_timeout;
  }

  // Only when asked (pool_options::send_ahead). A large task goes through the worker's shared
  // region, which the running task reads; with a bounded queue nothing goes ahead, so that
  // max_queue counts every task not started. A task the caller cancels while it is held is
  // skipped by its worker (ask_skip); one held behind a task the pool ends early is queued again
  // unless the worker had started it (on_outcome, on_worker_exit).
  [[nodiscard]] bool can_go_ahead(const task& t) const {
    return options_.send_ahead != 0 && options_.max_queue == 0 &&
           t.request.frame.size() - sizeof(frame_header) < shared_task_threshold;
  }

  void send_ahead(const std::shared_ptr<worker>& w, std::vector<std::shared_ptr<task>> batch)
      PROCPOOL_REQUIRES(mutex_) {
    for (auto& t : batch) {
      put_frame_header(t->request.frame, frame_kind::task, t->id,
                       t->request.cancellable ? frame_flag_skippable : 0);
      ++t->attempts;
      w->ahead.push_back(t);
    }
    send_frames(w, std::move(batch));
  }

  // ---- sending a task ----

  void assign(const std::shared_ptr<worker>& w, const std::shared_ptr<task>& t)
      PROCPOOL_REQUIRES(mutex_) {
    w->current = t;
    w->on(worker_event::assigned);
    byte_buffer& frame = t->request.frame;
    put_frame_header(frame, frame_kind::task, t->id);
    start_deadline(w, t);
    ++t->attempts;
    const std::span<const std::byte> payload = std::span(frame).subspan(sizeof(frame_header));
    if (payload.size() >= shared_task_threshold) {
      switch (w->link.send_shared(t->id, payload)) {
        case worker_link::shared_result::sent:
          sent_frame(*t);
          return;
        case worker_link::shared_result::lost:
          channel_lost(*w);
          return;
        case worker_link::shared_result::unavailable:
          break;  // through the channel, then
      }
    }
    send_frames(w, {t});
  }

  // Writes the tasks' frames to the worker's channel in one system call: at once when the socket
  // takes them all, else the rest asynchronously (nothing else is written to that channel
  // meanwhile: see room_ahead).
  void send_frames(const std::shared_ptr<worker>& w, std::vector<std::shared_ptr<task>> tasks)
      PROCPOOL_REQUIRES(mutex_) {
    std::vector<asio::const_buffer> frames;
    frames.reserve(tasks.size());
    for (const auto& t : tasks) frames.push_back(asio::buffer(t->request.frame));
    std::size_t sent = 0;
    switch (w->link.try_send(frames, sent)) {
      case worker_link::send_result::sent:
        if (w->current == tasks.front()) sent_frame(*tasks.front());
        return;
      case worker_link::send_result::lost:
        channel_lost(*w);
        return;
      case worker_link::send_result::partly_sent:
        break;
    }
    // What is left, from the first byte not sent (the sequence is copied into the operation).
    std::vector<asio::const_buffer> rest;
    for (const auto& f : frames) {
      if (sent >= f.size()) {
        sent -= f.size();
        continue;
      }
      rest.push_back(f + sent);
      sent = 0;
    }
    std::vector<unsigned> attempts;
    for (const auto& t : tasks) attempts.push_back(t->attempts);
    w->writing = true;
    const std::uint64_t generation = ++w->write_generation;
    asio::async_write(
        w->link.socket(), rest,
        [self = shared_from_this(), w, tasks = std::move(tasks), attempts = std::move(attempts),
         generation](boost::system::error_code ec, std::size_t) {
          scoped_lock lock(self->mutex_);
          // The worker has the frame of the task it runs now, unless a later
          // attempt (another write) owns it. A task held ahead keeps its frame; so
          // does one whose worker is gone (it may be queued again).
          const auto& t = tasks.front();
          if (!ec && t->attempts == attempts.front() && self->is_ours(*w) && w->current == t) {
            self->sent_frame(*t);
          }
          self->write_done(w, generation, ec);
        });
  }

  // A write started by send_frames or send_skip has completed. Only the latest one clears
  // `writing` (a late completion of an earlier write must not, under a newer write); then the
  // skips that waited for it go out.
  void write_done(const std::shared_ptr<worker>& w, std::uint64_t generation,
                  boost::system::error_code ec) PROCPOOL_REQUIRES(mutex_) {
    if (destroyed_ || !is_ours(*w)) return;
    if (ec) {
      channel_lost(*w);
      return;
    }
    if (generation != w->write_generation) return;
    w->writing = false;
    for (const auto& skip : std::exchange(w->unsent_skips, {})) send_skip(w, skip);
  }

  // Asks the worker not to start a task it holds ahead: it answers `skipped` if it had not started
  // it, else the task's outcome. A 24-byte frame; behind a write still in flight it waits for it.
  void send_skip(const std::shared_ptr<worker>& w, const frame_header& h)
      PROCPOOL_REQUIRES(mutex_) {
    if (w->writing) {
      w->unsent_skips.push_back(h);
      return;
    }
    auto frame = std::make_shared<frame_header>(h);
    std::size_t sent = 0;
    const std::span<const std::byte> bytes(reinterpret_cast<const std::byte*>(frame.get()),
                                           sizeof h);
    switch (w->link.try_send(bytes, sent)) {
      case worker_link::send_result::sent:
        return;
      case worker_link::send_result::lost:
        channel_lost(*w);
        return;
      case worker_link::send_result::partly_sent:
        break;
    }
    w->writing = true;
    const std::uint64_t generation = ++w->write_generation;
    asio::async_write(w->link.socket(), asio::buffer(bytes.data() + sent, bytes.size() - sent),
                      [self = shared_from_this(), w, frame, generation](
                          boost::system::error_code ec, std::size_t) {
                        scoped_lock lock(self->mutex_);
                        self->write_done(w, generation, ec);
                      });
  }

  // The task's frame has reached its worker, which runs it now: keep the buffer for the next task,
  // unless a crash may send the frame again. (A task sent ahead keeps its frame until it ends: it
  // is sent again if its worker dies before starting it.)
  void sent_frame(task& t) PROCPOOL_REQUIRES(mutex_) {
    if (t.request.crash_retries != 0) return;
    keep_frame_buffer(std::exchange(t.request.frame, {}));
  }

  // Large frame buffers are kept for the next tasks: on a machine where a page fault is expensive,
  // faulting in a fresh 64 MiB buffer costs several times what copying into a warm one does. At
  // most one per worker is kept, so the pool holds no more than it had in flight.
  void keep_frame_buffer(byte_buffer b) PROCPOOL_REQUIRES(mutex_) {
    constexpr std::size_t worth_keeping = 256 * 1024;
    if (b.capacity() < worth_keeping || spare_frames_.size() >= target_) return;
    spare_frames_.push_back(std::move(b));
    spare_frame_count_.store(spare_frames_.size(), std::memory_order_relaxed);
  }

  // The task timeout counts from here, the moment a worker takes the task.
  void start_deadline(const std::shared_ptr<worker>& w, const std::shared_ptr<task>& t)
      PROCPOOL_REQUIRES(mutex_) {
    const auto limit = effective_timeout(*t);
    if (limit.count() <= 0) return;
    t->deadline = std::make_unique<asio::steady_timer>(ex_, limit);
    t->deadline->async_wait([self = shared_from_this(), w, t, limit](boost::system::error_code ec) {
      self->guarded([&] {
        self->mutex_.assert_held();
        if (ec || w->current != t || t->ending) return;
        t->ending = std::make_exception_ptr(timeout_error(
            "procpool: " + name_of(*t) + " exceeded its task timeout of " +
            std::to_string(limit.count()) + " ms; its worker (pid " +
            std::to_string(w->process.pid()) + ") and everything it started were killed"));
        ++self->stats_.timed_out;
        self->stop(*w, SIGKILL);
      });
    });
  }

  // ---- stopping workers ----

  void retire(worker& w) PROCPOOL_REQUIRES(mutex_) {
    w.on(worker_event::retire);
    w.link.shutdown_send();
  }

  void stop(worker& w, int signal) PROCPOOL_REQUIRES(mutex_) {
    w.on(worker_event::stop);
    w.process.signal(signal);
  }

  // The worker broke the protocol: it is killed, and its task fails with worker_crashed.
  void violation(worker& w, std::string reason) PROCPOOL_REQUIRES(mutex_) {
    if (w.kill_reason.empty()) w.kill_reason = std::move(reason);
    // Kill before closing: a worker blocked writing to the channel would otherwise die of SIGPIPE
    // first, and its status would name that instead of the pool's kill.
    stop(w, SIGKILL);
    w.link.close();
  }

  void channel_lost(worker& w) PROCPOOL_REQUIRES(mutex_) {
    // It died or closed its channel; either way it cannot serve. Its exit event finishes it.
    if (w.phase == worker_phase::retiring) return;
    if (w.process.pid() != 0 && w.kill_reason.empty() && !process_is_exiting(w.process.pid())) {
      w.hung_up_alive = true;
    }
    stop(w, SIGKILL);
  }

  // Closes everything the pool holds for a worker now, rather than when the last pending handler
  // that refers to it runs, so a finished pool leaves no descriptor behind at any moment.
  void release_descriptors(worker& w) PROCPOOL_REQUIRES(mutex_) {
    w.link.close();
    w.output.close(label_of(w), pending_output_);
    w.process.release();
  }

  // ---- starting workers ----

  void spawn_worker() PROCPOOL_REQUIRES(mutex_) {
    std::string error;
    auto fds = make_worker_descriptors(error);
    if (!fds) {
      start_failed(error);
      return;
    }
    const std::uint64_t spawn_id =
        zygote_.spawn(supervisor_.setup(), supervisor_.readable_paths(),
                      {fds->worker_channel.get(), fds->worker_out.get(), fds->worker_err.get()});
    if (spawn_id == 0) {
      lose_zygote(std::string("procpool: the fork server is gone: ") + std::strerror(errno));
      return;
    }
    auto w = std::make_shared<worker>(ex_, *fds, supervisor_.tail());
    w->spawn_id = spawn_id;
    w->slot = supervisor_.take_slot();
    workers_[spawn_id] = w;
    watch_channel(w);
    watch_output(w, output_stream::out);
    watch_output(w, output_stream::err);
  }

  void replenish() PROCPOOL_REQUIRES(mutex_) {
    if (!zygote_error_.empty()) return;
    if (closing_ && tasks_.queued() == 0) return;
    const auto decision = supervisor_.replenish(live_workers());
    for (std::size_t i = 0; i < decision.spawn_now; ++i) {
      ++stats_.respawned;
      spawn_worker();
    }
    if (!decision.arm_spare_timer) return;
    spare_timer_.expires_after(spare_delay);
    spare_timer_.async_wait([self = shared_from_this()](boost::system::error_code ec) {
      self->guarded([&] {
        self->mutex_.assert_held();
        self->supervisor_.spare_timer_done();
        if (!ec && !self->closing_) self->start_missing_spares();
      });
    });
  }

  void start_missing_spares() PROCPOOL_REQUIRES(mutex_) {
    if (!zygote_error_.empty()) return;
    for (auto n = supervisor_.spares_missing(live_workers()); n != 0; --n) {
      ++stats_.respawned;
      spawn_worker();
    }
  }

  [[nodiscard]] std::size_t live_workers() const PROCPOOL_REQUIRES(mutex_) {
    return static_cast<std::size_t>(
        std::count_if(workers_.begin(), workers_.end(),
                      [](const auto& kv) { return will_serve(kv.second->phase); }));
  }

  void start_failed(const std::string& why) PROCPOOL_REQUIRES(mutex_) {
    const auto decision = supervisor_.start_failed();
    switch (decision.what) {
      case worker_supervisor::failure_decision::action::give_up:
        fail_queue(why);
        break;
      case worker_supervisor::failure_decision::action::back_off:
        respawn_timer_.expires_after(decision.delay);
        respawn_timer_.async_wait([self = shared_from_this()](boost::system::error_code ec) {
          self->guarded([&] {
            self->mutex_.assert_held();
            self->supervisor_.back_off_done();
            if (!ec) self->replenish();
          });
        });
        break;
      case worker_supervisor::failure_decision::action::backing_off:
        break;
    }
    check_shutdown_done();
  }

  // ---- a worker's output ----

  void watch_output(const std::shared_ptr<worker>& w, output_stream s) PROCPOOL_REQUIRES(mutex_) {
    w->output.pipe(s).async_wait(asio::posix::descriptor_base::wait_read,
                                 [self = shared_from_this(), w, s](boost::system::error_code ec) {
                                   self->guarded([&] {
                                     self->mutex_.assert_held();
                                     if (ec) return;
                                     if (w->output.read(s, label_of(*w), self->pending_output_)) {
                                       self->watch_output(w, s);
                                     }
                                   });
                                 });
  }

  // ---- frames from a worker ----

  // A worker's channel is read into its buffer with async_read_some, which Asio performs without
  // a speculative attempt once a read has drained the socket: a small result costs one recv().
  // Each completion handles every complete frame in the buffer.
  void watch_channel(const std::shared_ptr<worker>& w) PROCPOOL_REQUIRES(mutex_) {
    w->link.socket().async_read_some(
        w->link.read_buffer(),
        [self = shared_from_this(), w](boost::system::error_code ec, std::size_t n) {
          self->guarded([&] {
            self->mutex_.assert_held();
            if (!self->is_ours(*w)) return;
            if (ec) {
              self->on_channel_end(*w);  // end of file, an error, or closed by the pool
              return;
            }
            w->link.received(n);
            if (self->handle_frames(*w)) {
              self->watch_channel(w);
            } else {
              self->on_channel_end(*w);  // a protocol violation closed it
            }
          });
        });
  }

  // Handles the complete frames received; false after a protocol violation.
  bool handle_frames(worker& w) PROCPOOL_REQUIRES(mutex_) {
    std::string wrong;
    for (;;) {
      const channel_state state{has_greeted(w.phase), w.current ? w.current->id : 0,
                                options_.max_message_bytes, w.current && w.current->skip_asked};
      auto frame = w.link.next_frame(state, wrong);
      if (!frame) break;
      if (!on_frame(w, *frame)) return false;
    }
    if (wrong.empty()) return true;
    violation(w, std::move(wrong));
    return false;
  }

  // One complete, header-checked frame; false after a protocol violation.
  bool on_frame(worker& w, const worker_link::received_frame& f) PROCPOOL_REQUIRES(mutex_) {
    switch (f.header.kind) {
      case frame_kind::hello:
        if (auto wrong = check_hello(f.payload, build_id()); !wrong.empty()) {
          violation(w, std::move(wrong));
          return false;
        }
        w.on(worker_event::greeted);
        if (w.phase == worker_phase::idle) supervisor_.worker_ready();
        dispatch();
        return true;
      case frame_kind::result:
      case frame_kind::exception:
        return on_outcome(w, f);
      case frame_kind::skipped:
        on_skipped(w);
        return true;
      case frame_kind::progress:
        return on_progress(w, f);
      default:
        return true;  // check_header admits no other kind
    }
  }

  bool on_outcome(worker& w, const worker_link::received_frame& f) PROCPOOL_REQUIRES(mutex_) {
    auto t = w.current;  // check_header: the frame names the task this worker runs
    if (t->ending) {
      outcome_after_kill(w);
      return true;
    }
    // With a task held ahead, the worker may already be printing for it: its unfinished line is
    // not this task's last one. (Its complete lines may still be named after this task.)
    w.output.collect(label_of(w), pending_output_, /*task_over=*/w.ahead.empty(),
                     (f.header.flags & frame_flag_output_unread) != 0);
    std::exception_ptr ep;
    if (f.header.kind == frame_kind::exception) {
      std::string wrong;
      ep = decode_exception(f.payload, name_of(*t), w.process.pid(), wrong);
      if (!ep) {
        violation(w, std::move(wrong));
        return false;
      }
      ++stats_.failed;
    } else {
      ++stats_.completed;
    }
    tasks_.forget(t->id);
    finish(*t, ep, ep ? byte_buffer{} : byte_buffer(f.payload.begin(), f.payload.end()));
    ++w.tasks_run;
    next_task(w);
    return true;
  }

  // A progress report for the running task (check_header: it names it, and it is bounded).
  // Decoded even when nobody listens, so that a malformed one is a violation either way.
  bool on_progress(worker& w, const worker_link::received_frame& f) PROCPOOL_REQUIRES(mutex_) {
    progress p;
    if (auto wrong = decode_progress(f.payload, p); !wrong.empty()) {
      violation(w, std::move(wrong));
      return false;
    }
    auto& t = *w.current;
    if (t.request.progress && !t.ending)
      completions_.add(t.request.progress, std::move(p), ++t.progress_reports);
    return true;
  }

  // The worker skipped its current task (held ahead, then cancelled) instead of running it.
  void on_skipped(worker& w) PROCPOOL_REQUIRES(mutex_) {
    auto t = w.current;  // check_header: the frame names it, and the pool asked for the skip
    if (t->ending) {
      outcome_after_kill(w);
      return;
    }
    tasks_.forget(t->id);
    ++stats_.cancelled;
    finish(*t, std::make_exception_ptr(cancelled(
                   "procpool: task cancelled before it started (its worker, which held it ahead, "
                   "skipped it)")));
    next_task(w);
  }

  // An outcome for a task the pool already ended (a timeout or a cancellation is killing its
  // worker): the decided outcome stands. But the worker wrote it before the kill landed, so it
  // has started the next task it held: that task runs into the kill, and fails with it rather
  // than being queued again (it may have run in part).
  void outcome_after_kill(worker& w) PROCPOOL_REQUIRES(mutex_) {
    if (w.ahead.empty()) return;  // the death delivers the decided outcome
    auto done = std::exchange(w.current, std::move(w.ahead.front()));
    w.ahead.pop_front();
    tasks_.forget(done->id);
    finish(*done, done->ending);
    if (!w.current->ending) {
      w.current->ending = std::make_exception_ptr(worker_crashed(
          w.process.pid(), SIGKILL, -1, name_of(*w.current),
          "the pool killed its worker to end the task before it, which finished just before the "
          "kill landed, when this task had started; it may have run in part",
          w.output.tail()));
      ++stats_.crashed;
    }
  }

  // The worker is done with its current task: it starts the next one it holds, or is idle.
  void next_task(worker& w) PROCPOOL_REQUIRES(mutex_) {
    w.current.reset();
    w.on(worker_event::finished);
    const bool due = w.worn || worn_out(w);
    if (!w.ahead.empty()) {
      // The worker reads the next task sent ahead as soon as it has written this outcome; if it is
      // due for recycling, nothing more goes ahead and it retires after those it holds.
      w.worn = due;
      w.current = std::move(w.ahead.front());
      w.ahead.pop_front();
      w.on(worker_event::assigned);
      start_deadline(workers_.at(w.spawn_id), w.current);
      if (w.current->kill_if_started) kill_unless_skipped(workers_.at(w.spawn_id), w.current);
    } else if (due && !closing_) {
      ++stats_.recycled;
      retire(w);
      replenish();  // the replacement starts now, while the old worker exits
    }
    dispatch();
  }

  // A task cancelled terminally while held ahead has become current: its worker either skipped it
  // (a `skipped` frame is on its way) or had started it before the skip arrived. It gets a moment
  // to say which; still running after that, it is killed like any running task cancelled so.
  void kill_unless_skipped(const std::shared_ptr<worker>& w, const std::shared_ptr<task>& t)
      PROCPOOL_REQUIRES(mutex_) {
    constexpr auto moment = std::chrono::milliseconds(10);
    t->deadline = std::make_unique<asio::steady_timer>(ex_, moment);
    t->deadline->async_wait([self = shared_from_this(), w, t](boost::system::error_code ec) {
      self->guarded([&] {
        self->mutex_.assert_held();
        if (ec || w->current != t || t->ending) return;
        t->ending = std::make_exception_ptr(
            cancelled("procpool: task cancelled while held ahead; its worker (pid " +
                      std::to_string(w->process.pid()) +
                      ") had started it before it saw the cancellation and was killed"));
        ++self->stats_.cancelled;
        self->stop(*w, SIGKILL);
      });
    });
  }

  bool worn_out(const worker& w) const PROCPOOL_REQUIRES(mutex_) {
    return (options_.max_tasks_per_worker != 0 && w.tasks_run >= options_.max_tasks_per_worker) ||
           (options_.max_worker_rss_bytes != 0 &&
            resident_bytes(w.process.pid()) > options_.max_worker_rss_bytes);
  }

  // ---- events from the fork server ----

  void read_events() PROCPOOL_REQUIRES(mutex_) {
    zygote_.connection().async_wait(
        asio::posix::descriptor_base::wait_read,
        [self = shared_from_this()](boost::system::error_code ec) {
          self->guarded([&] {
            self->mutex_.assert_held();
            if (!self->zygote_.is_open()) return;
            if (ec) {
              self->lose_zygote("procpool: lost the fork server: " + ec.message());
            } else if (self->handle_events()) {
              self->read_events();
            }
          });
        });
  }

  // Handles every event queued now; false once the fork server has gone.
  bool handle_events() PROCPOOL_REQUIRES(mutex_) {
    std::vector<received_event> events;
    const bool alive = zygote_.drain(events);
    for (auto& e : events) on_event(e.event, std::move(e.fd));
    if (alive) return true;
    lose_zygote("procpool: the fork server exited");
    return false;
  }

  void on_event(const zygote_event& e, unique_fd fd) PROCPOOL_REQUIRES(mutex_) {
    switch (e.kind) {
      case zygote_event_kind::spawned: {
        auto it = workers_.find(e.spawn_id);
        if (it == workers_.end()) return;
        auto& w = *it->second;
        w.process.adopt(e.pid, std::move(fd));
        w.on(worker_event::forked);
        if (w.phase == worker_phase::idle) supervisor_.worker_ready();
        dispatch();
        return;
      }
      case zygote_event_kind::spawn_failed: {
        // As for a worker that exited: its channel, pipes and slot are free again (a slot kept
        // here would give the next worker a number past workers - 1).
        if (auto it = workers_.find(e.spawn_id); it != workers_.end()) {
          auto w = it->second;
          workers_.erase(it);
          release_descriptors(*w);
          supervisor_.free_slot(w->slot);
        }
        start_failed(std::string("procpool: fork failed: ") + std::strerror(e.status));
        return;
      }
      case zygote_event_kind::exited: {
        auto it = std::find_if(workers_.begin(), workers_.end(),
                               [&](const auto& kv) { return kv.second->process.pid() == e.pid; });
        if (it == workers_.end()) return;
        on_exit_event(it->second, {e.status, e.memory});
        return;
      }
    }
  }

  // The fork server reaped the worker. Its death is handled once its channel has ended too, so that
  // what it wrote before dying is read first (end-of-file follows at once: the server killed its
  // process group). A descendant that left the group may hold the channel open: then the death is
  // handled after exit_grace regardless.
  void on_exit_event(const std::shared_ptr<worker>& w, worker::exit_report report)
      PROCPOOL_REQUIRES(mutex_) {
    w->exit = report;
    w->on(worker_event::stop);  // no task goes to it while its last frames are read
    if (w->channel_ended || destroyed_) {
      finish_death(*w);
      return;
    }
    constexpr auto exit_grace = std::chrono::milliseconds(100);
    w->exit_timer = std::make_unique<asio::steady_timer>(ex_, exit_grace);
    w->exit_timer->async_wait([self = shared_from_this(), w](boost::system::error_code ec) {
      self->guarded([&] {
        self->mutex_.assert_held();
        if (!ec && self->is_ours(*w)) self->finish_death(*w);
      });
    });
  }

  // The channel ended (end-of-file, an error, or the pool closed it).
  void on_channel_end(worker& w) PROCPOOL_REQUIRES(mutex_) {
    w.channel_ended = true;
    if (w.exit) {
      finish_death(w);
    } else {
      channel_lost(w);
    }
  }

  [[nodiscard]] bool is_ours(const worker& w) const PROCPOOL_REQUIRES(mutex_) {
    auto it = workers_.find(w.spawn_id);
    return it != workers_.end() && it->second.get() == &w;
  }

  void finish_death(worker& w) PROCPOOL_REQUIRES(mutex_) {
    auto it = workers_.find(w.spawn_id);
    if (it == workers_.end() || it->second.get() != &w) return;
    const auto keep = it->second;
    workers_.erase(it);
    if (w.exit_timer) w.exit_timer->cancel();
    on_worker_exit(w, w.exit->status, w.exit->memory);
  }

  void on_worker_exit(worker& w, int status, std::uint32_t memory) PROCPOOL_REQUIRES(mutex_) {
    w.output.collect(label_of(w), pending_output_);
    release_descriptors(w);
    supervisor_.free_slot(w.slot);
    const exit_diagnosis why =
        diagnose_exit({status, memory, w.kill_reason, w.hung_up_alive, options_.cpu_time_limit,
                       options_.memory_max_bytes, w.output.tail()});
    const pid_t pid = w.process.pid();
    // Tasks sent ahead never started: they run on other workers, in their order, ahead of
    // everything queued, and that does not count as a retry; one the caller cancelled meanwhile
    // ends cancelled. Unless the channel did not end (a descendant holds it; see on_exit_event):
    // then an outcome may be unread, and the first task held may have started.
    auto ahead = std::exchange(w.ahead, {});
    if (!w.channel_ended && !ahead.empty() && w.kill_reason.empty()) {
      w.kill_reason = "died with its channel still open, perhaps after starting this task";
      auto first = ahead.front();
      ahead.pop_front();
      tasks_.forget(first->id);
      ++stats_.crashed;
      finish(*first, std::make_exception_ptr(
                         worker_crashed(pid, why.signal, why.exit_code, name_of(*first),
                                        "its worker " + w.kill_reason, w.output.tail())));
      w.kill_reason.clear();
    }
    if (w.kill_reason.empty()) {
      for (auto n = ahead.rbegin(); n != ahead.rend(); ++n) {
        if ((*n)->skip_asked) {
          tasks_.forget((*n)->id);
          ++stats_.cancelled;
          finish(**n,
                 std::make_exception_ptr(cancelled("procpool: task cancelled before it started")));
        } else {
          tasks_.push_front(*n);
        }
      }
    } else {
      // It broke the protocol: whether it had started a task held ahead cannot be known.
      for (auto& n : ahead) {
        tasks_.forget(n->id);
        ++stats_.crashed;
        finish(*n, std::make_exception_ptr(worker_crashed(
                       pid, 0, -1, name_of(*n), "it " + w.kill_reason + " while holding this task",
                       w.output.tail())));
      }
    }
    if (auto t = std::exchange(w.current, nullptr)) {
      if (!t->ending && !t->skip_asked && t->request.crash_retries > 0 && !closing_ &&
          !t->request.frame.empty()) {
        // Run it again on another worker, ahead of everything queued.
        --t->request.crash_retries;
        tasks_.push_front(t);
        ++stats_.retried;
        replenish();
        dispatch();
        check_shutdown_done();
        return;
      }
      tasks_.forget(t->id);
      if (t->ending) {
        finish(*t, t->ending);
      } else {
        ++stats_.crashed;
        finish(*t, std::make_exception_ptr(worker_crashed(pid, why.signal, why.exit_code,
                                                          name_of(*t), why.reason, w.output.tail(),
                                                          why.out_of_memory)));
      }
    }
    if (dies_unstarted(w.phase) && !destroyed_) {
      const worker_crashed crash(pid, why.signal, why.exit_code, "its start-up", why.reason,
                                 w.output.tail());
      start_failed(std::string("procpool: a worker failed to start: ") + crash.what());
      return;
    }
    if (!destroyed_) replenish();
    dispatch();
    check_shutdown_done();
  }

  void lose_zygote(const std::string& why) PROCPOOL_REQUIRES(mutex_) {
    if (!zygote_error_.empty()) return;
    zygote_error_ = why;
    fail_queue(why);
    // Without the fork server nobody reports these workers' deaths; they die with it (their parent
    // death signal), so end their tasks now.
    for (auto& [id, w] : workers_) {
      release_descriptors(*w);
      for (auto& n : std::exchange(w->ahead, {})) {
        tasks_.forget(n->id);
        finish(*n, std::make_exception_ptr(worker_start_failed(why)));
      }
      if (auto t = std::exchange(w->current, nullptr)) {
        tasks_.forget(t->id);
        finish(*t, t->ending ? t->ending : std::make_exception_ptr(worker_start_failed(why)));
      }
    }
    workers_.clear();
    supervisor_.free_all_slots();
    check_shutdown_done();
  }

  void check_shutdown_done() PROCPOOL_REQUIRES(mutex_) {
    if (!closing_ || !workers_.empty() || !tasks_.empty()) return;
    // Nothing left to hear about: release the fork-server connection, so the pool holds no pending
    // operation and io_context::run() can return once the program's own work is done.
    if (!destroyed_) zygote_.close();
    respawn_timer_.cancel();
    spare_timer_.cancel();
    for (auto& done : std::exchange(shutdown_waiters_, {})) completions_.add(std::move(done));
  }

  mutable annotated_mutex mutex_;  // guards everything below but the atomics and emitter_
  const asio::any_io_executor ex_;
  const pool_options options_;
  const std::size_t target_;  // workers that may run tasks at once (pool_options::workers)
  task_queue tasks_ PROCPOOL_GUARDED_BY(mutex_);
  std::map<std::uint64_t, std::shared_ptr<worker>> workers_
      PROCPOOL_GUARDED_BY(mutex_);  // by spawn id
  worker_supervisor supervisor_ PROCPOOL_GUARDED_BY(mutex_);
  zygote_client zygote_ PROCPOOL_GUARDED_BY(mutex_);
  completion_batch completions_
      PROCPOOL_GUARDED_BY(mutex_);  // gathered under the lock, run after it
  std::vector<collected_line> pending_output_
      PROCPOOL_GUARDED_BY(mutex_);  // read under the lock, emitted after it
  output_emitter emitter_;  // its own order mutex, taken before mutex_, never while holding it
  // Armed on the supervisor's word: the back-off after a start failure, and the spares' delay.
  asio::steady_timer respawn_timer_ PROCPOOL_GUARDED_BY(mutex_);
  asio::steady_timer spare_timer_ PROCPOOL_GUARDED_BY(mutex_);
  std::vector<byte_buffer> spare_frames_
      PROCPOOL_GUARDED_BY(mutex_);                 // sent frames' buffers, for reuse
  std::atomic<std::size_t> spare_frame_count_{0};  // spare_frames_.size(), read without the lock
  std::atomic<std::uint64_t> next_task_id_{1};
  bool closing_ PROCPOOL_GUARDED_BY(mutex_) = false;
  bool destroyed_ PROCPOOL_GUARDED_BY(mutex_) = false;
  std::string zygote_error_ PROCPOOL_GUARDED_BY(mutex_);
  std::vector<shutdown_completion> shutdown_waiters_ PROCPOOL_GUARDED_BY(mutex_);
  pool_stats stats_ PROCPOOL_GUARDED_BY(mutex_);
};

auto make_pool_core(asio::any_io_executor ex, const pool_options& options)
    -> std::shared_ptr<pool_core> {
  auto core = std::make_shared<pool_core>(std::move(ex), options);
  core->start();
  return core;
}

auto take_frame_buffer(pool_core& core) -> byte_buffer {
  return core.take_frame_buffer();
}

auto reserve_task_id(pool_core& core) -> std::uint64_t {
  return core.reserve_task_id();
}

void submit(pool_core& core, std::uint64_t id, task_request request, task_completion done) {
  core.submit(id, std::move(request), std::move(done));
}

void cancel(pool_core& core, std::uint64_t task_id, asio::cancellation_type type) {
  core.cancel(task_id, type);
}

void wait_for_room(pool_core& core, std::uint64_t id, room_completion done) {
  core.wait_for_room(id, std::move(done));
}

void cancel_room_wait(pool_core& core, std::uint64_t id) {
  core.cancel_room_wait(id);
}

void shutdown(pool_core& core, shutdown_mode mode, shutdown_completion done) {
  core.shutdown(mode, std::move(done));
}

void destroy(pool_core& core) noexcept {
  core.destroy();
}

auto stats(const pool_core& core) -> pool_stats {
  return core.stats();
}

auto worker_pids(const pool_core& core) -> std::vector<int> {
  return core.worker_pids();
}

}  // namespace procpool::detail
