#include "store.hpp"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <stdexcept>

#include "schema.hpp"

namespace service {

namespace {

constexpr const char* job_columns =
    "id, task, input, timeout_ms, notify_url, state, result, error, attempts, created_ms, "
    "started_ms, finished_ms, notification, priority, owner, retry_of, notification_error";
// The same, for statements that join jobs with another table.
constexpr const char* jobs_columns =
    "jobs.id, jobs.task, jobs.input, jobs.timeout_ms, jobs.notify_url, jobs.state, jobs.result, "
    "jobs.error, jobs.attempts, jobs.created_ms, jobs.started_ms, jobs.finished_ms, "
    "jobs.notification, jobs.priority, jobs.owner, jobs.retry_of, jobs.notification_error";

// Advisory lock keys (PostgreSQL): constants of the service's own.
constexpr std::int64_t write_lock = 0x70726f6370'02;
constexpr std::int64_t rescue_lock = 0x70726f6370'03;

auto random_id() -> std::string {
  unsigned char bytes[16] = {};
  const int fd = ::open("/dev/urandom", O_RDONLY | O_CLOEXEC);
  if (fd < 0 || ::read(fd, bytes, sizeof bytes) != static_cast<ssize_t>(sizeof bytes)) {
    if (fd >= 0) ::close(fd);
    throw std::runtime_error("cannot read /dev/urandom");
  }
  ::close(fd);
  std::string hex;
  for (unsigned char b : bytes) {
    constexpr const char* digits = "0123456789abcdef";
    hex += digits[b >> 4];
    hex += digits[b & 15];
  }
  return hex;
}

auto job_from_row(const sql_result& r, std::size_t row, std::size_t first = 0) -> job {
  job j;
  auto text = [&](std::size_t c) { return r.text(row, first + c); };
  auto integer = [&](std::size_t c) { return r.integer(row, first + c); };
  j.id = integer(0);
  j.task = text(1);
  j.input = text(2);
  j.timeout_ms = integer(3);
  j.notify_url = text(4);
  j.state = parse_job_state(text(5)).value_or(job_state::failed);
  j.result = text(6);
  j.error = text(7);
  j.attempts = integer(8);
  j.created_ms = integer(9);
  j.started_ms = integer(10);
  j.finished_ms = integer(11);
  j.notification = parse_notification_state(text(12));
  j.priority = integer(13);
  j.owner = text(14);
  j.retry_of = integer(15);
  j.notification_error = text(16);
  return j;
}

// An owner as a parameter: NULL when there is none (jobs stored before owners were recorded).
auto owner_param(const std::string& owner) -> sql_param {
  return owner.empty() ? sql_param(nullptr) : sql_param(std::string_view(owner));
}

constexpr const char* interrupted_error =
    R"({"type":"interrupted","message":"the instance running this job stopped or lost the database )"
    R"(while it ran, too many times; not retried again"})";

}  // namespace

store::store(std::unique_ptr<sql_connection> connection, bool notify)
    : db_(std::move(connection)), notify_(notify && db_->dialect() == sql_dialect::postgres) {
  migrate(*db_);
  if (!pg()) sqlite_synchronous_ = db_->exec("PRAGMA synchronous", {}).text(0, 0);
  db_->exec("INSERT INTO meta (key, value) VALUES ('service_id', $1) ON CONFLICT (key) DO NOTHING",
            {std::string_view(random_id())});
  service_id_ = db_->exec("SELECT value FROM meta WHERE key = 'service_id'", {}).text(0, 0);
}

// The database's clock, for heartbeats: instances on different machines compare against one
// clock, so their own clocks may disagree.
static auto now_sql(sql_dialect d) -> std::string {
  return d == sql_dialect::postgres
             ? "(extract(epoch from clock_timestamp()) * 1000)::bigint"
             : "CAST((julianday('now') - 2440587.5) * 86400000.0 AS INTEGER)";
}

void store::begin_batch(bool writes, bool durable) {
  notifications_.clear();
  events_in_batch_ = false;
  if (pg()) {
    db_->exec("BEGIN");
    try {
      if (writes) db_->exec("SELECT pg_advisory_xact_lock($1)", {write_lock});
      if (!durable) db_->exec("SET LOCAL synchronous_commit = off");
    } catch (...) {
      rollback_batch();
      throw;
    }
  } else {
    if (!durable && sqlite_synchronous_ != "1") {
      db_->exec("PRAGMA synchronous=NORMAL");
      relaxed_ = true;
    }
    try {
      db_->exec(writes ? "BEGIN IMMEDIATE" : "BEGIN");
    } catch (...) {
      restore_synchronous();
      throw;
    }
  }
}

