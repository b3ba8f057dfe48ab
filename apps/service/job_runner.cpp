#include "job_runner.hpp"

#include <boost/asio/bind_cancellation_slot.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/redirect_error.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/core/demangle.hpp>
#include <boost/json/serialize.hpp>
#include <csignal>
#include <cstdio>
#include <cstring>
#include <typeinfo>

#include "background.hpp"
#include "tasks.hpp"

namespace asio = boost::asio;
namespace json = boost::json;
using namespace std::chrono_literals;

namespace service {

job_runner::job_runner(asio::any_io_executor ex, procpool::process_pool& pool, database& db,
                       notifier& notify, event_hub& events, service_metrics& metrics,
                       runner_options options)
    : ex_(ex),
      pool_(pool),
      db_(db),
      notify_(notify),
      events_(events),
      metrics_(metrics),
      options_(options),
      work_ready_(ex, asio::steady_timer::time_point::max()),
      lanes_done_(ex, asio::steady_timer::time_point::max()) {}

void job_runner::add_active(job j) {
  const std::int64_t id = j.id;
  auto& a = active_[id];
  active_input_bytes_ += j.input.size();
  a.record = std::move(j);
  a.ended = std::make_shared<asio::steady_timer>(ex_, asio::steady_timer::time_point::max());
  queue_.push_back(id);
  work_ready_.cancel_one();
}

auto job_runner::recover() -> asio::awaitable<recovery> {
  recovery r = co_await db_.run([n = options_.max_attempts](store& s) { return s.recover(n); });
  for (const auto& j : r.queued) add_active(j);
  for (const auto& j : r.to_notify) notify_.deliver(j);
  co_return r;
}

void job_runner::start() {
  for (std::size_t i = 0; i < options_.lanes; ++i) {
    ++lanes_alive_;
    asio::co_spawn(ex_, lane(), report_failure("job lane stopped", [this] {
                     if (--lanes_alive_ == 0) lanes_done_.cancel();
                   }));
  }
}

auto job_runner::accept(job j) -> asio::awaitable<std::pair<accept_status, job>> {
  if (stopping_) co_return std::pair{accept_status::stopping, std::move(j)};
  const std::size_t input_bytes = j.input.size();
  if (active() >= options_.max_active ||
      active_input_bytes_ + input_bytes > options_.max_active_input_bytes) {
    ++metrics_.rejected_queue_full;
    co_return std::pair{accept_status::queue_full, std::move(j)};
  }
  // Counted while the insert is in flight, so concurrent requests cannot overshoot the limits.
  ++accepting_;
  active_input_bytes_ += input_bytes;
  auto insert = db_.run([j = std::move(j)](store& s) { return s.insert(j); });
  std::exception_ptr failure;
  job_change c;
  try {
    c = co_await std::move(insert);
  } catch (...) {
    failure = std::current_exception();
  }
  --accepting_;
  active_input_bytes_ -= input_bytes;  // add_active counts it again
  if (failure) {
    ++metrics_.database_errors;
    std::rethrow_exception(failure);
  }
  ++metrics_.accepted;
  add_active(c.after);
  events_.publish(c);
  co_return std::pair{accept_status::accepted, c.after};
}

template <class F>
auto job_runner::persist(F change) -> asio::awaitable<job_change> {
  auto backoff = 100ms;
  for (;;) {
    try {
      co_return co_await db_.run(change);
    } catch (const std::logic_error&) {
      throw;
    } catch (const std::exception& e) {
      ++metrics_.database_errors;
      std::fprintf(stderr, "database write failed, retrying in %lld ms: %s\n",
                   static_cast<long long>(backoff.count()), e.what());
    }
    asio::steady_timer t(ex_, backoff);
    co_await t.async_wait(asio::use_awaitable);
    backoff = std::min(backoff * 2, std::chrono::milliseconds(5s));
  }
}

void job_runner::retire(std::int64_t id) {
  if (auto it = active_.find(id); it != active_.end()) {
    active_input_bytes_ -= it->second.record.input.size();
    it->second.ended->cancel();
    active_.erase(it);
  }
}

void job_runner::finished(const job_change& c) {
  const job& j = c.after;
  retire(j.id);
  if (j.started_ms != 0) metrics_.run_seconds.observe((j.finished_ms - j.started_ms) / 1000.0);
  metrics_.total_seconds.observe((j.finished_ms - j.created_ms) / 1000.0);
  events_.publish(c);
  if (!j.notify_url.empty()) notify_.deliver(j);
}

auto job_runner::lane() -> asio::awaitable<void> {
  for (;;) {
    while (queue_.empty() && !stopping_) {
      work_ready_.expires_at(asio::steady_timer::time_point::max());
      boost::system::error_code ec;
      co_await work_ready_.async_wait(asio::redirect_error(asio::use_awaitable, ec));
    }
    if (stopping_) co_return;
    const std::int64_t id = queue_.front();
    queue_.pop_front();
    active_job& a = active_.at(id);
    a.running = true;
    // The start is written while the task runs, not before: the database thread keeps changes in
    // order, so `running` is committed (and announced) before the job's end; and if the service
    // dies first, a job still `queued` in the database is re-queued just as a `running` one is.
    in_background(record_start(id));
    outcome o = co_await execute(a);
    // The lane is free as soon as the worker is: the end is written in the background too.
    in_background(record_end(id, std::move(o)));
  }
}

void job_runner::in_background(asio::awaitable<void> write) {
  ++writes_in_flight_;
  asio::co_spawn(ex_, std::move(write), report_failure("job state write failed", [this] {
                   if (--writes_in_flight_ == 0 && stopping_) lanes_done_.cancel();
                 }));
}

auto job_runner::record_start(std::int64_t id) -> asio::awaitable<void> {
  const job_change started = co_await persist([id](store& s) { return s.start(id); });
  metrics_.queue_seconds.observe((started.after.started_ms - started.after.created_ms) / 1000.0);
  events_.publish(started);
}

auto job_runner::record_end(std::int64_t id, outcome o) -> asio::awaitable<void> {
  if (o.requeue) {
    const job_change c = co_await persist([id](store& s) { return s.requeue(id); });
    retire(id);
    events_.publish(c);
    co_return;
  }
  // Named, not a temporary in the co_await: GCC 12 destroys a temporary coroutine argument twice
  // there.
  auto finish = [id, o = std::move(o)](store& s) {
    return s.finish(id, o.state, o.result, o.error);
  };
  finished(co_await persist(std::move(finish)));
}

namespace {

auto error_json(json::object o) -> std::string {
  return json::serialize(o);
}

// procpool's own message names the C++ function (always run_task here); the job's says what
// happened to the worker.
auto crash_message(const procpool::worker_crashed& e) -> std::string {
  std::string m = "worker pid " + std::to_string(e.pid());
  if (e.signal() != 0) {
    const char* name = sigabbrev_np(e.signal());
    m += " was killed by signal " + std::to_string(e.signal()) +
         (name ? " (SIG" + std::string(name) + ")" : "");
  } else {
    m += " exited with status " + std::to_string(e.exit_code());
  }
  if (!e.detail().empty()) m += ": " + e.detail();
  if (e.out_of_memory()) m += " (out of memory)";
  return m;
}

}  // namespace

auto job_runner::execute(active_job& a) -> asio::awaitable<outcome> {
  const job& j = a.record;
  if (a.stop_requested) co_return outcome{job_state::queued, "", "", true};
  try {
    std::string result = co_await pool_.async_submit(
        procpool::task_options{.timeout = std::chrono::milliseconds(j.timeout_ms)}, run_task,
        j.task, j.input, asio::bind_cancellation_slot(a.kill.slot(), asio::use_awaitable));
    co_return outcome{job_state::succeeded, std::move(result), ""};
  } catch (const procpool::timeout_error&) {
    co_return outcome{job_state::timed_out, "",
                      error_json({{"type", "timeout"},
                                  {"message", "the job ran longer than its timeout_ms (" +
                                                  std::to_string(j.timeout_ms) +
                                                  " ms); the worker running it was killed"},
                                  {"timeout_ms", j.timeout_ms}})};
  } catch (const procpool::cancelled& e) {
    if (a.stop_requested) co_return outcome{job_state::queued, "", "", true};
    co_return outcome{
        job_state::cancelled, "",
        error_json(
            {{"type", "cancelled"},
             {"message", "cancelled by a DELETE request; the worker running it was killed"}})};
  } catch (const procpool::pool_closed&) {
    co_return outcome{job_state::queued, "", "", true};
  } catch (const procpool::worker_crashed& e) {
    co_return outcome{job_state::failed, "",
                      error_json({{"type", "worker_crashed"},
                                  {"message", crash_message(e)},
                                  {"pid", e.pid()},
                                  {"signal", e.signal()},
                                  {"exit_code", e.exit_code()},
                                  {"out_of_memory", e.out_of_memory()},
                                  {"output_tail", e.output_tail()}})};
  } catch (const procpool::remote_error& e) {
    co_return outcome{
        job_state::failed, "",
        error_json({{"type", e.type_name()}, {"message", e.message()}, {"pid", e.pid()}})};
  } catch (const std::exception& e) {
    co_return outcome{
        job_state::failed, "",
        error_json({{"type", boost::core::demangle(typeid(e).name())}, {"message", e.what()}})};
  }
}

auto job_runner::cancel(std::int64_t id) -> asio::awaitable<std::optional<job>> {
  auto it = active_.find(id);
  if (it == active_.end()) co_return std::nullopt;
  active_job& a = it->second;
  if (!a.running) {
    std::erase(queue_, id);
    a.running = true;  // no lane may take it while the change is written
    const job_change c = co_await persist([id](store& s) {
      return s.finish(
          id, job_state::cancelled, "",
          R"({"type":"cancelled","message":"cancelled by a DELETE request before it ran"})");
    });
    finished(c);
    co_return c.after;
  }
  a.kill.emit(asio::cancellation_type::terminal);
  const auto ended = a.ended;
  boost::system::error_code ec;
  co_await ended->async_wait(asio::redirect_error(asio::use_awaitable, ec));
  co_return co_await db_.run([id](store& s) { return s.get(id); });
}

auto job_runner::drain(std::chrono::steady_clock::time_point deadline) -> asio::awaitable<bool> {
  stopping_ = true;
  work_ready_.cancel();
  // Lanes end when their task has ended; they do not wait for the writes.
  while (lanes_alive_ > 0 && std::chrono::steady_clock::now() < deadline) {
    lanes_done_.expires_at(deadline);
    boost::system::error_code ec;
    co_await lanes_done_.async_wait(asio::redirect_error(asio::use_awaitable, ec));
  }
  const bool drained = lanes_alive_ == 0;
  if (!drained) {
    for (auto& [id, a] : active_) {
      if (!a.running) continue;
      a.stop_requested = true;
      a.kill.emit(asio::cancellation_type::terminal);
    }
  }
  // Killed tasks end at once; then every state change still being written is committed.
  while (lanes_alive_ > 0 || writes_in_flight_ > 0) {
    lanes_done_.expires_at(asio::steady_timer::time_point::max());
    boost::system::error_code ec;
    co_await lanes_done_.async_wait(asio::redirect_error(asio::use_awaitable, ec));
  }
  co_return drained;
}

}  // namespace service
