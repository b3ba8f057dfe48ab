#include "config.hpp"

#include <algorithm>
#include <boost/asio/ip/address.hpp>
#include <charconv>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <stdexcept>
#include <string_view>
#include <vector>

#include "address_policy.hpp"
#include "rate_limit.hpp"

namespace service {

namespace {

struct flag {
  std::string name;
  std::string help;
  std::function<void(config&, const std::string&)> set;
  bool takes_value = true;
};

template <class T>
auto number(const std::string& name, const std::string& text, T min, T max) -> T {
  T v{};
  const auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), v);
  if (ec != std::errc{} || end != text.data() + text.size() || v < min || v > max) {
    throw std::invalid_argument("--" + name + ": expected a number from " + std::to_string(min) +
                                " to " + std::to_string(max) + ", got '" + text + "'");
  }
  return v;
}

// A switch: given alone on the command line (value ""), or from the environment as 1/0,
// true/false, on/off (PROCPOOL_SERVICE_INSECURE=0 must not mean "insecure").
auto switch_value(const std::string& name, const std::string& text) -> bool {
  if (text.empty() || text == "1" || text == "true" || text == "on") return true;
  if (text == "0" || text == "false" || text == "off") return false;
  throw std::invalid_argument("--" + name + ": expected 1/0, true/false or on/off, got '" + text +
                              "'");
}

