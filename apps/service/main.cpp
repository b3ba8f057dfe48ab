// procpool-service: the pipeline "receive requests asynchronously -> compute in a process pool
// -> write the database -> notify", as an HTTP job service. See apps/service/README.md.
#include <fcntl.h>
#include <sys/file.h>
#include <unistd.h>

#include <algorithm>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/signal_set.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/json/object.hpp>
#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <functional>
#include <optional>
#include <procpool/procpool.hpp>
#include <random>

#include "address_policy.hpp"
#include "api.hpp"
#include "auth.hpp"
#include "change_feed.hpp"
#include "config.hpp"
#include "demo.hpp"
#include "http_server.hpp"
#include "job_runner.hpp"
#include "log.hpp"
#include "membership.hpp"
#include "notifier.hpp"
#include "pg_listener.hpp"
#include "retention.hpp"
#include "tasks.hpp"
#include "tls_context.hpp"
#include "token_command.hpp"
#include "webhook_signature.hpp"

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

// With SQLite, one instance per database file: at start it re-queues whatever a previous
// instance left running, which is right only if no other instance is using the file.
auto lock_sqlite_database(const std::string& path) -> int {
  const std::string lock_path = path + ".lock";
  const int fd = ::open(lock_path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
  if (fd < 0) throw std::runtime_error("cannot open " + lock_path + ": " + std::strerror(errno));
  if (::flock(fd, LOCK_EX | LOCK_NB) != 0) {
    ::close(fd);
    throw std::runtime_error("the database " + path +
                             " is in use by another procpool-service; with SQLite one instance "
                             "owns a database file (use a postgresql:// URL to share one)");
  }
  return fd;
}

auto host_name() -> std::string {
  char host[256] = {};
  ::gethostname(host, sizeof host - 1);
  return host;
}

// Unique per process start, readable in logs: host-pid-random.
auto make_instance_id() -> std::string {
  std::random_device random;
  char suffix[8];
  std::snprintf(suffix, sizeof suffix, "%04x", random() & 0xffff);
  return host_name() + "-" + std::to_string(::getpid()) + "-" + suffix;
}

auto serve(service::config cfg) -> int {
  const bool pg = service::is_postgres_url(cfg.db);
  const int lock_fd = pg ? -1 : lock_sqlite_database(cfg.db);
  struct close_on_exit {
    int fd;
    ~close_on_exit() {
      if (fd >= 0) ::close(fd);
    }
  } lock_guard{lock_fd};
  const std::string instance_id = make_instance_id();
  service::log_tag() = instance_id;
  // Read here, after procpool::init(): the workers, which run untrusted input, were forked
  // before and never hold the secret.
  const std::string webhook_secret =
      cfg.webhook_secret_file.empty() ? "" : service::read_webhook_secret(cfg.webhook_secret_file);
  std::vector<service::ip_network> webhook_networks;
  for (const auto& cidr : cfg.webhook_allow_networks) {
    webhook_networks.push_back(service::parse_ip_network(cidr).value());
  }
  if (cfg.demo) {
    // The demo's receiver is on 127.0.0.1, in this process.
    webhook_networks.push_back(service::parse_ip_network("127.0.0.1").value());
  }
  // The store and its thread are created after procpool::init(): workers are forked from the
  // process as it was at init, without these threads.
  service::store st(
      service::open_sql_connection(
          cfg.db, {.application_name = "procpool-service " + instance_id,
                   .sqlite_full_sync = cfg.full_sync,
                   .pg_lock_timeout = std::clamp(std::chrono::milliseconds(cfg.dead_after_ms / 4),
                                                 std::chrono::milliseconds(250),
                                                 std::chrono::milliseconds(5'000))}),
      cfg.notify);
  service::database db(st);
  asio::io_context ioc(1);
  procpool::process_pool pool(
      ioc.get_executor(),
      procpool::pool_options{
          .workers = cfg.workers,
          .memory_limit_bytes = cfg.memory_limit_mb << 20,
          // Each line a worker writes goes to the service's stderr, tagged
          // with the instance and the worker's pid (job errors carry the pid).
          .output =
              [&instance_id](const procpool::output_line& line) {
                std::fprintf(stderr, "[%s worker pid %d] %.*s\n", instance_id.c_str(), line.pid,
                             static_cast<int>(line.text.size()), line.text.data());
              },
          .crash_output_lines = 20,
          .sandbox =
              cfg.sandbox ? std::optional(procpool::sandbox::compute_only()) : std::nullopt});
  const std::size_t workers = pool.stats().workers;
  std::vector<std::string> task_names;
  std::string task_list;
  for (const auto& t : service::task_registry::global().all()) {
    task_names.push_back(t.name);
    task_list += (task_list.empty() ? "" : ",") + t.name;
  }
  const auto ms = [](std::int64_t n) { return std::chrono::milliseconds(n); };
  service::service_metrics metrics;
  service::event_hub events(1024);
  service::notifier notify(
      ioc.get_executor(), db, metrics,
      {.attempts = cfg.webhook_attempts,
       .first_backoff = ms(cfg.webhook_backoff_ms),
       .secret = webhook_secret,
       .addresses = service::address_policy(cfg.webhook_allow_private, webhook_networks),
       .tls = service::make_tls_client_context(cfg.webhook_ca_file)});
  service::progress_board progress(ioc.get_executor(), events);
  service::job_runner runner(
      ioc.get_executor(), pool, db, notify, metrics, progress,
      {.instance_id = instance_id,
       .slots = workers,
       .prefetch = cfg.prefetch < 0 ? workers : static_cast<std::size_t>(cfg.prefetch),
       .tasks = task_names,
       .max_active_jobs = static_cast<std::int64_t>(cfg.max_active_jobs),
       .max_active_input_bytes = static_cast<std::int64_t>(cfg.max_active_input_mb << 20),
       .poll = ms(cfg.poll_ms),
       .poll_without_notify = ms(cfg.poll_without_notify_ms)});
  service::change_feed feed(ioc.get_executor(), db, events, ms(cfg.poll_ms),
                            ms(cfg.poll_without_notify_ms));
  db.on_changes(ioc.get_executor(), [&feed] { feed.kick(); });
  service::retention retention(ioc.get_executor(), db, metrics,
                               std::chrono::seconds(cfg.retain_ended_s));
  service::stats_feed stats(ioc.get_executor(), db, pool, events, feed, instance_id);
  const service::dashboard_files dashboard(cfg.dashboard_dir);
  service::api handler(cfg, instance_id, service::task_registry::global(), runner, db, pool, events,
                       feed, metrics, progress, stats, dashboard);
  service::rate_limit_options rate;
  if (!cfg.rate_limit.empty()) {
    rate = service::parse_rate(cfg.rate_limit);
    rate.burst = static_cast<double>(cfg.rate_burst);
  }
  const service::auth_options auth_options{.require_tokens = cfg.require_tokens,
                                           .open_metrics = cfg.open_metrics,
                                           .cache_for = ms(cfg.token_cache_ms),
                                           .rate = rate};
  service::authenticator auth(db, auth_options);
  std::optional<service::tls_context> tls;
  if (!cfg.tls_cert.empty()) tls.emplace(cfg.tls_cert, cfg.tls_key);
  service::http_server server(
      ioc.get_executor(),
      asio::ip::tcp::endpoint(asio::ip::make_address(cfg.address), cfg.demo ? 0 : cfg.port),
      handler, auth, events,
      {.max_body_bytes = cfg.max_body_bytes, .max_connections = cfg.max_connections},
      tls ? &*tls : nullptr);
  const std::string host =
      cfg.address.find(':') == std::string::npos ? cfg.address : "[" + cfg.address + "]";
  const std::string base =
      (tls ? "https://" : "http://") + host + ":" + std::to_string(server.port());
  service::membership members(ioc.get_executor(), db, runner, notify, metrics,
                              {.id = instance_id,
                               .host = host_name(),
                               .pid = ::getpid(),
                               .address = base,
                               .workers = static_cast<std::int64_t>(workers),
                               .tasks = task_list,
                               .started_ms = service::now_ms()},
                              {.heartbeat = ms(cfg.heartbeat_ms),
                               .dead_after = ms(cfg.dead_after_ms),
                               .max_attempts = cfg.max_attempts,
                               .sole_instance = !pg});

  // Notifications are a hint: a new job, a change, a cancel. Without them (SQLite: there is no
  // other writer; PostgreSQL with --notify off or LISTEN down) the polls find the same things.
  std::unique_ptr<service::pg_listener> listener;
  const auto set_listening = [&](bool up) {
    metrics.notify_listening = up ? 1 : 0;
    runner.set_listening(up);
    feed.set_listening(up);
    if (up) {
      // Notifications sent while nobody listened are lost: look now.
      runner.wake();
      feed.kick();
    }
  };
  if (pg && cfg.notify) {
    listener = std::make_unique<service::pg_listener>(
        ioc.get_executor(), cfg.db, "procpool-service listener " + instance_id,
        std::vector<std::string>{"procpool_jobs", "procpool_events", "procpool_control"},
        [&](const std::string& channel, const std::string& payload) {
          if (channel == "procpool_jobs") {
            runner.wake();
          } else if (channel == "procpool_events") {
            feed.kick();
          } else if (channel == "procpool_control") {
            // "<owner> <job id>": a cancel for the instance that runs the job.
            const auto space = payload.rfind(' ');
            if (space != std::string::npos && payload.substr(0, space) == instance_id) {
              runner.kill_local(std::atoll(payload.c_str() + space + 1));
            }
          }
        },
        set_listening);
    set_listening(false);  // until the listener says otherwise
  } else {
    set_listening(!pg);
  }

  int status = exit_drained;
  asio::signal_set signals(ioc, SIGINT, SIGTERM);
  // SIGHUP reloads the certificate and key (replaced by a renewal): new connections get them; if
  // they cannot be loaded the old ones stay. Without TLS there is nothing to reload, but SIGHUP
  // is still caught: a `systemctl reload` must not stop the service.
  std::optional<asio::signal_set> hangup;
  std::function<void()> await_hangup = [&] {
    hangup->async_wait([&](const boost::system::error_code& ec, int) {
      if (ec) return;
      if (!tls) {
        service::log("SIGHUP: nothing to reload (no --tls-cert)");
      } else if (const std::string error = tls->reload(); error.empty()) {
        service::log("TLS: SIGHUP: reloaded %s and %s; new connections use them",
                     cfg.tls_cert.c_str(), cfg.tls_key.c_str());
      } else {
        service::log("TLS: SIGHUP: kept the current certificate: %s", error.c_str());
      }
      await_hangup();
    });
  };
  hangup.emplace(ioc, SIGHUP);
  await_hangup();
  auto lifespan = [&]() -> asio::awaitable<void> {
    co_await feed.start();
    const auto rescued = co_await members.join();
    const auto counts = co_await db.read([](service::store& s) { return s.count_by_state(); });
    const auto queued = counts[static_cast<std::size_t>(service::job_state::queued)];
    if (queued > 0 || rescued.requeued > 0 || rescued.failed > 0 || !rescued.webhooks.empty()) {
      std::printf(
          "procpool-service: resumed from %s: %lld jobs queued (%lld of them interrupted while "
          "running), %lld failed as interrupted too often, %zu webhooks to deliver\n",
          pg ? "PostgreSQL" : cfg.db.c_str(), static_cast<long long>(queued),
          static_cast<long long>(rescued.requeued), static_cast<long long>(rescued.failed),
          rescued.webhooks.size());
    }
    runner.start();
    members.start();
    retention.start();
    stats.start();
    if (listener) listener->start();
    server.start();
    if (webhook_secret.empty() && !cfg.demo) {
      std::printf(
          "procpool-service: WARNING: webhooks are NOT signed; a receiver cannot tell them from "
          "anyone else's POSTs. Set --webhook-secret-file (see apps/service/README.md).\n");
    }
    if (cfg.webhook_allow_private) {
      std::printf(
          "procpool-service: WARNING: --webhook-allow-private: a notify_url may reach this "
          "host's and this network's services (loopback, private, cloud metadata addresses).\n");
    }
    std::printf("procpool-service: listening on %s (instance %s, %zu workers, %s database)\n",
                base.c_str(), instance_id.c_str(), workers, pg ? "PostgreSQL" : "SQLite");
    if (!cfg.demo) {
      std::printf(
          "  try:  curl -s -d '{\"task\": \"count_primes\", \"input\": {\"n\": 10000000}}' "
          "%s/jobs\n        curl -s %s/jobs/1\n        curl -sN %s/events\n"
          "  stop: Ctrl-C or SIGTERM (running jobs get %lld ms to finish)\n",
          base.c_str(), base.c_str(), base.c_str(), static_cast<long long>(cfg.drain_timeout_ms));
      if (cfg.require_tokens) {
        std::printf(
            "  tokens are required: add -H 'Authorization: Bearer <token>' (make one with: "
            "procpool-service token create --scope submit --db <this database>)\n");
      }
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
    if (hangup) hangup->cancel();
    events.close_all();
    retention.stop();
    stats.stop();
    const auto deadline =
        std::chrono::steady_clock::now() + std::chrono::milliseconds(cfg.drain_timeout_ms);
    const bool drained = co_await runner.drain(deadline);
    const bool notified = co_await notify.wait_idle(deadline);
    notify.stop();
    co_await members.leave();
    feed.stop();
    if (listener) listener->stop();
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

// A service that anyone who can reach it may use must not happen by accident: on an address
// other than loopback, both TLS and tokens, or --insecure said out loud. Empty: start.
auto exposure_refusal(const service::config& cfg) -> std::string {
  if (service::is_loopback(cfg.address)) return {};
  const bool tls = !cfg.tls_cert.empty();
  if (tls && cfg.require_tokens) return {};
  if (cfg.insecure) {
    std::fprintf(stderr,
                 "procpool-service: WARNING: --insecure: listening on %s%s%s. Anyone who can "
                 "reach this port can %s.\n",
                 cfg.address.c_str(), tls ? "" : " without TLS (tokens and jobs travel in clear)",
                 cfg.require_tokens ? "" : " without tokens",
                 cfg.require_tokens ? "read the traffic" : "submit, read and cancel jobs");
    return {};
  }
  std::string missing;
  if (!tls) missing += "TLS (--tls-cert PATH --tls-key PATH)";
  if (!cfg.require_tokens)
    missing += std::string(missing.empty() ? "" : " and ") + "--require-tokens";
  return "refusing to listen on " + cfg.address + ", which is not a loopback address, without " +
         missing +
         ": set them (create a token with: procpool-service token create --scope submit), or "
         "listen on 127.0.0.1 behind a proxy that does both, or add --insecure to expose the "
         "service as it is";
}

}  // namespace

int main(int argc, char** argv) {
  if (argc > 1 && std::string_view(argv[1]) == "token") {
    return service::run_token_command(argc - 1, argv + 1);
  }
  std::optional<service::config> cfg;
  try {
    cfg = service::parse_config(argc, argv);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "procpool-service: %s\n", e.what());
    return exit_usage;
  }
  if (!cfg) return 0;
  if (const std::string refusal = exposure_refusal(*cfg); !refusal.empty()) {
    std::fprintf(stderr, "procpool-service: %s\n", refusal.c_str());
    return exit_usage;
  }

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
    for (const char* suffix : {"", "-wal", "-shm", ".lock"}) {
      std::filesystem::remove(demo_db + suffix);
    }
  }
  return status;
}