void store::restore_synchronous() {
  if (!relaxed_) return;
  relaxed_ = false;
  try {
    db_->exec("PRAGMA synchronous=" + sqlite_synchronous_);
  } catch (...) {
    // Stays relaxed until the next batch that needs it restores it; nothing is lost meanwhile.
    relaxed_ = true;
  }
}

void store::commit_batch() {
  try {
    if (notify_) {
      std::sort(notifications_.begin(), notifications_.end());
      notifications_.erase(std::unique(notifications_.begin(), notifications_.end()),
                           notifications_.end());
      for (const auto& [channel, payload] : notifications_) {
        db_->exec("SELECT pg_notify($1, $2)",
                  {std::string_view(channel), std::string_view(payload)});
      }
    }
    db_->exec("COMMIT");
  } catch (...) {
    rollback_batch();
    throw;
  }
  restore_synchronous();
  events_committed_ = events_committed_ || events_in_batch_;
}

void store::rollback_batch() {
  try {
    db_->exec("ROLLBACK");
  } catch (...) {
    // Nothing to roll back, or the connection is gone (and the transaction with it).
  }
  restore_synchronous();
}

void store::begin_operation() {
  db_->exec("SAVEPOINT operation");
}

void store::end_operation(bool succeeded) {
  try {
    if (!succeeded) db_->exec("ROLLBACK TO SAVEPOINT operation");
    db_->exec("RELEASE SAVEPOINT operation");
  } catch (...) {
    // The connection is gone: the commit fails, and the whole batch with it.
  }
}

auto store::take_events_appended() -> bool {
  return std::exchange(events_committed_, false);
}

void store::notify(std::string channel, std::string payload) {
  if (notify_) notifications_.emplace_back(std::move(channel), std::move(payload));
}

auto store::append_event(const job& after, std::int64_t at_ms) -> std::int64_t {
  const auto r = db_->exec(
      "INSERT INTO job_events (job_id, state, at_ms, attempts, started_ms, finished_ms, "
      "notification, owner) VALUES ($1, $2, $3, $4, $5, $6, $7, $8) RETURNING seq",
      {after.id, to_string(after.state), at_ms, after.attempts, after.started_ms, after.finished_ms,
       to_string(after.notification), owner_param(after.owner)});
  events_in_batch_ = true;
  notify("procpool_events", "");
  return r.integer(0, 0);
}

auto store::change_one(std::string_view sql, std::initializer_list<sql_param> params)
    -> std::optional<job_change> {
  const auto r = db_->exec(sql, params);
  if (r.empty()) return std::nullopt;
  job after = job_from_row(r, 0);
  const std::int64_t seq =
      append_event(after, after.finished_ms != 0 ? after.finished_ms : now_ms());
  return job_change{seq, std::move(after)};
}

// --- instances ---

void store::join(const instance_info& me) {
  db_->exec(
      "INSERT INTO instances (id, host, pid, address, workers, tasks, started_ms, "
      "heartbeat_ms) VALUES ($1, $2, $3, $4, $5, $6, $7, " +
          now_sql(dialect()) +
          ") ON CONFLICT (id) DO UPDATE SET heartbeat_ms = excluded.heartbeat_ms, "
          "address = excluded.address, workers = excluded.workers, tasks = excluded.tasks",
      {std::string_view(me.id), std::string_view(me.host), me.pid, std::string_view(me.address),
       me.workers, std::string_view(me.tasks), me.started_ms});
}

auto store::heartbeat(const std::string& id) -> bool {
  return db_->exec("UPDATE instances SET heartbeat_ms = " + now_sql(dialect()) + " WHERE id = $1",
                   {std::string_view(id)})
             .affected == 1;
}

void store::leave(const std::string& id) {
  db_->exec("DELETE FROM instances WHERE id = $1", {std::string_view(id)});
}

