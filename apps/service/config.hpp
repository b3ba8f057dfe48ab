// procpool-service - settings, from command-line flags and PROCPOOL_SERVICE_* environment
// variables (a flag wins over the environment).
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace service {

struct config {
  std::string address = "127.0.0.1";
  std::uint16_t port = 8080;
  std::size_t workers = 0;  ///< 0: one per hardware thread
  /// A SQLite file, or a postgresql:// URL (several instances share one PostgreSQL database).
  std::string db = "procpool-service.db";
  bool full_sync = true;  ///< SQLite synchronous=FULL: committed means on disk
  std::size_t max_body_bytes = 1 << 20;
  std::size_t max_active_jobs = 10'000;
  std::size_t max_active_input_mb = 256;
  std::size_t max_connections = 1024;
  std::int64_t default_timeout_ms = 60'000;  ///< for jobs that give none; 0: no limit
  std::int64_t max_timeout_ms = 3'600'000;
  std::int64_t drain_timeout_ms = 10'000;
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
  std::size_t memory_limit_mb = 0;  ///< sanitizers reserve terabytes of address space
#else
  std::size_t memory_limit_mb = 2048;  ///< per worker (address space); 0: none
#endif
  std::int64_t max_attempts = 3;
  std::int64_t retain_ended_s = 7 * 24 * 3600;  ///< ended jobs are deleted after this long
  std::int64_t prefetch = 0;  ///< jobs claimed ahead of free workers; -1: as many as workers
  std::int64_t heartbeat_ms = 5'000;    ///< how often an instance proves it is alive
  std::int64_t dead_after_ms = 30'000;  ///< an instance silent this long is dead; its jobs rescued
  std::int64_t poll_ms = 5'000;         ///< queue poll while notifications work
  std::int64_t poll_without_notify_ms = 500;  ///< queue poll while they do not (or are off)
  bool notify = true;  ///< PostgreSQL LISTEN/NOTIFY as a hint (polling stays the truth)
  int webhook_attempts = 6;
  std::int64_t webhook_backoff_ms = 200;
  std::string webhook_secret_file;  ///< empty: webhooks are sent unsigned (said at start-up)
  std::string webhook_ca_file;      ///< a CA to trust for https:// notify URLs, beside the system's
  bool webhook_allow_private = false;               ///< webhooks may go to any address
  std::vector<std::string> webhook_allow_networks;  ///< CIDRs webhooks may go to although private
  bool demo = false;
  std::string dashboard_dir;  ///< empty: the dashboard compiled in
  // The front door (auth.hpp, rate_limit.hpp).
  bool require_tokens = false;          ///< every endpoint but /healthz and the page needs a token
  bool open_metrics = false;            ///< /metrics without a token even when tokens are required
  std::int64_t token_cache_ms = 5'000;  ///< how long a looked-up token is trusted; 0: not cached
  bool sandbox = false;                 ///< tasks run in procpool::sandbox::compute_only()
  bool insecure = false;       ///< allow a non-loopback address without TLS and required tokens
  std::string rate_limit;      ///< e.g. "20/s"; empty: no limit
  std::size_t rate_burst = 0;  ///< 0: as many as the rate's number
  std::string tls_cert;        ///< PEM certificate chain; with tls_key, the API speaks only TLS
  std::string tls_key;         ///< PEM private key (unencrypted)
};

/// Whether `address` is a loopback address (127.0.0.0/8 or ::1); false if it is not an address.
[[nodiscard]] auto is_loopback(const std::string& address) -> bool;

/// Parses `--name value` / `--name=value` flags over PROCPOOL_SERVICE_NAME variables. On
/// `--help` prints the usage and returns nullopt; on a bad flag or value prints why and throws
/// std::invalid_argument.
auto parse_config(int argc, char** argv) -> std::optional<config>;

}  // namespace service