auto flags() -> std::vector<flag> {
  return {
      {"address", "address to listen on (127.0.0.1)",
       [](config& c, const std::string& v) { c.address = v; }},
      {"port", "port to listen on; 0 picks a free one (8080)",
       [](config& c, const std::string& v) {
         c.port = number<std::uint16_t>("port", v, 0, 65535);
       }},
      {"workers", "worker processes; 0 = one per hardware thread (0)",
       [](config& c, const std::string& v) {
         c.workers = number<std::size_t>("workers", v, 0, 1024);
       }},
      {"db",
       "SQLite database file, or a postgresql:// URL shared by many instances "
       "(procpool-service.db)",
       [](config& c, const std::string& v) { c.db = v; }},
      {"sync",
       "full: a commit is on disk before it is acknowledged; normal: survives a crash of "
       "the service, perhaps not of the machine (full)",
       [](config& c, const std::string& v) {
         if (v != "full" && v != "normal") throw std::invalid_argument("--sync: full or normal");
         c.full_sync = v == "full";
       }},
      {"max-body-bytes", "largest request body (1048576)",
       [](config& c, const std::string& v) {
         c.max_body_bytes = number<std::size_t>("max-body-bytes", v, 64, std::size_t{1} << 30);
       }},
      {"max-active-jobs", "jobs queued or running before POST /jobs answers 429 (10000)",
       [](config& c, const std::string& v) {
         c.max_active_jobs = number<std::size_t>("max-active-jobs", v, 1, 10'000'000);
       }},
      {"max-active-input-mb",
       "MiB of job input held by queued and running jobs before POST /jobs answers 429 (256)",
       [](config& c, const std::string& v) {
         c.max_active_input_mb = number<std::size_t>("max-active-input-mb", v, 1, 1 << 20);
       }},
      {"max-connections", "open HTTP connections before new ones get 503 (1024)",
       [](config& c, const std::string& v) {
         c.max_connections = number<std::size_t>("max-connections", v, 1, 1'000'000);
       }},
      {"default-timeout-ms", "time limit of a job that sets none; 0 = none (60000)",
       [](config& c, const std::string& v) {
         c.default_timeout_ms = number<std::int64_t>("default-timeout-ms", v, 0, 86'400'000);
       }},
      {"max-timeout-ms", "largest timeout_ms a job may ask for (3600000)",
       [](config& c, const std::string& v) {
         c.max_timeout_ms = number<std::int64_t>("max-timeout-ms", v, 1, 86'400'000);
       }},
      {"drain-timeout-ms", "on SIGTERM/SIGINT, how long running jobs may finish (10000)",
       [](config& c, const std::string& v) {
         c.drain_timeout_ms = number<std::int64_t>("drain-timeout-ms", v, 0, 3'600'000);
       }},
      {"memory-limit-mb", "address-space limit of each worker; 0 = none (2048)",
       [](config& c, const std::string& v) {
         c.memory_limit_mb = number<std::size_t>("memory-limit-mb", v, 0, 1 << 24);
       }},
      {"max-attempts", "starts before a job interrupted by service stops fails (3)",
       [](config& c, const std::string& v) {
         c.max_attempts = number<std::int64_t>("max-attempts", v, 1, 1000);
       }},
      {"retain-ended-s",
       "seconds an ended job stays in the database before it is deleted (604800, 7 days)",
       [](config& c, const std::string& v) {
         c.retain_ended_s = number<std::int64_t>("retain-ended-s", v, 1, 100LL * 365 * 24 * 3600);
       }},
      {"prefetch",
       "jobs claimed beyond the free workers, so a worker starts its next job without waiting for "
       "the database, but shown as running while they wait; -1 = as many as workers, 0 = claim "
       "only for free workers (0)",
       [](config& c, const std::string& v) {
         c.prefetch = number<std::int64_t>("prefetch", v, -1, 100'000);
       }},
      {"heartbeat-ms", "how often the instance writes its heartbeat and tries a rescue (5000)",
       [](config& c, const std::string& v) {
         c.heartbeat_ms = number<std::int64_t>("heartbeat-ms", v, 10, 600'000);
       }},
      {"dead-after-ms",
       "an instance whose heartbeat is this old is dead and its running jobs are re-queued; an "
       "instance that cannot write its heartbeat for 2/3 of it kills its running jobs (30000)",
       [](config& c, const std::string& v) {
         c.dead_after_ms = number<std::int64_t>("dead-after-ms", v, 30, 3'600'000);
       }},
      {"poll-ms", "how often the queue is polled while notifications work (5000)",
       [](config& c, const std::string& v) {
         c.poll_ms = number<std::int64_t>("poll-ms", v, 10, 600'000);
       }},
      {"poll-without-notify-ms",
       "how often the queue is polled while LISTEN is down or --notify is off (500)",
       [](config& c, const std::string& v) {
         c.poll_without_notify_ms = number<std::int64_t>("poll-without-notify-ms", v, 10, 600'000);
       }},
      {"notify", "on: PostgreSQL LISTEN/NOTIFY wakes instances at once; off: polling only (on)",
       [](config& c, const std::string& v) {
         if (v != "on" && v != "off") throw std::invalid_argument("--notify: on or off");
         c.notify = v == "on";
       }},
      {"webhook-attempts", "tries per webhook before it is marked failed (6)",
       [](config& c, const std::string& v) {
         c.webhook_attempts = number<int>("webhook-attempts", v, 1, 100);
       }},
      {"webhook-backoff-ms", "wait before the first webhook retry, doubled each time (200)",
       [](config& c, const std::string& v) {
         c.webhook_backoff_ms = number<std::int64_t>("webhook-backoff-ms", v, 1, 600'000);
       }},
      {"webhook-secret-file",
       "sign webhooks (Procpool-Signature: HMAC-SHA256) with the secret in this file, which only "
       "its owner may read; without it webhooks are unsigned (none)",
       [](config& c, const std::string& v) { c.webhook_secret_file = v; }},
      {"webhook-ca-file",
       "PEM file of CA certificates trusted for https:// notify URLs, beside the system's (none)",
       [](config& c, const std::string& v) { c.webhook_ca_file = v; }},
      {"webhook-allow-network",
       "a network (CIDR, e.g. 10.1.0.0/16) webhooks may reach although it is private, loopback "
       "or otherwise not public; repeat it or separate with commas (none)",
       [](config& c, const std::string& v) {
         for (std::size_t start = 0; start <= v.size();) {
           const auto comma = std::min(v.find(',', start), v.size());
           const std::string cidr = v.substr(start, comma - start);
           if (!parse_ip_network(cidr)) {
             throw std::invalid_argument(
                 "--webhook-allow-network: expected a network such as "
                 "10.1.0.0/16 or fd00::/8, got '" +
                 cidr + "'");
           }
           c.webhook_allow_networks.push_back(cidr);
           start = comma + 1;
         }
       }},
      {"webhook-allow-private",
       "webhooks may reach any address, also loopback, private and cloud metadata ones (off)",
       [](config& c, const std::string&) { c.webhook_allow_private = true; }, false},
      {"dashboard-dir",
       "serve the dashboard's files from this directory instead of the copy compiled in (for "
       "working on the page)",
       [](config& c, const std::string& v) { c.dashboard_dir = v; }},
      {"demo", "start, run a mix of jobs through the HTTP API, show what happens, stop",
       [](config& c, const std::string&) { c.demo = true; }, false},
      {"require-tokens",
       "every endpoint but /healthz and the dashboard's page needs an API token "
       "(Authorization: Bearer; see procpool-service token --help) (off)",
       [](config& c, const std::string& v) {
         c.require_tokens = switch_value("require-tokens", v);
       },
       false},
      {"open-metrics", "/metrics needs no token even with --require-tokens (off)",
       [](config& c, const std::string& v) { c.open_metrics = switch_value("open-metrics", v); },
       false},
      {"token-cache-ms",
       "how long an instance trusts a token it looked up: a revocation takes effect on every "
       "instance within this time; 0 = look up at every request (5000)",
       [](config& c, const std::string& v) {
         c.token_cache_ms = number<std::int64_t>("token-cache-ms", v, 0, 3'600'000);
       }},
      {"rate-limit",
       "requests per API token (per client address without one), e.g. 20/s, 600/min; "
       "429 + Retry-After beyond it (none)",
       [](config& c, const std::string& v) {
         (void)parse_rate(v);
         c.rate_limit = v;
       }},
      {"rate-burst", "requests a client may make at once before --rate-limit applies (the rate)",
       [](config& c, const std::string& v) {
         c.rate_burst = number<std::size_t>("rate-burst", v, 1, 1'000'000);
       }},
      {"tls-cert",
       "PEM certificate chain: the API is served over TLS only (1.2 or newer); reloaded with "
       "--tls-key on SIGHUP (none)",
       [](config& c, const std::string& v) { c.tls_cert = v; }},
      {"tls-key", "PEM private key of --tls-cert, unencrypted (none)",
       [](config& c, const std::string& v) { c.tls_key = v; }},
      {"sandbox",
       "run tasks in the worker sandbox, procpool::sandbox::compute_only(): no files, network, "
       "programs or other processes, an empty environment, uid 65534 when run as root (off; see "
       "docs/security.md)",
       [](config& c, const std::string& v) { c.sandbox = switch_value("sandbox", v); }, false},
      {"insecure",
       "allow listening on an address that is not loopback without TLS and --require-tokens "
       "(anyone who can reach the port can then submit and cancel jobs)",
       [](config& c, const std::string& v) { c.insecure = switch_value("insecure", v); }, false},
  };
}

auto env_name(const std::string& flag_name) -> std::string {
  std::string n = "PROCPOOL_SERVICE_";
  for (char ch : flag_name) n += ch == '-' ? '_' : static_cast<char>(std::toupper(ch));
  return n;
}

void usage() {
  std::printf(
      "procpool-service: an HTTP job service that runs CPU-heavy tasks in worker processes\n\n"
      "usage: procpool-service [--flag value]...\n"
      "       procpool-service token create|list|revoke ...   API tokens (token --help)\n\n");
  for (const auto& f : flags()) {
    std::printf("  --%-20s %s\n  %-22s env %s\n", f.name.c_str(), f.help.c_str(), "",
                env_name(f.name).c_str());
  }
}

}  // namespace

auto parse_config(int argc, char** argv) -> std::optional<config> {
  config c;
  const auto all = flags();
  for (const auto& f : all) {
    if (const char* v = std::getenv(env_name(f.name).c_str())) f.set(c, v);
  }
  for (int i = 1; i < argc; ++i) {
    std::string arg = argv[i];
    if (arg == "--help" || arg == "-h") {
      usage();
      return std::nullopt;
    }
    if (!arg.starts_with("--")) throw std::invalid_argument("unexpected argument '" + arg + "'");
    std::string name = arg.substr(2), value;
    bool has_value = false;
    if (const auto eq = name.find('='); eq != std::string::npos) {
      value = name.substr(eq + 1);
      name.resize(eq);
      has_value = true;
    }
    const flag* f = nullptr;
    for (const auto& candidate : all) {
      if (candidate.name == name) f = &candidate;
    }
    if (f == nullptr) throw std::invalid_argument("unknown flag --" + name + " (see --help)");
    if (f->takes_value && !has_value) {
      if (i + 1 >= argc) throw std::invalid_argument("--" + name + " needs a value");
      value = argv[++i];
    }
    f->set(c, value);
  }
  if (c.dead_after_ms < 3 * c.heartbeat_ms) {
    throw std::invalid_argument("--dead-after-ms must be at least 3 x --heartbeat-ms (" +
                                std::to_string(3 * c.heartbeat_ms) +
                                "), or a live instance could be declared dead");
  }
  if (!c.rate_limit.empty() && parse_rate(c.rate_limit).rate == 0) c.rate_limit.clear();
  if (c.demo && (c.require_tokens || !c.tls_cert.empty())) {
    throw std::invalid_argument(
        "--demo talks plain HTTP without a token to itself: run it without --require-tokens and "
        "--tls-cert");
  }
  if (c.tls_cert.empty() != c.tls_key.empty()) {
    throw std::invalid_argument("TLS needs both --tls-cert and --tls-key");
  }
  if (c.rate_burst > 0 && c.rate_limit.empty()) {
    throw std::invalid_argument("--rate-burst needs --rate-limit (e.g. --rate-limit 20/s)");
  }
  return c;
}

auto is_loopback(const std::string& address) -> bool {
  boost::system::error_code ec;
  const auto a = boost::asio::ip::make_address(address, ec);
  return !ec && a.is_loopback();
}

}  // namespace service