auto store::instances() -> std::vector<instance_info> {
  const auto r =
      db_->exec("SELECT i.id, i.host, i.pid, i.address, i.workers, i.tasks, i.started_ms, " +
                    now_sql(dialect()) +
                    " - i.heartbeat_ms, (SELECT count(*) FROM jobs WHERE jobs.owner = i.id AND "
                    "jobs.state = 'running') FROM instances i ORDER BY i.started_ms, i.id",
                {});
  std::vector<instance_info> out;
  for (std::size_t i = 0; i < r.size(); ++i) {
    out.push_back({r.text(i, 0), r.text(i, 1), r.integer(i, 2), r.text(i, 3), r.integer(i, 4),
                   r.text(i, 5), r.integer(i, 6), r.integer(i, 7), r.integer(i, 8)});
  }
  return out;
}

auto store::rescue(const std::string& me, std::int64_t dead_after_ms, std::int64_t max_attempts)
    -> rescue_report {
  rescue_report report;
  // Leaderless: whoever gets the lock rescues; the others skip this round.
  if (pg() && db_->exec("SELECT pg_try_advisory_xact_lock($1)", {rescue_lock}).text(0, 0) != "t") {
    return report;
  }
  report.dead_instances =
      db_->exec("DELETE FROM instances WHERE id <> $1 AND ($2 < 0 OR heartbeat_ms < " +
                    now_sql(dialect()) + " - $2)",
                {std::string_view(me), dead_after_ms})
          .affected;
  // cancel_requested first, so that adding a job column cannot shift it.
  const auto orphans = db_->exec(std::string("SELECT cancel_requested, ") + job_columns +
                                     " FROM jobs WHERE state = 'running' AND (owner IS NULL OR "
                                     "owner NOT IN (SELECT id FROM instances)) ORDER BY id",
                                 {});
  for (std::size_t i = 0; i < orphans.size(); ++i) {
    const job j = job_from_row(orphans, i, 1);
    std::optional<job_change> c;
    if (orphans.integer(i, 0) != 0) {
      // Its cancel was asked for while it ran: it ends cancelled rather than running again.
      c = finish(j, job_state::cancelled, "",
                 R"({"type":"cancelled","message":"cancelled by a DELETE request; the instance )"
                 R"(running it stopped before it could kill it"})");
      if (c) ++report.failed;
    } else if (j.attempts >= max_attempts) {
      c = finish(j, job_state::failed, "", interrupted_error);
      if (c) ++report.failed;
    } else {
      c = requeue(j);
      if (c) ++report.requeued;
    }
  }
  const auto webhooks = db_->exec(
      std::string("UPDATE jobs SET owner = $1 WHERE notification = 'pending' AND state NOT IN "
                  "('queued', 'running') AND (owner IS NULL OR owner NOT IN (SELECT id FROM "
                  "instances)) RETURNING ") +
          job_columns,
      {std::string_view(me)});
  for (std::size_t i = 0; i < webhooks.size(); ++i) {
    report.webhooks.push_back(job_from_row(webhooks, i));
  }
  std::sort(report.webhooks.begin(), report.webhooks.end(),
            [](const job& a, const job& b) { return a.id < b.id; });
  return report;
}

// --- jobs ---

auto store::insert(job j, const admission_limits& limits) -> std::optional<job_change> {
  const auto active = db_->exec(
      "SELECT count(*), coalesce(sum(input_bytes), 0) FROM jobs WHERE state IN ('queued', "
      "'running')",
      {});
  if (active.integer(0, 0) >= limits.max_active_jobs ||
      active.integer(0, 1) + static_cast<std::int64_t>(j.input.size()) >
          limits.max_active_input_bytes) {
    return std::nullopt;
  }
  j.created_ms = now_ms();
  j.state = job_state::queued;
  j.notification = j.notify_url.empty() ? notification_state::none : notification_state::pending;
  const auto r = db_->exec(
      "INSERT INTO jobs (task, input, input_bytes, timeout_ms, notify_url, state, created_ms, "
      "notification, priority, retry_of) VALUES ($1, $2, $3, $4, $5, 'queued', $6, $7, $8, $9) "
      "RETURNING id",
      {std::string_view(j.task), std::string_view(j.input),
       static_cast<std::int64_t>(j.input.size()), j.timeout_ms, std::string_view(j.notify_url),
       j.created_ms, to_string(j.notification), j.priority, j.retry_of});
  j.id = r.integer(0, 0);
  const std::int64_t seq = append_event(j, j.created_ms);
  notify("procpool_jobs", j.task);
  return job_change{seq, std::move(j)};
}

