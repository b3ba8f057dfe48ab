// procpool-service - counters and latency histograms, rendered as Prometheus text for /metrics.
#pragma once

#include <array>
#include <cstdint>
#include <procpool/pool_stats.hpp>
#include <string>
#include <vector>

namespace service {

/// A Prometheus histogram with fixed bucket bounds in seconds.
class histogram {
 public:
  histogram();
  void observe(double seconds);
  void render(std::string& out, const std::string& name, const std::string& help) const;

 private:
  std::vector<double> bounds_;
  std::vector<std::uint64_t> counts_;
  double sum_ = 0;
  std::uint64_t count_ = 0;
};

/// The service's own counters. Updated on the event loop thread only.
struct service_metrics {
  histogram queue_seconds;  ///< accepted -> a worker took it
  histogram run_seconds;    ///< a worker took it -> final state
  histogram total_seconds;  ///< accepted -> final state
  std::uint64_t accepted = 0;
  std::uint64_t rejected_queue_full = 0;
  std::uint64_t bad_requests = 0;
  std::uint64_t http_requests = 0;
  std::uint64_t webhook_delivered = 0;
  std::uint64_t webhook_retries = 0;
  std::uint64_t webhook_failed = 0;
  std::uint64_t webhook_refused = 0;  ///< failed at once: no address the policy allows
  std::uint64_t database_errors = 0;
  std::uint64_t jobs_deleted = 0;        ///< by retention
  std::uint64_t jobs_claimed = 0;        ///< by this instance
  std::uint64_t completions_fenced = 0;  ///< job ends dropped: another instance took the job
  std::uint64_t jobs_rescued = 0;        ///< running jobs of dead instances put back (or failed)
  std::uint64_t instances_declared_dead = 0;  ///< by this instance's rescues
  std::uint64_t heartbeat_failures = 0;
  std::uint64_t notify_listening = 0;  ///< 1 while LISTEN works (PostgreSQL)
};

/// The /metrics page: `jobs` (by job_state, from the database), the service's counters and
/// histograms, and the pool's stats.
auto render_metrics(const service_metrics& m, const procpool::pool_stats& pool,
                    const std::array<std::int64_t, 6>& jobs, std::size_t event_clients)
    -> std::string;

}  // namespace service
