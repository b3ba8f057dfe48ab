// procpool-service: the pipeline "receive requests asynchronously -> compute in a process pool
// -> write the database -> notify", as an HTTP job service. See apps/service/README.md.
#include <unistd.h>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/signal_set.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/json/object.hpp>
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <procpool/procpool.hpp>

#include "api.hpp"
#include "config.hpp"
#include "demo.hpp"
#include "http_server.hpp"
#include "job_runner.hpp"
#include "notifier.hpp"
#include "retention.hpp"
#include "tasks.hpp"

namespace asio = boost::asio;
using namespace std::chrono_literals;

// [custom-task]
// A task of your own: an input struct that parses and checks its JSON (bad input becomes a 400
// naming the field), and a plain function that computes the result in a worker process.
struct collatz_input {
  std::int64_t below;
  static auto parse(const boost::json::object& in) -> collatz_input {
    return {service::integer_field(in, "below", 2, 100'000'000, 1'000'000)};
  }
};

auto longest_collatz(const collatz_input& in) -> boost::json::value {
  std::int64_t best = 1, best_steps = 0;
  for (std::int64_t start = 1; start < in.below; ++start) {
    std::int64_t steps = 0;
    for (std::uint64_t n = static_cast<std::uint64_t>(start); n != 1; ++steps) {
      n = n % 2 == 0 ? n / 2 : 3 * n + 1;
    }
    if (steps > best_steps) best = start, best_steps = steps;
  }
  return {{"start", best}, {"steps", best_steps}};
}
// [custom-task]

