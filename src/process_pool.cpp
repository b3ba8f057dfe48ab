// procpool - the pool: queue, dispatch, results, worker deaths, cancellation and shutdown.
// See docs/design.md, "The life of one task".
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <boost/asio/local/stream_protocol.hpp>
#include <boost/asio/posix/stream_descriptor.hpp>
#include <boost/asio/read.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/write.hpp>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <deque>
#include <map>
#include <mutex>
#include <thread>

#include "frame_check.hpp"
#include "internal.hpp"
#include "procpool/detail/pool_core.hpp"
#include "procpool/detail/wire.hpp"
#include "procpool/error.hpp"

namespace procpool::detail {
namespace asio = boost::asio;

namespace {

struct worker;

struct task {
  std::uint64_t id = 0;
  task_request request;
  task_completion done;
  bool running = false;
  bool parked = false;                           // waiting for room in a full queue
  unsigned attempts = 0;                         // times it was written to a worker
  std::unique_ptr<asio::steady_timer> deadline;  // the task timeout, while it runs
  std::string name;  // the function's readable name, computed on first use
  // Set when the pool has decided how a running task ends (cancelled, pool closed) and is waiting
  // for its worker's death to deliver it.
  std::exception_ptr ending;
};

// One of a worker's output streams: a pipe whose read end the pool watches.
struct output_pipe {
  explicit output_pipe(const asio::any_io_executor& ex) : pipe(ex) {}
  asio::posix::stream_descriptor pipe;
  std::string partial;  // text after the last newline
};

struct worker {
  explicit worker(const asio::any_io_executor& ex) : channel(ex), out(ex), err(ex) {}
  std::uint64_t spawn_id = 0;
  std::size_t slot = 0;
  pid_t pid = 0;
  unique_fd pidfd;
  asio::local::stream_protocol::socket channel;
  bool spawned = false;   // the fork server reported its pid
  bool greeted = false;   // it sent a valid hello
  bool retiring = false;  // its channel was closed so that it exits
  std::size_t tasks_run = 0;
  bool channel_closed_alive = false;  // its channel ended while the process still ran
  int pending_signal = 0;             // a signal to send as soon as its pidfd arrives
  std::shared_ptr<task> current;
  byte_buffer rx;  // bytes read from its channel: [rx_begin, rx_end) not yet handled
  std::size_t rx_begin = 0, rx_end = 0;
  std::string kill_reason;  // why the pool killed it, for the error its task gets
  output_pipe out, err;
  std::deque<std::string> tail;  // its last output lines, for worker_crashed
  // Its shared task region (see send_shared): mapped writable here, read-only in the worker.
  std::byte* region = nullptr;
  std::size_t region_size = 0;

  [[nodiscard]] auto ready() const -> bool { return spawned && greeted && !retiring && !current; }
};

constexpr unsigned max_consecutive_start_failures = 5;

// Tasks of at least this many bytes go through the worker's shared region (see send_shared).
constexpr std::size_t shared_task_threshold = std::size_t{1} << 20;

// Whether the process has begun to exit. A dying process sets PF_EXITING before the kernel closes
// its files, so a worker whose channel ended without this flag hung up while still running.
auto exiting(pid_t pid) -> bool {
  constexpr unsigned long pf_exiting = 0x4;
  char path[64];
  std::snprintf(path, sizeof path, "/proc/%d/stat", static_cast<int>(pid));
  unique_fd fd(::open(path, O_RDONLY | O_CLOEXEC));
  if (!fd) return true;
  char buf[512];
  const ssize_t n = ::read(fd.get(), buf, sizeof buf - 1);
  if (n <= 0) return true;
  buf[n] = '\0';
  const char* p = std::strrchr(buf, ')');
  unsigned long flags = 0;
  char state = 0;
  int ppid = 0, pgrp = 0, session = 0, tty = 0, tpgid = 0;
  if (p == nullptr || std::sscanf(p + 1, " %c %d %d %d %d %d %lu", &state, &ppid, &pgrp, &session,
                                  &tty, &tpgid, &flags) != 7) {
    return true;
  }
  return (flags & pf_exiting) != 0 || state == 'Z' || state == 'X';
}

// A process's resident memory, from /proc (the worker cannot misreport it); 0 if unreadable.
auto resident_bytes(pid_t pid) -> std::size_t {
  char path[64];
  std::snprintf(path, sizeof path, "/proc/%d/statm", static_cast<int>(pid));
  unique_fd fd(::open(path, O_RDONLY | O_CLOEXEC));
  if (!fd) return 0;
  char buf[128];
  const ssize_t n = ::read(fd.get(), buf, sizeof buf - 1);
  if (n <= 0) return 0;
  buf[n] = '\0';
  unsigned long size = 0, resident = 0;
  if (std::sscanf(buf, "%lu %lu", &size, &resident) != 2) return 0;
  return resident * static_cast<std::size_t>(::sysconf(_SC_PAGESIZE));
}

// A line longer than this is passed on in pieces, so a worker cannot make the pool buffer without
// bound by never writing a newline.
constexpr std::size_t max_line_bytes = 64 * 1024;

struct pending_line {
  std::size_t worker;
  int pid;
  output_stream stream;
  std::string function;
  std::string text;
};

}  // namespace

class pool_core : public std::enable_shared_from_this<pool_core> {
 public:
  pool_core(asio::any_io_executor ex, const pool_options& options)
      : ex_(std::move(ex)),
        options_(options),
        zygote_(ex_),
        respawn_timer_(ex_),
        spare_timer_(ex_) {
    target_ = options_.workers != 0 ? options_.workers
                                    : std::max(1U, std::thread::hardware_concurrency());
    slots_.assign(target_, false);
  }