auto store::claim(const std::string& me, const std::vector<std::string>& tasks, std::int64_t n)
    -> std::vector<job_change> {
  std::string task_list;
  for (const auto& t : tasks) task_list += (task_list.empty() ? "" : ",") + t;
  const std::int64_t at = now_ms();
  // The candidate rows are locked and skipped by concurrent claimers (PostgreSQL); the CTE is
  // MATERIALIZED so the planner cannot fold it into the UPDATE and lock more than n rows.
  const auto r =
      pg() ? db_->exec(std::string("WITH c AS MATERIALIZED (SELECT id FROM jobs WHERE state = "
                                   "'queued' AND task = ANY(string_to_array($1, ',')) AND EXISTS "
                                   "(SELECT 1 FROM instances WHERE id = $3) ORDER BY priority "
                                   "DESC, id LIMIT $2 FOR UPDATE SKIP LOCKED) "
                                   "UPDATE jobs SET state = 'running', owner = $3, attempts = "
                                   "jobs.attempts + 1, started_ms = $4 FROM c WHERE jobs.id = "
                                   "c.id RETURNING ") +
                           jobs_columns,
                       {std::string_view(task_list), n, std::string_view(me), at})
           : db_->exec(std::string("UPDATE jobs SET state = 'running', owner = $3, attempts = "
                                   "attempts + 1, started_ms = $4 WHERE id IN (SELECT id FROM "
                                   "jobs WHERE state = 'queued' AND instr(',' || $1 || ',', ',' "
                                   "|| task || ',') > 0 AND EXISTS (SELECT 1 FROM instances "
                                   "WHERE id = $3) ORDER BY priority DESC, id LIMIT $2) "
                                   "RETURNING ") +
                           job_columns,
                       {std::string_view(task_list), n, std::string_view(me), at});
  std::vector<job> claimed;
  for (std::size_t i = 0; i < r.size(); ++i) claimed.push_back(job_from_row(r, i));
  std::sort(claimed.begin(), claimed.end(), [](const job& a, const job& b) {
    return a.priority != b.priority ? a.priority > b.priority : a.id < b.id;
  });
  std::vector<job_change> out;
  for (auto& j : claimed) {
    const std::int64_t seq = append_event(j, at);
    out.push_back({seq, std::move(j)});
  }
  return out;
}

auto store::finish(const job& running, job_state state, const std::string& result,
                   const std::string& error) -> std::optional<job_change> {
  return change_one(
      std::string(
          "UPDATE jobs SET state = $1, result = $2, error = $3, finished_ms = $4 WHERE "
          "id = $5 AND owner IS NOT DISTINCT FROM $6 AND attempts = $7 AND state = 'running' "
          "RETURNING ") +
          job_columns,
      {to_string(state), std::string_view(result), std::string_view(error), now_ms(), running.id,
       owner_param(running.owner), running.attempts});
}

auto store::requeue(const job& running, bool never_started) -> std::optional<job_change> {
  auto c = change_one(std::string("UPDATE jobs SET state = 'queued', attempts = attempts - $4 "
                                  "WHERE id = $1 AND owner IS NOT DISTINCT FROM $2 AND attempts = "
                                  "$3 AND state = 'running' RETURNING ") +
                          job_columns,
                      {running.id, owner_param(running.owner), running.attempts,
                       std::int64_t{never_started ? 1 : 0}});
  if (c) notify("procpool_jobs", c->after.task);
  return c;
}

auto store::cancel_queued(std::int64_t id, const std::string& me) -> std::optional<job_change> {
  return change_one(
      std::string("UPDATE jobs SET state = 'cancelled', error = $1, finished_ms = $2, owner = $3 "
                  "WHERE id = $4 AND state = 'queued' RETURNING ") +
          job_columns,
      {R"({"type":"cancelled","message":"cancelled by a DELETE request before it ran"})", now_ms(),
       std::string_view(me), id});
}

auto store::request_cancel(std::int64_t id) -> std::optional<std::string> {
  const auto r = db_->exec(
      "UPDATE jobs SET cancel_requested = 1 WHERE id = $1 AND state = 'running' RETURNING owner",
      {id});
  if (r.empty()) return std::nullopt;
  notify("procpool_control", r.text(0, 0) + " " + std::to_string(id));
  return r.text(0, 0);
}

auto store::cancel_requests(const std::string& me) -> std::vector<std::int64_t> {
  const auto r = db_->exec(
      "SELECT id FROM jobs WHERE owner = $1 AND state = 'running' AND cancel_requested = 1",
      {std::string_view(me)});
  std::vector<std::int64_t> ids;
  for (std::size_t i = 0; i < r.size(); ++i) ids.push_back(r.integer(i, 0));
  return ids;
}

