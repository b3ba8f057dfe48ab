#include "membership.hpp"

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/redirect_error.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <cstdio>
#include <random>

#include "background.hpp"
#include "log.hpp"

namespace asio = boost::asio;

namespace service {

membership::membership(asio::any_io_executor ex, database& db, job_runner& runner, notifier& notify,
                       service_metrics& metrics, instance_info me, membership_options options)
    : ex_(ex),
      db_(db),
      runner_(runner),
      notify_(notify),
      metrics_(metrics),
      me_(std::move(me)),
      options_(options),
      tick_(ex),
      watchdog_(ex),
      loops_done_(ex, asio::steady_timer::time_point::max()) {}

auto membership::join() -> asio::awaitable<rescue_report> {
  // Named before the co_await: GCC 12 destroys a temporary co_await argument twice.
  auto join = db_.run([me = me_](store& s) {
    s.join(me);
    return 0;
  });
  co_await std::move(join);
  last_heartbeat_ = std::chrono::steady_clock::now();
  co_return co_await rescue_once(options_.sole_instance ? -1 : options_.dead_after.count());
}

void membership::start() {
  loops_ = 2;
  auto done = [this] {
    if (--loops_ == 0) loops_done_.cancel();
  };
  asio::co_spawn(ex_, heartbeat_loop(), report_failure("heartbeat stopped", done));
  asio::co_spawn(ex_, watchdog_loop(), report_failure("watchdog stopped", done));
}

auto membership::leave() -> asio::awaitable<void> {
  stopping_ = true;
  tick_.cancel();
  watchdog_.cancel();
  while (loops_ > 0) {
    boost::system::error_code ec;
    co_await loops_done_.async_wait(asio::redirect_error(asio::use_awaitable, ec));
  }
  auto leave = db_.run([id = me_.id](store& s) {
    s.leave(id);
    return 0;
  });
  try {
    co_await std::move(leave);
  } catch (const std::exception& e) {
    // Then the others find it dead after dead_after and rescue what it left.
    log("could not remove the instance row: %s", e.what());
  }
}

auto membership::rescue_once(std::int64_t dead_after_ms) -> asio::awaitable<rescue_report> {
  auto rescue = [me = me_.id, dead_after_ms, max = options_.max_attempts](store& s) {
    return s.rescue(me, dead_after_ms, max);
  };
  auto op = db_.run(std::move(rescue));
  rescue_report r = co_await std::move(op);
  metrics_.instances_declared_dead += static_cast<std::uint64_t>(r.dead_instances);
  metrics_.jobs_rescued += static_cast<std::uint64_t>(r.requeued + r.failed);
  if (r.dead_instances > 0 || r.requeued > 0 || r.failed > 0 || !r.webhooks.empty()) {
    log("rescue: %lld dead instances, %lld running jobs re-queued, %lld failed as interrupted "
        "too often, %zu webhooks taken over",
        static_cast<long long>(r.dead_instances), static_cast<long long>(r.requeued),
        static_cast<long long>(r.failed), r.webhooks.size());
  }
  for (const auto& j : r.webhooks) notify_.deliver(j);
  if (r.requeued > 0) runner_.wake();
  co_return r;
}

auto membership::heartbeat_loop() -> asio::awaitable<void> {
  // Jitter spreads the instances' rescues (and their beats) over the interval.
  std::minstd_rand jitter(static_cast<unsigned>(std::hash<std::string>{}(me_.id)));
  while (!stopping_) {
    const auto spread = options_.heartbeat / 5;
    tick_.expires_after(options_.heartbeat - spread +
                        std::chrono::milliseconds(jitter() % (2 * spread.count() + 1)));
    boost::system::error_code ec;
    co_await tick_.async_wait(asio::redirect_error(asio::use_awaitable, ec));
    if (stopping_) break;
    auto beat = db_.run_without_sync([id = me_.id](store& s) { return s.heartbeat(id); });
    // Alive as of when the heartbeat was sent, not when its batch came back.
    const auto sent = std::chrono::steady_clock::now();
    auto rejoin = db_.run([me = me_](store& s) {
      s.join(me);
      return 0;
    });
    try {
      const bool alive = co_await std::move(beat);
      if (!alive) {
        // Declared dead while stalled: whatever it runs now belongs to the queue again.
        runner_.fence("declared dead by another instance (heartbeat too old)");
        co_await std::move(rejoin);
        log("rejoined");
      }
      last_heartbeat_ = sent;
      runner_.unfence();
      co_await rescue_once(options_.dead_after.count());
    } catch (const std::exception& e) {
      ++metrics_.heartbeat_failures;
      log("heartbeat failed: %s", e.what());
    }
  }
}

auto membership::watchdog_loop() -> asio::awaitable<void> {
  // Runs beside the heartbeat, not after it: a heartbeat stuck in a dead connection must not
  // keep the instance from noticing.
  const auto fence_after = options_.dead_after * 2 / 3;
  while (!stopping_) {
    watchdog_.expires_after(std::max(options_.heartbeat / 4, std::chrono::milliseconds(20)));
    boost::system::error_code ec;
    co_await watchdog_.async_wait(asio::redirect_error(asio::use_awaitable, ec));
    if (stopping_) break;
    const auto silent = std::chrono::steady_clock::now() - last_heartbeat_;
    // With SQLite there is nobody to hand the jobs to: a slow disk is no reason to kill them.
    if (silent > fence_after && !runner_.fenced() && !options_.sole_instance) {
      runner_.fence(
          "no heartbeat written for " +
          std::to_string(std::chrono::duration_cast<std::chrono::milliseconds>(silent).count()) +
          " ms");
    }
  }
}

}  // namespace service