  void start() {
    unique_fd conn = connect_zygote();
    std::lock_guard lock(mutex_);
    zygote_.assign(conn.release());
    read_events();
    for (std::size_t i = 0; i < target_ + options_.spare_workers; ++i) spawn_worker();
  }

  auto reserve_task_id() -> std::uint64_t {
    return next_task_id_.fetch_add(1, std::memory_order_relaxed);
  }

  void submit(std::uint64_t id, task_request request, task_completion done) {
    std::lock_guard lock(mutex_);
    auto t = std::make_shared<task>();
    t->id = id;
    t->request = std::move(request);
    t->done = std::move(done);
    if (closing_) {
      finish(*t,
             std::make_exception_ptr(pool_closed("procpool: submit after the pool was shut down")));
      return;
    }
    if (!zygote_error_.empty()) {
      finish(*t, std::make_exception_ptr(worker_start_failed(zygote_error_)));
      return;
    }
    if (t->request.frame.size() - sizeof(frame_header) > options_.max_message_bytes) {
      finish(*t, std::make_exception_ptr(
                     serialization_error("procpool: the task's arguments encode to " +
                                         std::to_string(t->request.frame.size()) +
                                         " bytes, more than pool_options::max_message_bytes")));
      return;
    }
    if (!has_room()) {
      if (options_.when_queue_full == queue_full_action::fail) {
        ++stats_.rejected;
        finish(*t, std::make_exception_ptr(queue_full(
                       "procpool: the queue holds pool_options::max_queue = " +
                       std::to_string(options_.max_queue) + " tasks; the pool is overloaded")));
        return;
      }
      t->parked = true;
      tasks_[t->id] = t;
      waiting_.push_back(t);
      return;
    }
    tasks_[t->id] = t;
    queue_.push_back(t);
    if (start_blocked_) {
      start_blocked_ = false;
      consecutive_start_failures_ = 0;
      replenish();
    }
    dispatch();
  }

  void cancel(std::uint64_t id, asio::cancellation_type type) {
    std::lock_guard lock(mutex_);
    auto it = tasks_.find(id);
    if (it == tasks_.end()) return;
    auto t = it->second;
    if (!t->running) {
      auto& holder = t->parked ? waiting_ : queue_;
      holder.erase(std::find(holder.begin(), holder.end(), t));
      tasks_.erase(it);
      ++stats_.cancelled;
      finish(*t, std::make_exception_ptr(cancelled("procpool: task cancelled before it started")));
      admit_waiting();
      return;
    }
    if ((type & asio::cancellation_type::terminal) == asio::cancellation_type::none || t->ending)
      return;
    auto w = worker_running(*t);
    if (!w) return;
    t->ending = std::make_exception_ptr(
        cancelled("procpool: task cancelled while running; its worker (pid " +
                  std::to_string(w->pid) + ") was killed"));
    ++stats_.cancelled;
    kill(*w, SIGKILL);
  }

  void shutdown(shutdown_mode mode, shutdown_completion done) {
    std::lock_guard lock(mutex_);
    if (destroyed_) {
      std::move(done)();
      return;
    }
    closing_ = true;
    fail_room_waiters();
    if (mode == shutdown_mode::immediate) abandon_tasks(SIGKILL);
    shutdown_waiters_.push_back(std::move(done));
    dispatch();
    check_shutdown_done();
  }

  void destroy() noexcept {
    std::unique_lock lock(mutex_);
    if (destroyed_) return;
    destroyed_ = true;
    closing_ = true;
    abandon_tasks(SIGTERM);
    for (auto& [id, w] : workers_) {
      boost::system::error_code ignored;
      w->channel.close(ignored);  // idle workers see end-of-file and exit at once
    }
    boost::system::error_code ignored;
    respawn_timer_.cancel();
    spare_timer_.cancel();
    const int fd = zygote_.is_open() ? zygote_.native_handle() : -1;
    if (fd >= 0) zygote_.cancel(ignored);

    using clock = std::chrono::steady_clock;
    auto wait_for_exits = [&](clock::time_point deadline) {
      while (!workers_.empty() && fd >= 0) {
        const auto left =
            std::chrono::duration_cast<std::chrono::milliseconds>(deadline - clock::now());
        if (left.count() <= 0) return;
        lock.unlock();
        pollfd p{fd, POLLIN, 0};
        const int r = ::poll(&p, 1, static_cast<int>(left.count()));
        lock.lock();
        if (r < 0 && errno != EINTR) return;
        if (!drain_events()) return;
      }
    };
    wait_for_exits(clock::now() + options_.stop_grace);
    for (auto& [id, w] : workers_) kill(*w, SIGKILL);
    wait_for_exits(clock::now() + std::chrono::seconds(5));

    // Closing our side tells the fork server to kill and reap anything of ours still alive; it
    // closes its side when done, so end-of-file here means every worker is reaped.
    if (fd >= 0) {
      ::shutdown(fd, SHUT_WR);
      const auto deadline = clock::now() + std::chrono::seconds(5);
      for (;;) {
        zygote_event e;
        int passed = -1;
        const long n = receive_message(fd, &e, sizeof e, std::span<int>(&passed, 1));
        if (passed >= 0) ::close(passed);
        if (n == 0 || (n < 0 && errno != EAGAIN)) break;
        if (n > 0) continue;
        const auto left =
            std::chrono::duration_cast<std::chrono::milliseconds>(deadline - clock::now());
        if (left.count() <= 0) break;
        lock.unlock();
        pollfd p{fd, POLLIN, 0};
        ::poll(&p, 1, static_cast<int>(left.count()));
        lock.lock();
      }
    }
    zygote_.close(ignored);
    for (auto& [id, w] : workers_) {
      release_descriptors(*w);
      if (w->current) finish(*w->current, w->current->ending);
    }
    workers_.clear();
    for (auto& [id, t] : tasks_) {
      if (t->done)
        finish(*t, std::make_exception_ptr(pool_closed("procpool: the pool was destroyed")));
    }
    tasks_.clear();
    check_shutdown_done();
    lock.unlock();
    flush_output();
  }

