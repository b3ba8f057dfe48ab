#include "store.hpp"

#include <fcntl.h>
#include <unistd.h>

#include <stdexcept>

namespace service {

// One prepared statement; finalized when it goes out of scope.
class store::statement {
 public:
  statement(sqlite3* db, const char* sql) : db_(db) {
    if (sqlite3_prepare_v2(db, sql, -1, &st_, nullptr) != SQLITE_OK) fail("prepare");
  }
  ~statement() { sqlite3_finalize(st_); }
  statement(const statement&) = delete;
  auto operator=(const statement&) -> statement& = delete;

  auto bind(int i, std::int64_t v) -> statement& {
    sqlite3_bind_int64(st_, i, v);
    return *this;
  }
  auto bind(int i, const std::string& v) -> statement& {
    sqlite3_bind_text(st_, i, v.data(), static_cast<int>(v.size()), SQLITE_TRANSIENT);
    return *this;
  }
  auto bind(int i, std::string_view v) -> statement& { return bind(i, std::string(v)); }
  /// True while there is a row.
  auto step() -> bool {
    const int rc = sqlite3_step(st_);
    if (rc == SQLITE_ROW) return true;
    if (rc == SQLITE_DONE) return false;
    fail("step");
    return false;
  }
  void run() {
    while (step()) {
    }
  }
  auto integer(int col) -> std::int64_t { return sqlite3_column_int64(st_, col); }
  auto text(int col) -> std::string {
    const auto* p = reinterpret_cast<const char*>(sqlite3_column_text(st_, col));
    return p ? std::string(p, static_cast<std::size_t>(sqlite3_column_bytes(st_, col))) : "";
  }

 private:
  [[noreturn]] void fail(const char* what) {
    throw std::runtime_error(std::string("sqlite ") + what + ": " + sqlite3_errmsg(db_));
  }
  sqlite3* db_;
  sqlite3_stmt* st_ = nullptr;
};

namespace {

constexpr const char* job_columns =
    "id, task, input, timeout_ms, notify_url, state, result, error, attempts, created_ms, "
    "started_ms, finished_ms, notification";

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

// One change, all or nothing: a savepoint, so that it is a transaction of its own or, inside a
// batch (store::begin_batch), a part of the batch's transaction that can fail alone.
class transaction {
 public:
  explicit transaction(sqlite3* db) : db_(db) { exec("SAVEPOINT change"); }
  ~transaction() {
    if (!done_) {
      sqlite3_exec(db_, "ROLLBACK TO change", nullptr, nullptr, nullptr);
      sqlite3_exec(db_, "RELEASE change", nullptr, nullptr, nullptr);
    }
  }
  transaction(const transaction&) = delete;
  auto operator=(const transaction&) -> transaction& = delete;
  void commit() {
    exec("RELEASE change");
    done_ = true;
  }