auto store::running_jobs(const std::string& me) -> std::vector<job> {
  const auto r = db_->exec(
      std::string("SELECT ") + job_columns + " FROM jobs WHERE owner = $1 AND state = 'running'",
      {std::string_view(me)});
  std::vector<job> out;
  for (std::size_t i = 0; i < r.size(); ++i) out.push_back(job_from_row(r, i));
  return out;
}

void store::set_notification(std::int64_t id, notification_state state, const std::string& error) {
  db_->exec("UPDATE jobs SET notification = $1, notification_error = $2 WHERE id = $3",
            {to_string(state), std::string_view(error), id});
}

auto store::get(std::int64_t id) -> std::optional<job> {
  const auto r = db_->exec(std::string("SELECT ") + job_columns + " FROM jobs WHERE id = $1", {id});
  if (r.empty()) return std::nullopt;
  return job_from_row(r, 0);
}

auto store::list(std::optional<job_state> state, const std::string& task, std::int64_t limit,
                 std::int64_t before_id) -> std::vector<job> {
  const std::int64_t before = before_id > 0 ? before_id : INT64_MAX;
  // Only the filters given, so that a state filter can use the (state, id) index.
  std::string sql = std::string("SELECT ") + job_columns + " FROM jobs WHERE id < $1";
  std::vector<sql_param> params{before};
  if (state) {
    params.emplace_back(to_string(*state));
    sql += " AND state = $" + std::to_string(params.size());
  }
  if (!task.empty()) {
    params.emplace_back(std::string_view(task));
    sql += " AND task = $" + std::to_string(params.size());
  }
  params.emplace_back(limit);
  sql += " ORDER BY id DESC LIMIT $" + std::to_string(params.size());
  const auto r = db_->exec(sql, params);
  std::vector<job> out;
  for (std::size_t i = 0; i < r.size(); ++i) out.push_back(job_from_row(r, i));
  return out;
}

auto store::changes_after(std::int64_t seq, std::int64_t limit) -> std::vector<job_change> {
  // The job's fixed fields from jobs, its changing ones from the change log row; the result and
  // error are set once, by the final change.
  const auto r = db_->exec(
      "SELECT e.seq, e.job_id, jobs.task, jobs.input, jobs.timeout_ms, jobs.notify_url, e.state, "
      "jobs.result, jobs.error, e.attempts, jobs.created_ms, e.started_ms, e.finished_ms, "
      "e.notification, jobs.priority, e.owner, jobs.retry_of, jobs.notification_error FROM "
      "job_events e JOIN jobs ON "
      "jobs.id = e.job_id "
      "WHERE e.seq > $1 ORDER BY e.seq LIMIT $2",
      {seq, limit});
  std::vector<job_change> out;
  for (std::size_t i = 0; i < r.size(); ++i) {
    job j = job_from_row(r, i, 1);
    if (!is_final(j.state)) j.result.clear(), j.error.clear();
    out.push_back({r.integer(i, 0), std::move(j)});
  }
  return out;
}

auto store::last_seq() -> std::int64_t {
  return db_->exec("SELECT coalesce(max(seq), 0) FROM job_events", {}).integer(0, 0);
}

auto store::delete_ended_before(std::int64_t cutoff_ms, std::int64_t batch) -> std::int64_t {
  constexpr const char* ended =
      "SELECT id FROM jobs WHERE finished_ms > 0 AND finished_ms < $1 AND notification <> "
      "'pending' AND state NOT IN ('queued', 'running') ORDER BY finished_ms, id LIMIT $2";
  db_->exec(std::string("DELETE FROM job_events WHERE job_id IN (") + ended + ")",
            {cutoff_ms, batch});
  const std::int64_t deleted =
      db_->exec(std::string("DELETE FROM jobs WHERE id IN (") + ended + ")", {cutoff_ms, batch})
          .affected;
  return deleted;
}

auto store::count_by_state() -> std::array<std::int64_t, 6> {
  std::array<std::int64_t, 6> counts{};
  const auto r = db_->exec("SELECT state, count(*) FROM jobs GROUP BY state", {});
  for (std::size_t i = 0; i < r.size(); ++i) {
    if (auto s = parse_job_state(r.text(i, 0))) {
      counts.at(static_cast<std::size_t>(*s)) = r.integer(i, 1);
    }
  }
  return counts;
}

}  // namespace service