  auto stats() const -> pool_stats {
    std::lock_guard lock(mutex_);
    pool_stats s = stats_;
    s.workers = workers_.size();
    for (const auto& [id, w] : workers_) {
      if (w->current)
        ++s.busy;
      else if (w->ready())
        ++s.idle;
    }
    s.queued = queue_.size();
    s.waiting = waiting_.size();
    return s;
  }

  auto take_frame_buffer() -> byte_buffer {
    // Most pools never keep a buffer (small tasks): then a submit does not take the lock here.
    if (spare_frame_count_.load(std::memory_order_relaxed) == 0) return {};
    std::lock_guard lock(mutex_);
    if (spare_frames_.empty()) return {};
    byte_buffer b = std::move(spare_frames_.back());
    spare_frames_.pop_back();
    spare_frame_count_.store(spare_frames_.size(), std::memory_order_relaxed);
    return b;
  }

  void wait_for_room(std::uint64_t id, room_completion done) {
    std::lock_guard lock(mutex_);
    if (closing_) {
      std::move(done)(std::make_exception_ptr(
          pool_closed("procpool: waited for room in a pool that was shut down")));
    } else if (has_room()) {
      std::move(done)(nullptr);
    } else {
      room_waiters_.emplace(id, std::move(done));
    }
  }

  void cancel_room_wait(std::uint64_t id) {
    std::lock_guard lock(mutex_);
    auto node = room_waiters_.extract(id);
    if (node.empty()) return;
    std::move(node.mapped())(std::make_exception_ptr(
        cancelled("procpool: the wait for room in the queue was cancelled")));
  }

  auto worker_pids() const -> std::vector<int> {
    std::lock_guard lock(mutex_);
    std::vector<int> pids;
    for (const auto& [id, w] : workers_) {
      if (w->pid != 0) pids.push_back(w->pid);
    }
    return pids;
  }

 private:
  // ---- everything below runs with mutex_ held ----

  void finish(task& t, std::exception_ptr ep, byte_buffer result = {}) {
    if (t.deadline) t.deadline->cancel();
    if (!t.done) return;
    auto done = std::move(t.done);
    std::move(done)(std::move(ep), std::move(result));
  }

  auto worker_running(const task& t) -> std::shared_ptr<worker> {
    for (auto& [id, w] : workers_) {
      if (w->current.get() == &t) return w;
    }
    return nullptr;
  }

  auto name_of(task& t) const -> const std::string& {
    if (t.name.empty()) t.name = function_name(t.request.function, t.request.callable_type);
    return t.name;
  }

  // Fails queued tasks with pool_closed, and marks running tasks to end that way once `signal`
  // has stopped their workers.
  void abandon_tasks(int signal) {
    fail_room_waiters();
    for (auto* holder : {&waiting_, &queue_}) {
      for (auto& t : *holder) {
        tasks_.erase(t->id);
        finish(*t, std::make_exception_ptr(
                       pool_closed("procpool: the pool shut down before the task started")));
      }
      holder->clear();
    }
    for (auto& [id, w] : workers_) {
      if (!w->current || w->current->ending) continue;
      w->current->ending = std::make_exception_ptr(
          pool_closed("procpool: the pool shut down while the task ran; its worker (pid " +
                      std::to_string(w->pid) + ") was stopped"));
      kill(*w, signal);
    }
  }

  void spawn_worker() {
    int channel[2];
    if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, channel) != 0) {
      start_failed(std::string("procpool: socketpair: ") + std::strerror(errno));
      return;
    }
    unique_fd ours(channel[0]), theirs(channel[1]);
    int out[2], err[2];
    if (::pipe2(out, O_CLOEXEC) != 0) {
      start_failed(std::string("procpool: pipe: ") + std::strerror(errno));
      return;
    }
    unique_fd out_read(out[0]), out_write(out[1]);
    if (::pipe2(err, O_CLOEXEC) != 0) {
      start_failed(std::string("procpool: pipe: ") + std::strerror(errno));
      return;
    }
    unique_fd err_read(err[0]), err_write(err[1]);
    // Only our ends are non-blocking: a worker's printf must block on a full pipe, not fail.
    ::fcntl(out_read.get(), F_SETFL, O_NONBLOCK);
    ::fcntl(err_read.get(), F_SETFL, O_NONBLOCK);