 private:
  void exec(const char* sql) {
    if (sqlite3_exec(db_, sql, nullptr, nullptr, nullptr) != SQLITE_OK) {
      throw std::runtime_error(std::string("sqlite: ") + sqlite3_errmsg(db_));
    }
  }
  sqlite3* db_;
  bool done_ = false;
};

}  // namespace

store::store(const std::string& path, bool full_sync) {
  if (sqlite3_open_v2(path.c_str(), &db_, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE, nullptr) !=
      SQLITE_OK) {
    std::string msg = db_ ? sqlite3_errmsg(db_) : "out of memory";
    sqlite3_close(db_);
    throw std::runtime_error("cannot open database " + path + ": " + msg);
  }
  sqlite3_busy_timeout(db_, 5000);
  try {
    exec("PRAGMA journal_mode=WAL");
    exec(full_sync ? "PRAGMA synchronous=FULL" : "PRAGMA synchronous=NORMAL");
    exec(
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
        "CREATE INDEX IF NOT EXISTS job_events_by_job ON job_events (job_id);");
    statement read(db_, "SELECT value FROM meta WHERE key = 'service_id'");
    if (read.step()) {
      service_id_ = read.text(0);
    } else {
      service_id_ = random_id();
      statement(db_, "INSERT INTO meta VALUES ('service_id', ?)").bind(1, service_id_).run();
    }
  } catch (...) {
    sqlite3_close(db_);
    throw;
  }
}

store::~store() {
  sqlite3_close(db_);
}

void store::begin_batch() {
  exec("BEGIN IMMEDIATE");
}

void store::commit_batch() {
  try {
    exec("COMMIT");
  } catch (...) {
    sqlite3_exec(db_, "ROLLBACK", nullptr, nullptr, nullptr);
    throw;
  }
}

void store::exec(const char* sql) {
  char* err = nullptr;
  if (sqlite3_exec(db_, sql, nullptr, nullptr, &err) != SQLITE_OK) {
    std::string msg = err ? err : sqlite3_errmsg(db_);
    sqlite3_free(err);
    throw std::runtime_error("sqlite: " + msg);
  }
}

auto store::read_job(std::int64_t id) -> job {
  auto j = get(id);
  if (!j) throw std::runtime_error("job " + std::to_string(id) + " vanished from the database");
  return *j;
}

auto store::append_event(std::int64_t id, job_state state, std::int64_t at) -> std::int64_t {
  statement(db_, "INSERT INTO job_events (job_id, state, at_ms) VALUES (?, ?, ?)")
      .bind(1, id)
      .bind(2, to_string(state))
      .bind(3, at)
      .run();
  return sqlite3_last_insert_rowid(db_);
}

auto store::insert(job j) -> job_change {
  transaction tx(db_);
  j.created_ms = now_ms();
  j.state = job_state::queued;
  j.notification = j.notify_url.empty() ? notification_state::none : notification_state::pending;
  statement ins(db_,
                "INSERT INTO jobs (task, input, timeout_ms, notify_url, state, created_ms, "
                "notification) VALUES (?, ?, ?, ?, 'queued', ?, ?)");
  ins.bind(1, j.task).bind(2, j.input).bind(3, j.timeout_ms).bind(4, j.notify_url);
  ins.bind(5, j.created_ms).bind(6, to_string(j.notification)).run();
  j.id = sqlite3_last_insert_rowid(db_);
  const std::int64_t seq = append_event(j.id, job_state::queued, j.created_ms);
  tx.commit();
  return {seq, std::move(j)};
}

auto store::start(std::int64_t id) -> job_change {
  transaction tx(db_);
  const std::int64_t at = now_ms();
  statement(db_,
            "UPDATE jobs SET state = 'running', started_ms = ?, attempts = attempts + 1 "
            "WHERE id = ?")
      .bind(1, at)
      .bind(2, id)
      .run();
  const std::int64_t seq = append_event(id, job_state::running, at);
  auto after = read_job(id);
  tx.commit();
  return {seq, std::move(after)};
}

auto store::finish(std::int64_t id, job_state state, const std::string& result,
                   const std::string& error) -> job_change {
  transaction tx(db_);
  const std::int64_t at = now_ms();
  statement(db_,
            "UPDATE jobs SET state = ?, result = ?, error = ?, finished_ms = ? WHERE id = ? "
            "AND state IN ('queued', 'running')")
      .bind(1, to_string(state))
      .bind(2, result)
      .bind(3, error)
      .bind(4, at)
      .bind(5, id)
      .run();
  if (sqlite3_changes(db_) != 1) {
    throw std::logic_error("job " + std::to_string(id) + " is not active; not finished twice");
  }
  const std::int64_t seq = append_event(id, state, at);
  auto after = read_job(id);
  tx.commit();
  return {seq, std::move(after)};
}

auto store::requeue(std::int64_t id) -> job_change {
  return change(id, job_state::queued);
}

auto store::change(std::int64_t id, job_state state) -> job_change {
  transaction tx(db_);
  const std::int64_t at = now_ms();
  statement(db_, "UPDATE jobs SET state = ? WHERE id = ?")
      .bind(1, to_string(state))
      .bind(2, id)
      .run();
  const std::int64_t seq = append_event(id, state, at);
  auto after = read_job(id);
  tx.commit();
  return {seq, std::move(after)};
}

void store::set_notification(std::int64_t id, notification_state state) {
  statement(db_, "UPDATE jobs SET notification = ? WHERE id = ?")
      .bind(1, to_string(state))
      .bind(2, id)
      .run();
}

namespace {

// A row whose job columns start at `first` (after columns of another purpose).
template <class Statement>
struct shifted_row {
  Statement& st;
  int first;
  auto integer(int col) -> std::int64_t { return st.integer(first + col); }
  auto text(int col) -> std::string { return st.text(first + col); }
};
template <class Statement>
shifted_row(Statement&, int) -> shifted_row<Statement>;

template <class Statement>
auto job_from_row(Statement& st) -> job {
  job j;
  j.id = st.integer(0);
  j.task = st.text(1);
  j.input = st.text(2);
  j.timeout_ms = st.integer(3);
  j.notify_url = st.text(4);
  j.state = parse_job_state(st.text(5)).value_or(job_state::failed);
  j.result = st.text(6);
  j.error = st.text(7);
  j.attempts = st.integer(8);
  j.created_ms = st.integer(9);
  j.started_ms = st.integer(10);
  j.finished_ms = st.integer(11);
  const std::string n = st.text(12);
  j.notification = n == "pending"     ? notification_state::pending
                   : n == "delivered" ? notification_state::delivered
                   : n == "failed"    ? notification_state::failed
                                      : notification_state::none;
  return j;
}

}  // namespace

auto store::get(std::int64_t id) -> std::optional<job> {
  statement st(db_, (std::string("SELECT ") + job_columns + " FROM jobs WHERE id = ?").c_str());
  st.bind(1, id);
  if (!st.step()) return std::nullopt;
  return job_from_row(st);
}

auto store::list(std::optional<job_state> state, std::int64_t limit, std::int64_t before_id)
    -> std::vector<job> {
  std::string sql = std::string("SELECT ") + job_columns + " FROM jobs WHERE id < ?";
  if (state) sql += " AND state = ?";
  sql += " ORDER BY id DESC LIMIT ?";
  statement st(db_, sql.c_str());
  int i = 1;
  st.bind(i++, before_id > 0 ? before_id : INT64_MAX);
  if (state) st.bind(i++, to_string(*state));
  st.bind(i, limit);
  std::vector<job> out;
  while (st.step()) out.push_back(job_from_row(st));
  return out;
}

auto store::latest_changes_after(std::int64_t seq, std::int64_t limit) -> std::vector<job_change> {
  statement st(db_, (std::string("SELECT latest.seq, ") + job_columns +
                     " FROM (SELECT job_id, max(seq) AS seq FROM job_events WHERE seq > ? "
                     "GROUP BY job_id) AS latest JOIN jobs ON jobs.id = latest.job_id "
                     "ORDER BY latest.seq LIMIT ?")
                        .c_str());
  st.bind(1, seq).bind(2, limit);
  std::vector<job_change> out;
  while (st.step()) {
    shifted_row row{st, 1};
    out.push_back({st.integer(0), job_from_row(row)});
  }
  return out;
}

auto store::delete_ended_before(std::int64_t cutoff_ms) -> std::int64_t {
  transaction tx(db_);
  constexpr const char* ended =
      "SELECT id FROM jobs WHERE finished_ms > 0 AND finished_ms < ? AND notification != "
      "'pending' AND state NOT IN ('queued', 'running')";
  statement(db_, (std::string("DELETE FROM job_events WHERE job_id IN (") + ended + ")").c_str())
      .bind(1, cutoff_ms)
      .run();
  statement(db_, (std::string("DELETE FROM jobs WHERE id IN (") + ended + ")").c_str())
      .bind(1, cutoff_ms)
      .run();
  const std::int64_t deleted = sqlite3_changes(db_);
  tx.commit();
  return deleted;
}

auto store::count_by_state() -> std::array<std::int64_t, 6> {
  std::array<std::int64_t, 6> counts{};
  statement st(db_, "SELECT state, count(*) FROM jobs GROUP BY state");
  while (st.step()) {
    if (auto s = parse_job_state(st.text(0)))
      counts.at(static_cast<std::size_t>(*s)) = st.integer(1);
  }
  return counts;
}

auto store::recover(std::int64_t max_attempts) -> recovery {
  recovery r;
  std::vector<std::pair<std::int64_t, std::int64_t>> running;
  {
    statement st(db_, "SELECT id, attempts FROM jobs WHERE state = 'running' ORDER BY id");
    while (st.step()) running.emplace_back(st.integer(0), st.integer(1));
  }
  for (auto [id, attempts] : running) {
    if (attempts >= max_attempts) {
      finish(id, job_state::failed, "",
             R"({"type":"interrupted","message":"the service stopped while this job ran, )" +
                 std::to_string(attempts) + R"( times; not retried again"})");
      ++r.abandoned;
    } else {
      requeue(id);
      ++r.interrupted;
    }
  }
  {
    statement st(db_, (std::string("SELECT ") + job_columns +
                       " FROM jobs WHERE state = 'queued' ORDER BY id")
                          .c_str());
    while (st.step()) r.queued.push_back(job_from_row(st));
  }
  {
    statement st(db_, (std::string("SELECT ") + job_columns +
                       " FROM jobs WHERE notification = 'pending' AND state NOT IN "
                       "('queued', 'running') ORDER BY id")
                          .c_str());
    while (st.step()) r.to_notify.push_back(job_from_row(st));
  }
  return r;
}

}  // namespace service
