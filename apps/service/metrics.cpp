#include "metrics.hpp"

#include <cstdio>

#include "job.hpp"

namespace service {

histogram::histogram()
    : bounds_{0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60},
      counts_(bounds_.size(), 0) {}

void histogram::observe(double seconds) {
  for (std::size_t i = 0; i < bounds_.size(); ++i) {
    if (seconds <= bounds_[i]) ++counts_[i];
  }
  sum_ += seconds;
  ++count_;
}

namespace {
auto number(double v) -> std::string {
  char text[64];
  std::snprintf(text, sizeof text, "%.6g", v);
  return text;
}
void line(std::string& out, const std::string& name, const std::string& help,
          const std::string& type) {
  out += "# HELP " + name + " " + help + "\n# TYPE " + name + " " + type + "\n";
}
void counter(std::string& out, const std::string& name, const std::string& help, std::uint64_t v) {
  line(out, name, help, "counter");
  out += name + " " + std::to_string(v) + "\n";
}
void gauge(std::string& out, const std::string& name, const std::string& help, std::uint64_t v) {
  line(out, name, help, "gauge");
  out += name + " " + std::to_string(v) + "\n";
}
}  // namespace

void histogram::render(std::string& out, const std::string& name, const std::string& help) const {
  line(out, name, help, "histogram");
  for (std::size_t i = 0; i < bounds_.size(); ++i) {
    out += name + "_bucket{le=\"" + number(bounds_[i]) + "\"} " + std::to_string(counts_[i]) + "\n";
  }
  out += name + "_bucket{le=\"+Inf\"} " + std::to_string(count_) + "\n";
  out += name + "_sum " + number(sum_) + "\n";
  out += name + "_count " + std::to_string(count_) + "\n";
}

auto render_metrics(const service_metrics& m, const procpool::pool_stats& pool,
                    const std::array<std::int64_t, 6>& jobs, std::size_t event_clients)
    -> std::string {
  std::string out;
  line(out, "service_jobs", "Jobs in the database, by state.", "gauge");
  for (std::size_t i = 0; i < jobs.size(); ++i) {
    out += "service_jobs{state=\"" + std::string(to_string(static_cast<job_state>(i))) + "\"} " +
           std::to_string(jobs[i]) + "\n";
  }
  counter(out, "service_jobs_accepted_total", "Jobs accepted (202) since start.", m.accepted);
  counter(out, "service_jobs_rejected_total", "Jobs refused with 429 (queue full) since start.",
          m.rejected_queue_full);
  counter(out, "service_http_requests_total", "HTTP requests answered since start.",
          m.http_requests);
  counter(out, "service_http_bad_requests_total", "Requests answered with a 4xx since start.",
          m.bad_requests);
  counter(out, "service_webhooks_delivered_total", "Webhooks answered with a 2xx.",
          m.webhook_delivered);
  counter(out, "service_webhook_retries_total", "Webhook attempts that failed and were retried.",
          m.webhook_retries);
  counter(out, "service_webhooks_failed_total", "Webhooks given up after every attempt.",
          m.webhook_failed);
  counter(out, "service_webhooks_refused_total",
          "Webhooks failed at once, without retries: the address policy refused every address "
          "(also counted as failed).",
          m.webhook_refused);
  counter(out, "service_database_errors_total", "Database operations that failed.",
          m.database_errors);
  counter(out, "service_jobs_deleted_total", "Ended jobs deleted after the retention period.",
          m.jobs_deleted);
  counter(out, "service_jobs_claimed_total", "Jobs this instance claimed from the queue.",
          m.jobs_claimed);
  counter(out, "service_completions_fenced_total",
          "Job ends dropped because another instance had taken the job over.",
          m.completions_fenced);
  counter(out, "service_jobs_rescued_total",
          "Running jobs of dead instances this instance put back in the queue or failed.",
          m.jobs_rescued);
  counter(out, "service_instances_declared_dead_total",
          "Instances this instance found dead (heartbeat too old).", m.instances_declared_dead);
  counter(out, "service_heartbeat_failures_total", "Heartbeats that could not be written.",
          m.heartbeat_failures);
  gauge(out, "service_notify_listening", "1 while LISTEN/NOTIFY reaches this instance.",
        m.notify_listening);
  gauge(out, "service_event_clients", "Open /events streams.", event_clients);
  m.queue_seconds.render(out, "service_job_queue_seconds", "Time from acceptance to a worker.");
  m.run_seconds.render(out, "service_job_run_seconds",
                       "Time from a worker taking a job to its end.");
  m.total_seconds.render(out, "service_job_total_seconds",
                         "Time from acceptance to the job's end.");
  gauge(out, "procpool_workers", "Live worker processes.", pool.workers);
  gauge(out, "procpool_workers_busy", "Workers running a task.", pool.busy);
  gauge(out, "procpool_tasks_queued", "Tasks waiting for a worker.", pool.queued);
  counter(out, "procpool_tasks_completed_total", "Tasks that returned a value.", pool.completed);
  counter(out, "procpool_tasks_failed_total", "Tasks that threw.", pool.failed);
  counter(out, "procpool_tasks_crashed_total", "Tasks whose worker died.", pool.crashed);
  counter(out, "procpool_tasks_cancelled_total", "Tasks cancelled.", pool.cancelled);
  counter(out, "procpool_tasks_timed_out_total", "Tasks killed by their timeout.", pool.timed_out);
  counter(out, "procpool_workers_respawned_total", "Replacement workers started.", pool.respawned);
  counter(out, "procpool_workers_recycled_total", "Workers retired by a limit.", pool.recycled);
  return out;
}

}  // namespace service