    auto w = std::make_shared<worker>(ex_);
    // The lowest free slot; a new one while a recycled worker still holds its own.
    w->slot =
        static_cast<std::size_t>(std::find(slots_.begin(), slots_.end(), false) - slots_.begin());
    if (w->slot == slots_.size()) slots_.push_back(false);
    slots_[w->slot] = true;
    w->spawn_id = next_spawn_id_++;
    zygote_request req;
    req.spawn_id = w->spawn_id;
    req.setup.memory_limit_bytes = options_.memory_limit_bytes;
    req.setup.memory_max_bytes = options_.memory_max_bytes;
    req.setup.heap_retain_bytes = options_.worker_heap_retain_bytes;
    req.setup.cpu_seconds = static_cast<std::uint64_t>(options_.cpu_time_limit.count());
    req.setup.initializer = reinterpret_cast<std::uintptr_t>(options_.initializer);
    const std::array<int, 3> fds{theirs.get(), out_write.get(), err_write.get()};
    if (!send_message(zygote_.native_handle(), &req, sizeof req, fds)) {
      slots_[w->slot] = false;
      lose_zygote(std::string("procpool: the fork server is gone: ") + std::strerror(errno));
      return;
    }
    w->channel.assign(asio::local::stream_protocol(), ours.release());
    w->out.pipe.assign(out_read.release());
    w->err.pipe.assign(err_read.release());
    workers_[w->spawn_id] = w;
    watch_channel(w);
    watch_output(w, output_stream::out);
    watch_output(w, output_stream::err);
  }

  // ---- worker output ----

  static auto pipe_of(worker& w, output_stream s) -> output_pipe& {
    return s == output_stream::out ? w.out : w.err;
  }

  void watch_output(const std::shared_ptr<worker>& w, output_stream s) {
    pipe_of(*w, s).pipe.async_wait(asio::posix::descriptor_base::wait_read,
                                   [self = shared_from_this(), w, s](boost::system::error_code ec) {
                                     {
                                       std::lock_guard lock(self->mutex_);
                                       if (self->destroyed_ || ec) return;
                                       if (self->read_output(*w, s)) self->watch_output(w, s);
                                     }
                                     self->flush_output();
                                   });
  }

  // Reads whatever the pipe holds now; false once it is closed.
  auto read_output(worker& w, output_stream s) -> bool {
    output_pipe& p = pipe_of(w, s);
    if (!p.pipe.is_open()) return false;
    char buf[16 * 1024];
    for (;;) {
      const ssize_t n = ::read(p.pipe.native_handle(), buf, sizeof buf);
      if (n > 0) {
        p.partial.append(buf, static_cast<std::size_t>(n));
        std::size_t start = 0;
        for (std::size_t nl; (nl = p.partial.find('\n', start)) != std::string::npos;
             start = nl + 1) {
          add_line(w, s, p.partial.substr(start, nl - start));
        }
        p.partial.erase(0, start);
        while (p.partial.size() >= max_line_bytes) {
          add_line(w, s, p.partial.substr(0, max_line_bytes));
          p.partial.erase(0, max_line_bytes);
        }
        continue;
      }
      if (n < 0 && errno == EINTR) continue;
      if (n < 0 && errno == EAGAIN) return true;
      close_output(w, s);  // end of file (or an error): what is left is a last, unfinished line
      return false;
    }
  }

  void close_output(worker& w, output_stream s) {
    output_pipe& p = pipe_of(w, s);
    if (!p.partial.empty()) add_line(w, s, std::exchange(p.partial, {}));
    boost::system::error_code ignored;
    p.pipe.close(ignored);
  }

  // Everything the worker wrote before this moment is in its pipes (it flushes stdio before each
  // result, and a dead process writes nothing more), so reading them now attributes each line to
  // the right task and puts it before the task's outcome.
  void collect_output(worker& w) {
    // One poll for both pipes rather than a read that usually finds nothing on each.
    std::array<pollfd, 2> ready{};
    for (auto s : {output_stream::out, output_stream::err}) {
      auto& pipe = pipe_of(w, s).pipe;
      ready[static_cast<std::size_t>(s == output_stream::err)] = {
          pipe.is_open() ? pipe.native_handle() : -1, POLLIN, 0};
    }
    if (ready[0].fd >= 0 || ready[1].fd >= 0) ::poll(ready.data(), ready.size(), 0);
    for (auto s : {output_stream::out, output_stream::err}) {
      if (ready[static_cast<std::size_t>(s == output_stream::err)].revents != 0) read_output(w, s);
      // The task is over: text it left without a newline is its last line.
      if (auto& p = pipe_of(w, s); !p.partial.empty()) add_line(w, s, std::exchange(p.partial, {}));
    }
  }

  void add_line(worker& w, output_stream s, std::string text) {
    if (s == output_stream::err || options_.crash_output_includes_stdout) {
      w.tail.push_back(text);
      while (w.tail.size() > options_.crash_output_lines) w.tail.pop_front();
    }
    pending_output_.push_back(
        {w.slot, w.pid, s, w.current ? name_of(*w.current) : std::string(), std::move(text)});
  }

  static auto joined(const std::deque<std::string>& lines) -> std::string {
    std::string s;
    for (const auto& l : lines) s += l + '\n';
    return s;
  }

 public:
  // Hands collected lines to the sink, outside the pool's lock and in order.
  void flush_output() {
    std::lock_guard emit(emit_mutex_);
    std::vector<pending_line> lines;
    {
      std::lock_guard lock(mutex_);
      lines.swap(pending_output_);
    }
    for (const auto& l : lines) {
      const output_line line{l.worker, l.pid, l.stream, l.function, l.text};
      try {
        if (options_.output) {
          options_.output(line);
        } else {
          write_to_stderr(line);
        }
      } catch (...) {
        // A failing sink must not break the pool; the line is dropped.
      }
    }
  }

 private:
  void replenish() {
    if (!zygote_error_.empty() || start_blocked_ || respawn_pending_) return;
    if (closing_ && queue_.empty()) return;
    std::size_t live = live_workers();
    for (; live < target_; ++live) {
      ++stats_.respawned;
      spawn_worker();
    }
    if (live >= target_ + options_.spare_workers || spare_pending_) return;
    // A lost worker's place was just taken by a spare; starting the new spare a moment later
    // keeps its fork and start-up off the CPUs while the spare answers the next task.
    spare_pending_ = true;
    spare_timer_.expires_after(std::chrono::milliseconds(5));
    spare_timer_.async_wait([self = shared_from_this()](boost::system::error_code ec) {
      {
        std::lock_guard lock(self->mutex_);
        self->spare_pending_ = false;
        if (ec || self->destroyed_ || self->closing_) return;
        self->replenish_spares();
      }
      self->flush_output();
    });
  }

  // Workers that will go on serving: not leaving, not being killed.
  [[nodiscard]] auto live_workers() const -> std::size_t {
    std::size_t live = 0;
    for (const auto& [id, w] : workers_) {
      if (!w->retiring && w->kill_reason.empty() && !(w->current && w->current->ending)) ++live;
    }
    return live;
  }

  void replenish_spares() {
    if (!zygote_error_.empty() || start_blocked_) return;
    std::size_t live = live_workers();
    for (; live < target_ + options_.spare_workers; ++live) {
      ++stats_.respawned;
      spawn_worker();
    }
  }

  void dispatch() {
    // Workers running a task that is not being ended; spares make the rest wait for a slot.
    std::size_t running = 0;
    for (auto& [id, w] : workers_) {
      if (w->current && !w->current->ending && w->kill_reason.empty()) ++running;
    }
    for (auto& [id, w] : workers_) {
      if (!w->ready()) continue;
      if (!queue_.empty() && running < target_) {
        ++running;
        auto t = queue_.front();
        queue_.pop_front();
        assign(w, t);
        admit_waiting();  // so a later idle worker in this loop finds the next waiting task
      } else if (closing_ && queue_.empty()) {
        retire(*w);
      }
    }
    admit_waiting();
  }

  // Large frame buffers are kept for the next tasks: on a machine where a page fault is expensive,
  // faulting in a fresh 64 MiB buffer costs several times what copying into a warm one does. At
  // most one per worker is kept, so the pool holds no more than it had in flight.
  void keep_frame_buffer(byte_buffer b) {
    constexpr std::size_t worth_keeping = 256 * 1024;
    if (b.capacity() < worth_keeping || spare_frames_.size() >= target_) return;
    spare_frames_.push_back(std::move(b));
    spare_frame_count_.store(spare_frames_.size(), std::memory_order_relaxed);
  }

  // ---- backpressure (pool_options::max_queue) ----

  [[nodiscard]] auto has_room() const -> bool {
    return options_.max_queue == 0 || (queue_.size() < options_.max_queue && waiting_.empty());
  }

  // Moves waiting tasks into the queue while it has room, in submission order; then releases
  // everyone awaiting room if some is left.
  void admit_waiting() {
    while (!waiting_.empty() && queue_.size() < options_.max_queue) {
      auto t = waiting_.front();
      waiting_.pop_front();
      t->parked = false;
      queue_.push_back(t);
    }
    notify_room();
  }

  void notify_room() {
    if (room_waiters_.empty() || !has_room()) return;
    auto waiters = std::move(room_waiters_);
    room_waiters_.clear();
    for (auto& [id, done] : waiters) std::move(done)(nullptr);
  }

  void fail_room_waiters() {
    auto waiters = std::move(room_waiters_);
    room_waiters_.clear();
    for (auto& [id, done] : waiters) {
      std::move(done)(std::make_exception_ptr(
          pool_closed("procpool: the pool shut down while waiting for room in its queue")));
    }
  }

  void assign(const std::shared_ptr<worker>& w, const std::shared_ptr<task>& t) {
    t->running = true;
    w->current = t;
    frame_header h;
    h.kind = frame_kind::task;
    h.task_id = t->id;
    h.size = t->request.frame.size() - sizeof h;
    std::memcpy(t->request.frame.data(), &h, sizeof h);
    start_deadline(w, t);
    const unsigned attempt = ++t->attempts;
    if (h.size >= shared_task_threshold && send_shared(*w, *t)) {
      if (t->request.crash_retries == 0) keep_frame_buffer(std::exchange(t->request.frame, {}));
      return;
    }
    // Most frames fit in the socket buffer: send at once, with no completion to run.
    const ssize_t sent = ::send(w->channel.native_handle(), t->request.frame.data(),
                                t->request.frame.size(), MSG_DONTWAIT | MSG_NOSIGNAL);
    if (sent == static_cast<ssize_t>(t->request.frame.size())) {
      if (t->request.crash_retries == 0) keep_frame_buffer(std::exchange(t->request.frame, {}));
      return;
    }
    if (sent < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) {
      channel_lost(*w);
      return;
    }
    const std::size_t done = sent > 0 ? static_cast<std::size_t>(sent) : 0;
    asio::async_write(
        w->channel, asio::buffer(t->request.frame.data() + done, t->request.frame.size() - done),
        [self = shared_from_this(), w, t, attempt](boost::system::error_code ec, std::size_t) {
          std::lock_guard lock(self->mutex_);
          // The worker has the frame now. Keep it if a crash may send it again, and
          // never touch it once a later attempt (another write) owns it.
          if (t->attempts == attempt && t->request.crash_retries == 0) {
            self->keep_frame_buffer(std::exchange(t->request.frame, {}));
          }
          if (self->destroyed_ || !ec) return;
          self->channel_lost(*w);
        });
  }

  // A large task goes through the worker's shared region: one copy into memory the worker maps,
  // instead of a copy into the socket and another out of it. The region is a sealed memfd: the
  // worker can map it only read-only and cannot resize it, so it can neither change a task under
  // the pool nor make the pool's own stores into it fault. False when the region cannot be set
  // up; the task then goes through the channel.
  auto send_shared(worker& w, task& t) -> bool {
    const std::size_t bytes = t.request.frame.size() - sizeof(frame_header);
    unique_fd fresh;
    if (w.region_size < bytes) {
      unmap_region(w);
      constexpr std::size_t granule = std::size_t{1} << 20;
      const std::size_t size = (bytes + granule - 1) / granule * granule;
      fresh.reset(::memfd_create("procpool-task-region", MFD_CLOEXEC | MFD_ALLOW_SEALING));
      if (!fresh || ::ftruncate(fresh.get(), static_cast<off_t>(size)) != 0) return false;
      void* p = ::mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_SHARED, fresh.get(), 0);
      if (p == MAP_FAILED) return false;
      if (::fcntl(fresh.get(), F_ADD_SEALS,
                  F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_FUTURE_WRITE | F_SEAL_SEAL) != 0) {
        ::munmap(p, size);
        return false;
      }
      w.region = static_cast<std::byte*>(p);
      w.region_size = size;
    }
    std::memcpy(w.region, t.request.frame.data() + sizeof(frame_header), bytes);
    struct {
      frame_header h;
      shared_task st;
    } message;
    message.h.kind = frame_kind::shared_task;
    message.h.task_id = t.id;
    message.h.size = sizeof message.st;
    message.st.size = bytes;
    const int fd = fresh.get();
    if (!send_message(w.channel.native_handle(), &message, sizeof message,
                      fd >= 0 ? std::span<const int>(&fd, 1) : std::span<const int>())) {
      channel_lost(w);
    }
    return true;
  }

  static void unmap_region(worker& w) {
    if (w.region != nullptr) ::munmap(w.region, w.region_size);
    w.region = nullptr;
    w.region_size = 0;
  }

  // The task timeout counts from here, the moment a worker takes the task.
  void start_deadline(const std::shared_ptr<worker>& w, const std::shared_ptr<task>& t) {
    const auto limit = t->request.timeout.count() > 0 ? t->request.timeout : options_.task_timeout;
    if (limit.count() <= 0) return;
    t->deadline = std::make_unique<asio::steady_timer>(ex_, limit);
    t->deadline->async_wait([self = shared_from_this(), w, t, limit](boost::system::error_code ec) {
      std::lock_guard lock(self->mutex_);
      if (ec || self->destroyed_ || w->current != t || t->ending) return;
      t->ending = std::make_exception_ptr(
          timeout_error("procpool: " + self->name_of(*t) + " exceeded its task timeout of " +
                        std::to_string(limit.count()) + " ms; its worker (pid " +
                        std::to_string(w->pid) + ") and everything it started were killed"));
      ++self->stats_.timed_out;
      self->kill(*w, SIGKILL);
    });
  }

  void retire(worker& w) {
    w.retiring = true;
    boost::system::error_code ignored;
    w.channel.shutdown(asio::socket_base::shutdown_send, ignored);
  }

  void kill(worker& w, int signal) {
    if (!w.pidfd) {
      w.pending_signal = signal;
      return;
    }
    ::syscall(SYS_pidfd_send_signal, w.pidfd.get(), signal, nullptr, 0);
  }

  // The worker broke the protocol: it is killed, and its task fails with worker_crashed.
  void violation(worker& w, std::string reason) {
    if (w.kill_reason.empty()) w.kill_reason = std::move(reason);
    // Kill before closing: a worker blocked writing to the channel would otherwise die of SIGPIPE
    // first, and its status would name that instead of the pool's kill.
    kill(w, SIGKILL);
    boost::system::error_code ignored;
    w.channel.close(ignored);
  }

  void channel_lost(worker& w) {
    // It died or closed its channel; either way it cannot serve. Its exit event finishes it.
    if (w.retiring) return;
    if (w.pid != 0 && w.kill_reason.empty() && !exiting(w.pid)) w.channel_closed_alive = true;
    kill(w, SIGKILL);
  }

  // A worker's channel is read into its buffer with async_read_some, which Asio performs without
  // a speculative attempt once a read has drained the socket: a small result costs one recv().
  // Each completion handles every complete frame in the buffer.
  void watch_channel(const std::shared_ptr<worker>& w) {
    constexpr std::size_t chunk = 64 * 1024;
    const std::size_t pending = w->rx_end - w->rx_begin;
    if (w->rx_begin != 0) {
      std::memmove(w->rx.data(), w->rx.data() + w->rx_begin, pending);
      w->rx_begin = 0;
      w->rx_end = pending;
    }
    std::size_t room = pending + chunk;
    if (pending >= sizeof(frame_header)) {
      // A frame whose header was accepted (parse_frames checked it) but whose payload is not all
      // here: make room for all of it at once.
      frame_header h;
      std::memcpy(&h, w->rx.data(), sizeof h);
      room = std::max(room, sizeof h + static_cast<std::size_t>(h.size));
    }
    if (w->rx.size() < room) w->rx.resize(room);
    w->channel.async_read_some(
        asio::buffer(w->rx.data() + w->rx_end, w->rx.size() - w->rx_end),
        [self = shared_from_this(), w](boost::system::error_code ec, std::size_t n) {
          {
            std::lock_guard lock(self->mutex_);
            if (self->destroyed_) return;
            if (ec) {
              self->channel_lost(*w);  // end of file, an error, or closed by the pool
            } else {
              w->rx_end += n;
              if (self->parse_frames(*w)) self->watch_channel(w);
            }
          }
          self->flush_output();
        });
  }

  // Handles the complete frames in a worker's buffer; false after a protocol violation.
  auto parse_frames(worker& w) -> bool {
    while (w.rx_end - w.rx_begin >= sizeof(frame_header)) {
      frame_header h;
      std::memcpy(&h, w.rx.data() + w.rx_begin, sizeof h);
      const channel_state state{w.greeted, w.current ? w.current->id : 0,
                                options_.max_message_bytes};
      if (auto wrong = check_header(h, state); !wrong.empty()) {
        violation(w, std::move(wrong));
        return false;
      }
      if (w.rx_end - w.rx_begin - sizeof h < h.size) break;
      const std::span<const std::byte> payload(w.rx.data() + w.rx_begin + sizeof h,
                                               static_cast<std::size_t>(h.size));
      w.rx_begin += sizeof h + static_cast<std::size_t>(h.size);
      if (!on_frame(w, h, payload)) return false;
    }
    if (w.rx_begin == w.rx_end) {
      w.rx_begin = w.rx_end = 0;
      // Do not keep a large result's buffer for a worker that mostly sends small ones.
      if (w.rx.size() > std::size_t{1} << 20) byte_buffer().swap(w.rx);
    }
    return true;
  }

  // One complete, header-checked frame; false after a protocol violation.
  auto on_frame(worker& w, const frame_header& h, std::span<const std::byte> payload) -> bool {
    switch (h.kind) {
      case frame_kind::hello: {
        if (auto wrong = check_hello(payload, build_id()); !wrong.empty()) {
          violation(w, std::move(wrong));
          return false;
        }
        w.greeted = true;
        if (w.spawned) consecutive_start_failures_ = 0;
        dispatch();
        return true;
      }
      case frame_kind::result:
      case frame_kind::exception: {
        auto t = w.current;
        if (t->ending) return true;  // its worker is being killed; the decided outcome stands
        collect_output(w);
        std::exception_ptr ep;
        if (h.kind == frame_kind::exception) {
          std::string wrong;
          ep = decode_exception(payload, name_of(*t), w.pid, wrong);
          if (!ep) {
            violation(w, std::move(wrong));
            return false;
          }
          ++stats_.failed;
        } else {
          ++stats_.completed;
        }
        w.current.reset();
        tasks_.erase(t->id);
        finish(*t, ep, ep ? byte_buffer{} : byte_buffer(payload.begin(), payload.end()));
        ++w.tasks_run;
        const bool worn_out =
            (options_.max_tasks_per_worker != 0 && w.tasks_run >= options_.max_tasks_per_worker) ||
            (options_.max_worker_rss_bytes != 0 &&
             resident_bytes(w.pid) > options_.max_worker_rss_bytes);
        if (worn_out && !closing_) {
          ++stats_.recycled;
          retire(w);
          replenish();  // the replacement starts now, while the old worker exits
        }
        dispatch();
        return true;
      }
      default:
        return true;  // check_header admits no other kind
    }
  }

  // ---- events from the fork server ----

  void read_events() {
    zygote_.async_wait(asio::posix::descriptor_base::wait_read,
                       [self = shared_from_this()](boost::system::error_code ec) {
                         {
                           std::lock_guard lock(self->mutex_);
                           if (self->destroyed_ || !self->zygote_.is_open()) return;
                           if (ec) {
                             self->lose_zygote("procpool: lost the fork server: " + ec.message());
                           } else if (self->drain_events()) {
                             self->read_events();
                           }
                         }
                         self->flush_output();
                       });
  }

  // Handles every queued event; false once the fork server has gone.
  auto drain_events() -> bool {
    for (;;) {
      zygote_event e;
      int passed = -1;
      const long n =
          receive_message(zygote_.native_handle(), &e, sizeof e, std::span<int>(&passed, 1));
      unique_fd fd(passed);
      if (n < 0 && errno == EAGAIN) return true;
      if (n <= 0) {
        lose_zygote("procpool: the fork server exited");
        return false;
      }
      if (n != static_cast<long>(sizeof e)) continue;
      on_event(e, std::move(fd));
    }
  }

  void on_event(const zygote_event& e, unique_fd fd) {
    switch (e.kind) {
      case zygote_event_kind::spawned: {
        auto it = workers_.find(e.spawn_id);
        if (it == workers_.end()) return;
        auto& w = *it->second;
        w.pid = e.pid;
        w.pidfd = std::move(fd);
        w.spawned = true;
        if (w.pending_signal != 0) kill(w, w.pending_signal);
        if (w.greeted) consecutive_start_failures_ = 0;
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
          if (w->slot < slots_.size()) slots_[w->slot] = false;
        }
        start_failed(std::string("procpool: fork failed: ") + std::strerror(e.status));
        return;
      }
      case zygote_event_kind::exited: {
        auto it = std::find_if(workers_.begin(), workers_.end(),
                               [&](const auto& kv) { return kv.second->pid == e.pid; });
        if (it == workers_.end()) return;
        auto w = it->second;
        workers_.erase(it);
        on_worker_exit(*w, e.status, e.memory);
        return;
      }
    }
  }

  // Closes everything the pool holds for a worker now, rather than when the last pending handler
  // that refers to it runs, so a finished pool leaves no descriptor behind at any moment.
  void release_descriptors(worker& w) {
    boost::system::error_code ignored;
    w.channel.close(ignored);
    close_output(w, output_stream::out);
    close_output(w, output_stream::err);
    w.pidfd.reset();
    unmap_region(w);
  }

  void on_worker_exit(worker& w, int status, std::uint32_t memory) {
    collect_output(w);
    release_descriptors(w);
    if (w.slot < slots_.size()) slots_[w.slot] = false;
    const int sig = WIFSIGNALED(status) ? WTERMSIG(status) : 0;
    if (sig == SIGXCPU && options_.cpu_time_limit.count() > 0 && w.kill_reason.empty()) {
      w.kill_reason = "exceeded pool_options::cpu_time_limit of " +
                      std::to_string(options_.cpu_time_limit.count()) + " s of CPU time";
    }
    // Only when our kill is what ended it; a worker that was dying anyway reports its own cause.
    if (sig == SIGKILL && w.channel_closed_alive && w.kill_reason.empty()) {
      w.kill_reason = "closed its channel to the pool";
    }
    bool out_of_memory = false;
    if (memory == zygote_memory_cgroup_oom) {
      out_of_memory = true;
      w.kill_reason =
          "killed by the kernel's OOM killer: it exceeded pool_options::memory_max_bytes "
          "of " +
          std::to_string(options_.memory_max_bytes) + " bytes";
    } else if (memory == zygote_memory_system_oom && w.kill_reason.empty()) {
      out_of_memory = true;
      w.kill_reason =
          "SIGKILL while the kernel's OOM killer was acting: most likely killed for "
          "lack of memory";
    }
    const int code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
    if (auto t = std::exchange(w.current, nullptr)) {
      if (!t->ending && t->request.crash_retries > 0 && !closing_ && !t->request.frame.empty()) {
        // Run it again on another worker, ahead of everything queued.
        --t->request.crash_retries;
        t->running = false;
        queue_.push_front(t);
        ++stats_.retried;
        replenish();
        dispatch();
        check_shutdown_done();
        return;
      }
      tasks_.erase(t->id);
      if (t->ending) {
        finish(*t, t->ending);
      } else {
        ++stats_.crashed;
        finish(*t,
               std::make_exception_ptr(worker_crashed(w.pid, sig, code, name_of(*t), w.kill_reason,
                                                      joined(w.tail), out_of_memory)));
      }
    }
    if (!w.greeted && !w.retiring && !destroyed_) {
      auto crash = worker_crashed(w.pid, sig, code, "its start-up", w.kill_reason, joined(w.tail));
      start_failed(std::string("procpool: a worker failed to start: ") + crash.what());
      return;
    }
    if (!destroyed_) replenish();
    dispatch();
    check_shutdown_done();
  }

  void start_failed(const std::string& why) {
    if (++consecutive_start_failures_ >= max_consecutive_start_failures) {
      start_blocked_ = true;
      fail_queue(why);
    } else if (!respawn_pending_) {
      // Back off before the next attempt (10 ms, 20 ms, 40 ms, ...): a worker that dies at once
      // would otherwise be restarted in a tight loop.
      respawn_pending_ = true;
      respawn_timer_.expires_after(
          std::chrono::milliseconds(10 << (consecutive_start_failures_ - 1)));
      respawn_timer_.async_wait([self = shared_from_this()](boost::system::error_code ec) {
        {
          std::lock_guard lock(self->mutex_);
          self->respawn_pending_ = false;
          if (ec || self->destroyed_) return;
          self->replenish();
        }
        self->flush_output();
      });
    }
    check_shutdown_done();
  }

  void fail_queue(const std::string& why) {
    for (auto* holder : {&queue_, &waiting_}) {
      for (auto& t : *holder) {
        tasks_.erase(t->id);
        finish(*t, std::make_exception_ptr(worker_start_failed(why)));
      }
      holder->clear();
    }
    notify_room();
  }

  void lose_zygote(const std::string& why) {
    if (!zygote_error_.empty()) return;
    zygote_error_ = why;
    fail_queue(why);
    // Without the fork server nobody reports these workers' deaths; they die with it (their parent
    // death signal), so end their tasks now.
    for (auto& [id, w] : workers_) {
      release_descriptors(*w);
      if (auto t = std::exchange(w->current, nullptr)) {
        tasks_.erase(t->id);
        finish(*t, t->ending ? t->ending : std::make_exception_ptr(worker_start_failed(why)));
      }
    }
    workers_.clear();
    slots_.assign(slots_.size(), false);
    check_shutdown_done();
  }

  void check_shutdown_done() {
    if (!closing_ || !workers_.empty() || !tasks_.empty()) return;
    // Nothing left to hear about: release the fork-server connection, so the pool holds no pending
    // operation and io_context::run() can return once the program's own work is done.
    boost::system::error_code ignored;
    if (!destroyed_ && zygote_.is_open()) zygote_.close(ignored);
    respawn_timer_.cancel();
    spare_timer_.cancel();
    auto waiters = std::move(shutdown_waiters_);
    shutdown_waiters_.clear();
    for (auto& done : waiters) std::move(done)();
  }

  mutable std::mutex mutex_;
  std::mutex emit_mutex_;  // keeps sink calls in order; taken before mutex_, never while holding it
  std::vector<pending_line> pending_output_;
  std::vector<bool> slots_;  // which worker slots are taken
  asio::any_io_executor ex_;
  pool_options options_;
  std::size_t target_ = 1;
  asio::posix::stream_descriptor zygote_;
  asio::steady_timer respawn_timer_;
  asio::steady_timer spare_timer_;  // starts replacement spares (see replenish)
  std::map<std::uint64_t, std::shared_ptr<worker>> workers_;  // by spawn id
  std::map<std::uint64_t, std::shared_ptr<task>> tasks_;      // queued and running, by task id
  std::deque<std::shared_ptr<task>> queue_;
  std::vector<byte_buffer> spare_frames_;          // sent frames' buffers, for reuse
  std::atomic<std::size_t> spare_frame_count_{0};  // spare_frames_.size(), read without the lock
  std::deque<std::shared_ptr<task>> waiting_;      // submitted while the queue was full (max_queue)
  std::map<std::uint64_t, room_completion> room_waiters_;  // async_wait_for_room, in call order
  std::atomic<std::uint64_t> next_task_id_{1};
  std::uint64_t next_spawn_id_ = 1;
  bool closing_ = false;
  bool destroyed_ = false;
  bool start_blocked_ = false;
  bool respawn_pending_ = false;  // a back-off timer will call replenish()
  bool spare_pending_ = false;    // spare_timer_ will start the missing spares
  unsigned consecutive_start_failures_ = 0;
  std::string zygote_error_;
  std::vector<shutdown_completion> shutdown_waiters_;
  pool_stats stats_;
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