namespace {

// Exit statuses, for scripts and supervisors.
constexpr int exit_drained = 0;         // stopped cleanly: every running job finished
constexpr int exit_startup_failed = 1;  // could not open the database, bind, or start workers
constexpr int exit_usage = 2;
constexpr int exit_drain_timed_out = 3;  // running jobs were killed at the drain deadline and
                                         // re-queued for the next start
constexpr int exit_demo_failed = 4;

auto serve(service::config cfg) -> int {
  // The store and its thread are created after procpool::init(): workers are forked from the
  // process as it was at init, without these threads.
  service::store st(cfg.db, cfg.full_sync);
  service::database db(st);
  asio::io_context ioc(1);
  procpool::process_pool pool(
      ioc.get_executor(),
      procpool::pool_options{.workers = cfg.workers,
                             .memory_limit_bytes = cfg.memory_limit_mb << 20,
                             // Each line a worker writes goes to the service's stderr, tagged
                             // with the worker's pid (job errors carry the pid too).
                             .output =
                                 [](const procpool::output_line& line) {
                                   std::fprintf(stderr, "[worker pid %d] %.*s\n", line.pid,
                                                static_cast<int>(line.text.size()),
                                                line.text.data());
                                 },
                             .crash_output_lines = 20});
  const std::size_t workers = pool.stats().workers;
  service::service_metrics metrics;
  service::event_hub events(1024);
  service::notifier notify(ioc.get_executor(), db, metrics,
                           {.attempts = cfg.webhook_attempts,
                            .first_backoff = std::chrono::milliseconds(cfg.webhook_backoff_ms)});
  service::job_runner runner(ioc.get_executor(), pool, db, notify, events, metrics,
                             {.lanes = workers,
                              .max_active = cfg.max_active_jobs,
                              .max_active_input_bytes = cfg.max_active_input_mb << 20,
                              .max_attempts = cfg.max_attempts});
  service::retention retention(ioc.get_executor(), db, metrics,
                               std::chrono::seconds(cfg.retain_ended_s));
  service::api handler(cfg, service::task_registry::global(), runner, db, pool, events, metrics);
  service::http_server server(
      ioc.get_executor(),
      asio::ip::tcp::endpoint(asio::ip::make_address(cfg.address), cfg.demo ? 0 : cfg.port),
      handler, events,
      {.max_body_bytes = cfg.max_body_bytes, .max_connections = cfg.max_connections});

  int status = exit_drained;
  asio::signal_set signals(ioc, SIGINT, SIGTERM);
  auto lifespan = [&]() -> asio::awaitable<void> {
    const auto recovered = co_await runner.recover();
    if (!recovered.queued.empty() || recovered.abandoned > 0 || !recovered.to_notify.empty()) {
      std::printf(
          "procpool-service: resumed from %s: %zu queued jobs (%lld were interrupted while "
          "running), %lld failed as interrupted too often, %zu webhooks to deliver\n",
          cfg.db.c_str(), recovered.queued.size(), static_cast<long long>(recovered.interrupted),
          static_cast<long long>(recovered.abandoned), recovered.to_notify.size());
    }
    runner.start();
    retention.start();
    server.start();
    const std::string base = "http://" + cfg.address + ":" + std::to_string(server.port());
    std::printf("procpool-service: listening on %s (%zu workers, database %s)\n", base.c_str(),
                workers, cfg.db.c_str());
    if (!cfg.demo) {
      std::printf(
          "  try:  curl -s -d '{\"task\": \"count_primes\", \"input\": {\"n\": 10000000}}' "
          "%s/jobs\n        curl -s %s/jobs/1\n        curl -sN %s/events\n"
          "  stop: Ctrl-C or SIGTERM (running jobs get %lld ms to finish)\n",
          base.c_str(), base.c_str(), base.c_str(), static_cast<long long>(cfg.drain_timeout_ms));
    }
    std::fflush(stdout);

    if (cfg.demo) {
      const bool ok = co_await service::run_demo(ioc.get_executor(), server.port());
      if (!ok) status = exit_demo_failed;
      signals.cancel();
    } else {
      co_await signals.async_wait(asio::use_awaitable);
    }

    std::printf("procpool-service: stopping; draining running jobs for up to %lld ms\n",
                static_cast<long long>(cfg.drain_timeout_ms));
    std::fflush(stdout);
    server.stop();
    events.close_all();
    retention.stop();
    const auto deadline =
        std::chrono::steady_clock::now() + std::chrono::milliseconds(cfg.drain_timeout_ms);
    const bool drained = co_await runner.drain(deadline);
    const bool notified = co_await notify.wait_idle(deadline);
    notify.stop();
    co_await pool.shutdown(drained ? procpool::shutdown_mode::graceful
                                   : procpool::shutdown_mode::immediate);
    co_await server.wait_closed(std::chrono::steady_clock::now() + 2s);
    std::printf("procpool-service: stopped; %s%s\n",
                drained ? "every running job finished"
                        : "running jobs were killed at the deadline and re-queued",
                notified ? "" : "; undelivered webhooks will be retried at the next start");
    std::fflush(stdout);
    if (!drained && status == exit_drained) status = exit_drain_timed_out;
  };
  asio::co_spawn(ioc, lifespan(), [](std::exception_ptr ep) {
    if (ep) std::rethrow_exception(ep);
  });
  ioc.run();
  return status;
}

}  // namespace

int main(int argc, char** argv) {
  std::optional<service::config> cfg;
  try {
    cfg = service::parse_config(argc, argv);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "procpool-service: %s\n", e.what());
    return exit_usage;
  }
  if (!cfg) return 0;

  // [register-tasks]
  // Every task must exist before procpool::init(): workers are copies of the process as it is now.
  auto& tasks = service::task_registry::global();
  service::add_builtin_tasks(tasks);
  tasks.add<&longest_collatz>("collatz", "the longest Collatz chain below n; input {below}");
  procpool::init();
  // [register-tasks]

  std::string demo_db;
  if (cfg->demo) {
    demo_db = (std::filesystem::temp_directory_path() /
               ("procpool-service-demo-" + std::to_string(::getpid()) + ".db"))
                  .string();
    cfg->db = demo_db;
  }
  int status = exit_startup_failed;
  try {
    status = serve(*cfg);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "procpool-service: %s\n", e.what());
  }
  if (!demo_db.empty()) {
    for (const char* suffix : {"", "-wal", "-shm"}) std::filesystem::remove(demo_db + suffix);
  }
  return status;
}
