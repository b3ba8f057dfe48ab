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
#include "log.hpp"
#include "tasks.hpp"

namespace asio = boost::asio;
namespace json = boost::json;
using namespace std::chrono_literals;

namespace service {

job_runner::job_runner(asio::any_io_executor ex, procpool::process_pool& pool, database& db,
                       notifier& notify, service_metrics& metrics, progress_board& progress,
                       runner_options options)
    : ex_(ex),
      pool_(pool),
      db_(db),
      notify_(notify),
      metrics_(metrics),
      progress_(progress),
      options_(std::move(options)),
      wake_(ex, asio::steady_timer::time_point::max()),
      idle_(ex, asio::steady_timer::time_point::max()) {}

void job_runner::spawn(asio::awaitable<void> work, const char* what) {
  ++background_;
  asio::co_spawn(ex_, std::move(work), report_failure(what, [this] {
                   --background_;
                   idle_.cancel();
                 }));
}

void job_runner::start() {
  claimer_alive_ = true;
  asio::co_spawn(ex_, claimer(), report_failure("job claimer stopped", [this] {
                   claimer_alive_ = false;
                   idle_.cancel();
                 }));
}

void job_runner::wake() {
  woken_ = true;
  wake_.cancel();
}

void job_runner::set_listening(bool listening) {
  listening_ = listening;
  wake_.cancel();  // the next poll is due sooner (or later)
}

auto job_runner::accept(job j) -> asio::awaitable<std::pair<accept_status, job>> {
  if (stopping_) co_return std::pair{accept_status::stopping, std::move(j)};
  const admission_limits limits{options_.max_active_jobs, options_.max_active_input_bytes};
  std::optional<job_change> c;
  // The operation is made before the co_await, not inside it: GCC 12 destroys a temporary
  // argument of a co_await expression twice (a lambda capturing a string is one).
  auto insert = db_.run([j, limits](store& s) { return s.insert(j, limits); });
  try {
    c = co_await std::move(insert);
  } catch (...) {
    ++metrics_.database_errors;
    throw;
  }
  if (!c) {
    ++metrics_.rejected_queue_full;
    co_return std::pair{accept_status::queue_full, std::move(j)};
  }
  ++metrics_.accepted;
  wake();
  co_return std::pair{accept_status::accepted, c->after};
}

template <class F>
auto job_runner::persist(F change) -> asio::awaitable<std::invoke_result_t<F&, store&>> {
  auto backoff = 100ms;
  for (;;) {
    try {
      co_return co_await db_.run(change);
    } catch (const sql_error& e) {
      if (e.what_kind == sql_error::kind::statement || abandon_writes_) throw;
      ++metrics_.database_errors;
      log("database write failed, retrying in %lld ms: %s", static_cast<long long>(backoff.count()),
          e.what());
    }
    asio::steady_timer t(ex_, backoff);
    co_await t.async_wait(asio::use_awaitable);
    backoff = std::min(backoff * 2, std::chrono::milliseconds(2s));
  }
}

auto job_runner::claimer() -> asio::awaitable<void> {
  auto next_poll = std::chrono::steady_clock::now();
  while (!stopping_) {
    const auto now = std::chrono::steady_clock::now();
    const bool poll_due = now >= next_poll;
    if (poll_due) {
      next_poll = now + (listening_ ? options_.poll : options_.poll_without_notify);
    }
    if (poll_due && !fenced_) {
      co_await check_cancel_requests();
      // A claim in flight would look like a lost one: then wait for the next poll.
      if (claiming_ == 0) co_await reconcile();
    }
    const std::size_t capacity = options_.slots + options_.prefetch;
    const std::size_t taken = executing_ + claiming_;
    const std::size_t free = capacity > taken ? capacity - taken : 0;
    if (!fenced_ && !stopping_ && free > 0 && (woken_ || poll_due)) {
      // Not awaited: a worker that frees up while a claim is on its way gets a claim of its own
      // at once, instead of waiting for the first to come back.
      woken_ = false;
      claiming_ += free;
      spawn(claim_once(free), "claiming jobs failed");
      continue;
    }
    if (stopping_) break;
    if (woken_ && free > 0 && !fenced_) continue;
    wake_.expires_at(
        std::min(next_poll, now + (listening_ ? options_.poll : options_.poll_without_notify)));
    boost::system::error_code ec;
    co_await wake_.async_wait(asio::redirect_error(asio::use_awaitable, ec));
  }
}

auto job_runner::claim_once(std::size_t free) -> asio::awaitable<void> {
  std::vector<job_change> claimed;
  bool failed = false;
  auto claim = db_.run_without_sync(
      [me = options_.instance_id, tasks = options_.tasks,
       n = static_cast<std::int64_t>(free)](store& s) { return s.claim(me, tasks, n); });
  try {
    claimed = co_await std::move(claim);
  } catch (const std::exception& e) {
    ++metrics_.database_errors;
    log("claiming jobs failed: %s", e.what());
    failed = true;
  }
  claiming_ -= free;
  if (failed) {
    asio::steady_timer t(ex_, 200ms);
    boost::system::error_code ec;
    co_await t.async_wait(asio::redirect_error(asio::use_awaitable, ec));
    wake();  // try again
    co_return;
  }
  // A full batch: more may be waiting.
  if (claimed.size() == free) wake();
  for (auto& c : claimed) {
    const std::int64_t id = c.after.id;
    if (active_.contains(id)) {
      // Still ending an earlier attempt of the same job here (its end is being written, fenced):
      // this claim goes back untouched rather than share that attempt's state.
      spawn(hand_back(std::move(c.after)), "job hand-back failed");
      continue;
    }
    ++metrics_.jobs_claimed;
    metrics_.queue_seconds.observe((c.after.started_ms - c.after.created_ms) / 1000.0);
    auto& a = active_[id];
    a.record = std::move(c.after);
    a.ended = std::make_shared<asio::steady_timer>(ex_, asio::steady_timer::time_point::max());
    ++executing_;
    if (stopping_ || fenced_) a.stop_requested = true;  // claimed as the instance stopped
    spawn(run(id), "job failed");
  }
}

auto job_runner::hand_back(job j) -> asio::awaitable<void> {
  auto requeue = [j](store& s) { return s.requeue(j, true); };
  co_await persist(std::move(requeue));
  wake();
}

auto job_runner::check_cancel_requests() -> asio::awaitable<void> {
  auto requests = db_.read([me = options_.instance_id](store& s) { return s.cancel_requests(me); });
  try {
    const auto ids = co_await std::move(requests);
    for (const auto id : ids) kill_local(id);
  } catch (const std::exception&) {
    ++metrics_.database_errors;
  }
}

auto job_runner::reconcile() -> asio::awaitable<void> {
  // Jobs the database says this instance runs, which it does not know: a claim whose COMMIT
  // succeeded but whose answer was lost. Nobody would run or rescue them (this instance is
  // alive), so they go back to the queue. The claimer runs no claim meanwhile (this coroutine is
  // the claimer), so a claim in flight cannot be mistaken for one.
  auto read = db_.read([me = options_.instance_id](store& s) { return s.running_jobs(me); });
  std::vector<job> mine;
  try {
    mine = co_await std::move(read);
  } catch (const std::exception&) {
    ++metrics_.database_errors;
    co_return;
  }
  for (const auto& j : mine) {
    if (active_.contains(j.id)) continue;
    log("job %lld attempt %lld is ours in the database but was not known here (a lost claim "
        "answer): back to the queue",
        static_cast<long long>(j.id), static_cast<long long>(j.attempts));
    auto requeue = db_.run([j](store& s) { return s.requeue(j, true); });
    try {
      co_await std::move(requeue);
    } catch (const std::exception&) {
      ++metrics_.database_errors;  // tried again at the next poll
    }
  }
}

void job_runner::kill_local(std::int64_t id) {
  if (auto it = active_.find(id); it != active_.end() && it->second.executing) {
    it->second.cancel_asked = true;
    it->second.killed = true;
    it->second.kill.emit(asio::cancellation_type::terminal);
  }
}

auto job_runner::run(std::int64_t id) -> asio::awaitable<void> {
  outcome o = co_await execute(active_.at(id));
  progress_.forget(id);
  // The slot is free as soon as the worker is; the end is written while the next job starts.
  active_job& a = active_.at(id);
  a.executing = false;
  --executing_;
  wake();
  co_await record_end(id, std::move(o));
}

void job_runner::retire(std::int64_t id) {
  if (auto it = active_.find(id); it != active_.end()) {
    it->second.ended->cancel();
    active_.erase(it);
  }
}

void job_runner::finished(const job& j) {
  if (j.started_ms != 0) metrics_.run_seconds.observe((j.finished_ms - j.started_ms) / 1000.0);
  metrics_.total_seconds.observe((j.finished_ms - j.created_ms) / 1000.0);
  if (!j.notify_url.empty()) notify_.deliver(j);
}

auto job_runner::record_end(std::int64_t id, outcome o) -> asio::awaitable<void> {
  // Named, not a temporary in the co_await: GCC 12 destroys a temporary coroutine argument twice
  // there.
  const job claimed = active_.at(id).record;
  const bool requeue_it = o.requeue;
  const job_state state = o.state;
  std::optional<job_change> c;
  bool written = false;
  try {
    if (o.requeue) {
      auto requeue = [claimed, uncount = o.never_started](store& s) {
        return s.requeue(claimed, uncount);
      };
      c = co_await persist(std::move(requeue));
    } else {
      auto finish = [claimed, o = std::move(o)](store& s) {
        return s.finish(claimed, o.state, o.result, o.error);
      };
      c = co_await persist(std::move(finish));
    }
    written = true;
  } catch (const std::exception& e) {
    log("the end of job %lld (attempt %lld) was not written: %s", static_cast<long long>(id),
        static_cast<long long>(claimed.attempts), e.what());
  }
  if (written && !c && !requeue_it) {
    // Zero rows: taken over, or a retry of our own write whose first answer was lost. The
    // database tells which: our end is there under our owner and attempt.
    auto read = db_.read([id](store& s) { return s.get(id); });
    try {
      const auto now = co_await std::move(read);
      if (now && now->owner == claimed.owner && now->attempts == claimed.attempts &&
          now->state == state) {
        c = job_change{0, *now};
      }
    } catch (const std::exception&) {
      // Unknown; counted as taken over below (the webhook, if any, is then not sent by us).
    }
  }
  retire(id);
  // Not written: the job stays ours and `running` in the database; the next poll's reconcile
  // puts it back in the queue (or, if this instance dies, the rescue does).
  if (!written) co_return;
  if (!c) {
    // Fenced: another instance took the job over while this one could not prove it was alive.
    ++metrics_.completions_fenced;
    log("job %lld attempt %lld was taken over by another instance; this instance's outcome is "
        "dropped",
        static_cast<long long>(id), static_cast<long long>(claimed.attempts));
    co_return;
  }
  if (is_final(c->after.state)) finished(c->after);
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
  if (a.stop_requested) co_return outcome{job_state::queued, "", "", true, true};
  try {
    // Progress goes to the board (memory and /events), never to the database.
    std::string result = co_await pool_.async_submit(
        procpool::task_options{
            .timeout = std::chrono::milliseconds(j.timeout_ms),
            .on_progress = [this,
                            id = j.id](const procpool::progress& p) { progress_.report(id, p); }},
        run_task, j.task, j.input,
        asio::bind_cancellation_slot(a.kill.slot(), asio::use_awaitable));
    co_return outcome{job_state::succeeded, std::move(result), ""};
  } catch (const procpool::timeout_error&) {
    co_return outcome{job_state::timed_out, "",
                      error_json({{"type", "timeout"},
                                  {"message", "the job ran longer than its timeout_ms (" +
                                                  std::to_string(j.timeout_ms) +
                                                  " ms); the worker running it was killed"},
                                  {"timeout_ms", j.timeout_ms}})};
  } catch (const procpool::cancelled&) {
    if (a.stop_requested && !a.cancel_asked) {
      co_return outcome{job_state::queued, "", "", true, !a.killed};
    }
    co_return outcome{
        job_state::cancelled, "",
        error_json(
            {{"type", "cancelled"},
             {"message", "cancelled by a DELETE request; the worker running it was killed"}})};
  } catch (const procpool::pool_closed&) {
    co_return outcome{job_state::queued, "", "", true, true};
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
  if (auto it = active_.find(id); it != active_.end() && it->second.executing) {
    kill_local(id);
    const auto ended = it->second.ended;
    boost::system::error_code ec;
    co_await ended->async_wait(asio::redirect_error(asio::use_awaitable, ec));
    co_return co_await db_.read([id](store& s) { return s.get(id); });
  }
  // A job may move between queued and running while we look (claimed, or handed back by a
  // stopping instance): try both ways a few times. Plain database calls, not persist: while the
  // database is away the caller gets a 503 rather than a request that hangs.
  for (int round = 0; round < 3; ++round) {
    auto cancel_queued =
        db_.run([id, me = options_.instance_id](store& s) { return s.cancel_queued(id, me); });
    if (auto c = co_await std::move(cancel_queued)) {
      finished(c->after);
      co_return c->after;
    }
    // Running (here or elsewhere): marked in the database, where its owner finds it by
    // notification or at its next poll.
    const auto owner = co_await db_.run([id](store& s) { return s.request_cancel(id); });
    if (owner) {
      if (*owner == options_.instance_id) kill_local(id);
      co_return co_await wait_until_final(id);
    }
    const auto now = co_await db_.read([id](store& s) { return s.get(id); });
    if (!now || is_final(now->state)) co_return std::nullopt;
  }
  co_return co_await db_.read([id](store& s) { return s.get(id); });
}

auto job_runner::wait_until_final(std::int64_t id) -> asio::awaitable<std::optional<job>> {
  const auto deadline = std::chrono::steady_clock::now() + options_.remote_cancel_wait;
  for (;;) {
    auto j = co_await db_.read([id](store& s) { return s.get(id); });
    if (!j || is_final(j->state) || std::chrono::steady_clock::now() >= deadline) co_return j;
    asio::steady_timer t(ex_, 50ms);
    co_await t.async_wait(asio::use_awaitable);
  }
}

void job_runner::fence(const std::string& why) {
  if (fenced_) return;
  fenced_ = true;
  log("%s: stopped claiming; killing %zu running jobs", why.c_str(), executing_);
  for (auto& [id, a] : active_) {
    if (!a.executing) continue;
    a.stop_requested = true;
    a.killed = true;
    a.kill.emit(asio::cancellation_type::terminal);
  }
}

void job_runner::unfence() {
  if (!fenced_) return;
  fenced_ = false;
  log("the database answers again: claiming again");
  wake();
}

auto job_runner::drain(std::chrono::steady_clock::time_point deadline) -> asio::awaitable<bool> {
  stopping_ = true;
  wake_.cancel();
  // Claimed jobs still waiting in the pool's queue go back to the database's queue now (a partial
  // cancellation removes a queued task and leaves a running one alone); running ones may finish.
  for (auto& [id, a] : active_) {
    if (!a.executing) continue;
    a.stop_requested = true;
    a.kill.emit(asio::cancellation_type::partial);
  }
  while ((executing_ > 0 || claimer_alive_) && std::chrono::steady_clock::now() < deadline) {
    idle_.expires_at(deadline);
    boost::system::error_code ec;
    co_await idle_.async_wait(asio::redirect_error(asio::use_awaitable, ec));
  }
  const bool drained = executing_ == 0;
  if (!drained) {
    for (auto& [id, a] : active_) {
      if (!a.executing) continue;
      a.stop_requested = true;
      a.killed = true;
      a.kill.emit(asio::cancellation_type::terminal);
    }
  }
  // Killed tasks end at once; then every end still being written is committed. A database that
  // does not come back within the grace period loses them: the jobs are still `running` under
  // this instance, and are rescued (another instance, or the next start with SQLite).
  const auto grace = std::max(deadline, std::chrono::steady_clock::now()) + 5s;
  while (background_ > 0 || claimer_alive_) {
    const auto now = std::chrono::steady_clock::now();
    if (now >= grace && !abandon_writes_) {
      abandon_writes_ = true;
      log("the database did not take the last job ends in time");
    }
    idle_.expires_at(abandon_writes_ ? now + 100ms : grace);
    boost::system::error_code ec;
    co_await idle_.async_wait(asio::redirect_error(asio::use_awaitable, ec));
  }
  co_return drained;
}

}  // namespace service
