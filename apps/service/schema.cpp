#include "schema.hpp"

#include <string>
#include <vector>

#include "job.hpp"

namespace service {

namespace {

struct migration {
  std::int64_t version;
  const char* sqlite;
  const char* postgres;
};

// Append only: a released migration never changes. Version 1 is the schema of the first
// single-instance service (its statements are idempotent, so a database made before versions
// were recorded is adopted as version 1).
const std::vector<migration>& migrations() {
  static const std::vector<migration> all = {
      {1,
       "CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);"
       "CREATE TABLE IF NOT EXISTS jobs ("
       "  id INTEGER PRIMARY KEY AUTOINCREMENT, task TEXT NOT NULL, input TEXT NOT NULL,"
       "  timeout_ms INTEGER NOT NULL, notify_url TEXT NOT NULL, state TEXT NOT NULL,"
       "  result TEXT NOT NULL DEFAULT '', error TEXT NOT NULL DEFAULT '',"
       "  attempts INTEGER NOT NULL DEFAULT 0, created_ms INTEGER NOT NULL,"
       "  started_ms INTEGER NOT NULL DEFAULT 0, finished_ms INTEGER NOT NULL DEFAULT 0,"
       "  notification TEXT NOT NULL);"
       "CREATE INDEX IF NOT EXISTS jobs_by_state ON jobs (state, id);"
       "CREATE TABLE IF NOT EXISTS job_events ("
       "  seq INTEGER PRIMARY KEY AUTOINCREMENT, job_id INTEGER NOT NULL, state TEXT NOT NULL,"
       "  at_ms INTEGER NOT NULL);"
       "CREATE INDEX IF NOT EXISTS jobs_by_end ON jobs (finished_ms) WHERE finished_ms > 0;"
       "CREATE INDEX IF NOT EXISTS job_events_by_job ON job_events (job_id);",
       "CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);"
       "CREATE TABLE jobs ("
       "  id BIGSERIAL PRIMARY KEY, task TEXT NOT NULL, input TEXT NOT NULL,"
       "  timeout_ms BIGINT NOT NULL, notify_url TEXT NOT NULL, state TEXT NOT NULL,"
       "  result TEXT NOT NULL DEFAULT '', error TEXT NOT NULL DEFAULT '',"
       "  attempts BIGINT NOT NULL DEFAULT 0, created_ms BIGINT NOT NULL,"
       "  started_ms BIGINT NOT NULL DEFAULT 0, finished_ms BIGINT NOT NULL DEFAULT 0,"
       "  notification TEXT NOT NULL);"
       "CREATE INDEX jobs_by_state ON jobs (state, id);"
       "CREATE TABLE job_events ("
       "  seq BIGSERIAL PRIMARY KEY, job_id BIGINT NOT NULL, state TEXT NOT NULL,"
       "  at_ms BIGINT NOT NULL);"
       "CREATE INDEX jobs_by_end ON jobs (finished_ms) WHERE finished_ms > 0;"
       "CREATE INDEX job_events_by_job ON job_events (job_id);"},
      // Many instances, one queue: jobs are claimed by an instance (owner) and fenced by
      // (owner, attempts); each change log row keeps the job's changing fields as they were, so
      // /events shows every change, also those made by other instances.
      {2,
       "ALTER TABLE jobs ADD COLUMN priority INTEGER NOT NULL DEFAULT 0;"
       "ALTER TABLE jobs ADD COLUMN owner TEXT;"
       "ALTER TABLE jobs ADD COLUMN cancel_requested INTEGER NOT NULL DEFAULT 0;"
       "ALTER TABLE jobs ADD COLUMN input_bytes INTEGER NOT NULL DEFAULT 0;"
       "UPDATE jobs SET input_bytes = length(CAST(input AS BLOB));"
       "ALTER TABLE job_events ADD COLUMN attempts INTEGER NOT NULL DEFAULT 0;"
       "ALTER TABLE job_events ADD COLUMN started_ms INTEGER NOT NULL DEFAULT 0;"
       "ALTER TABLE job_events ADD COLUMN finished_ms INTEGER NOT NULL DEFAULT 0;"
       "ALTER TABLE job_events ADD COLUMN notification TEXT NOT NULL DEFAULT 'none';"
       "ALTER TABLE job_events ADD COLUMN owner TEXT;"
       "CREATE INDEX jobs_runnable ON jobs (priority DESC, id) WHERE state = 'queued';"
       "CREATE INDEX jobs_active ON jobs (state, input_bytes) WHERE state IN ('queued', 'running');"
       "CREATE INDEX jobs_by_owner ON jobs (owner) WHERE state = 'running' OR notification = "
       "'pending';"
       "CREATE TABLE instances (id TEXT PRIMARY KEY, host TEXT NOT NULL, pid INTEGER NOT NULL,"
       "  address TEXT NOT NULL, workers INTEGER NOT NULL, tasks TEXT NOT NULL,"
       "  started_ms INTEGER NOT NULL, heartbeat_ms INTEGER NOT NULL);",
       "ALTER TABLE jobs ADD COLUMN priority INTEGER NOT NULL DEFAULT 0;"
       "ALTER TABLE jobs ADD COLUMN owner TEXT;"
       "ALTER TABLE jobs ADD COLUMN cancel_requested INTEGER NOT NULL DEFAULT 0;"
       "ALTER TABLE jobs ADD COLUMN input_bytes BIGINT NOT NULL DEFAULT 0;"
       "UPDATE jobs SET input_bytes = octet_length(input);"
       "ALTER TABLE job_events ADD COLUMN attempts BIGINT NOT NULL DEFAULT 0;"
       "ALTER TABLE job_events ADD COLUMN started_ms BIGINT NOT NULL DEFAULT 0;"
       "ALTER TABLE job_events ADD COLUMN finished_ms BIGINT NOT NULL DEFAULT 0;"
       "ALTER TABLE job_events ADD COLUMN notification TEXT NOT NULL DEFAULT 'none';"
       "ALTER TABLE job_events ADD COLUMN owner TEXT;"
       "CREATE INDEX jobs_runnable ON jobs (priority DESC, id) WHERE state = 'queued';"
       "CREATE INDEX jobs_active ON jobs (state, input_bytes) WHERE state IN ('queued', 'running');"
       "CREATE INDEX jobs_by_owner ON jobs (owner) WHERE state = 'running' OR notification = "
       "'pending';"
       "CREATE TABLE instances (id TEXT PRIMARY KEY, host TEXT NOT NULL, pid BIGINT NOT NULL,"
       "  address TEXT NOT NULL, workers BIGINT NOT NULL, tasks TEXT NOT NULL,"
       "  started_ms BIGINT NOT NULL, heartbeat_ms BIGINT NOT NULL);"
       // Every change updates a job row: dead tuples pile up fast, so vacuum this table early.
       "ALTER TABLE jobs SET (autovacuum_vacuum_scale_factor = 0.0,"
       "  autovacuum_vacuum_threshold = 1000, autovacuum_analyze_scale_factor = 0.05);"},
      // POST /jobs/{id}/retry: a new job linked to the one it retries.
      {3, "ALTER TABLE jobs ADD COLUMN retry_of INTEGER NOT NULL DEFAULT 0;",
       "ALTER TABLE jobs ADD COLUMN retry_of BIGINT NOT NULL DEFAULT 0;"},
      // Why a webhook failed (its last attempt's error), beside notification = 'failed'.
      {4, "ALTER TABLE jobs ADD COLUMN notification_error TEXT NOT NULL DEFAULT '';",
       "ALTER TABLE jobs ADD COLUMN notification_error TEXT NOT NULL DEFAULT '';"},
      // API tokens (tokens.hpp): shared by every instance on the database; only the secret's
      // SHA-256 is kept. A revoked token stays listed (revoked_ms > 0) so that logs naming its id
      // can still be explained.
      {5,
       "CREATE TABLE api_tokens (id INTEGER PRIMARY KEY AUTOINCREMENT, name TEXT NOT NULL,"
       "  scope TEXT NOT NULL, hash TEXT NOT NULL, created_ms INTEGER NOT NULL,"
       "  revoked_ms INTEGER NOT NULL DEFAULT 0);",
       "CREATE TABLE api_tokens (id BIGSERIAL PRIMARY KEY, name TEXT NOT NULL,"
       "  scope TEXT NOT NULL, hash TEXT NOT NULL, created_ms BIGINT NOT NULL,"
       "  revoked_ms BIGINT NOT NULL DEFAULT 0);"},
  };
  return all;
}

// Any constant of the service's own; distinct from the other advisory locks it takes.
constexpr std::int64_t migration_lock = 0x70726f6370'01;

}  // namespace

auto schema_version() -> std::int64_t {
  return migrations().back().version;
}

auto migrate(sql_connection& db) -> migration_report {
  const bool pg = db.dialect() == sql_dialect::postgres;
  migration_report report;
  db.exec(pg ? "BEGIN" : "BEGIN IMMEDIATE");
  try {
    if (pg) db.exec("SELECT pg_advisory_xact_lock($1)", {migration_lock});
    db.exec(
        "CREATE TABLE IF NOT EXISTS schema_migrations (version BIGINT PRIMARY KEY,"
        " applied_ms BIGINT NOT NULL)");
    const auto current = db.exec("SELECT coalesce(max(version), 0) FROM schema_migrations", {});
    report.from_version = report.to_version = current.integer(0, 0);
    for (const auto& m : migrations()) {
      if (m.version <= report.from_version) continue;
      db.exec(pg ? m.postgres : m.sqlite);
      db.exec("INSERT INTO schema_migrations (version, applied_ms) VALUES ($1, $2)",
              {m.version, now_ms()});
      report.to_version = m.version;
    }
    db.exec("COMMIT");
  } catch (...) {
    try {
      db.exec("ROLLBACK");
    } catch (...) {
      // The connection is gone; the transaction went with it.
    }
    throw;
  }
  return report;
}

}  // namespace service
