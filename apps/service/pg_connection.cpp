#include "pg_connection.hpp"

#include <charconv>
#include <memory>
#include <optional>
#include <string>
#include <system_error>
#include <type_traits>
#include <utility>
#include <variant>
#include <vector>

namespace service {

namespace {

struct result_deleter {
  void operator()(PGresult* r) const noexcept { PQclear(r); }
};
using result_ptr = std::unique_ptr<PGresult, result_deleter>;

// libpq's messages span lines ("...\n\tIs the server running...?\n"); ours go in one log line.
auto one_line(const char* text) -> std::string {
  std::string out;
  bool space = false;
  for (const char* p = text; p != nullptr && *p != '\0'; ++p) {
    const bool ws = *p == '\n' || *p == '\t' || *p == '\r' || *p == ' ';
    if (ws) {
      space = !out.empty();
    } else {
      if (space) out += ' ';
      space = false;
      out += *p;
    }
  }
  return out;
}

auto lost_connection_state(std::string_view state) -> bool {
  return state.starts_with("08") || state == "57P01" || state == "57P02" || state == "57P03";
}

auto conflict_state(std::string_view state) -> bool {
  // Serialization failure, deadlock, lock_timeout, statement_timeout: the same transaction may
  // well succeed when run again.
  return state == "40001" || state == "40P01" || state == "55P03" || state == "57014";
}

// Notices (NOTICE for "CREATE TABLE IF NOT EXISTS" on every start, WARNING for a ROLLBACK on the
// fresh session after a lost one) are routine here; libpq would print each to stderr.
void ignore_notice(void* /*arg*/, const char* /*message*/) {}

}  // namespace

auto pg_conninfo::keywords() const -> std::array<const char*, param_count> {
  return {"application_name",
          "connect_timeout",
          "keepalives",
          "keepalives_idle",
          "keepalives_interval",
          "keepalives_count",
          "tcp_user_timeout",
          "dbname",
          nullptr};
}

auto pg_conninfo::values() const -> std::array<const char*, param_count> {
  // Keepalives find a peer that vanished while the connection is idle; tcp_user_timeout (ms) one
  // that vanished while a request is unacknowledged, which keepalives do not cover.
  return {application_name.c_str(), "5", "1", "10", "5", "3", "30000", conninfo.c_str(), nullptr};
}

auto pg_error(PGconn* conn, const PGresult* result) -> sql_error {
  std::string state;
  std::string message;
  if (result != nullptr) {
    if (const char* s = PQresultErrorField(result, PG_DIAG_SQLSTATE)) state = s;
    if (const char* m = PQresultErrorField(result, PG_DIAG_MESSAGE_PRIMARY)) message = one_line(m);
    if (message.empty()) message = one_line(PQresultErrorMessage(result));
  }
  if (message.empty() && conn != nullptr) message = one_line(PQerrorMessage(conn));
  if (message.empty()) message = "unknown error";
  const bool lost = result == nullptr || conn == nullptr || PQstatus(conn) != CONNECTION_OK ||
                    lost_connection_state(state);
  const auto k = lost                    ? sql_error::kind::connection
                 : conflict_state(state) ? sql_error::kind::conflict
                                         : sql_error::kind::statement;
  std::string text = "postgresql: " + message;
  if (!state.empty()) text += " (SQLSTATE " + state + ")";
  return {k, std::move(state), text};
}

pg_connection::pg_connection(std::string conninfo, std::string application_name,
                             pg_session_settings settings)
    : info_{std::move(conninfo), std::move(application_name)}, settings_(settings) {
  connect();
}

pg_connection::~pg_connection() {
  disconnect();
}

void pg_connection::connect() {
  const auto keys = info_.keywords();
  const auto values = info_.values();
  PGconn* conn = PQconnectdbParams(keys.data(), values.data(), /*expand_dbname=*/1);
  if (conn == nullptr) {
    throw sql_error(sql_error::kind::connection, "", "postgresql: out of memory");
  }
  if (PQstatus(conn) != CONNECTION_OK) {
    auto error = pg_error(conn, nullptr);
    PQfinish(conn);
    throw error;
  }
  PQsetNoticeProcessor(conn, ignore_notice, nullptr);
  conn_ = conn;
  try {
    apply_settings();
  } catch (...) {
    disconnect();
    throw;
  }
}

void pg_connection::disconnect() {
  if (conn_ != nullptr) PQfinish(conn_);
  conn_ = nullptr;
  in_transaction_ = false;
  statements_.clear();  // they lived in the session
}

void pg_connection::apply_settings() {
  const auto set = [](const char* name, std::chrono::milliseconds value) {
    return std::string("SET ") + name + " = '" + std::to_string(value.count()) + "ms';";
  };
  const std::string sql =
      set("idle_in_transaction_session_timeout", settings_.idle_in_transaction_session_timeout) +
      set("lock_timeout", settings_.lock_timeout) +
      set("statement_timeout", settings_.statement_timeout);
  (void)finish(results(PQsendQuery(conn_, sql.c_str()) != 0));
}

auto pg_connection::exec(std::string_view sql, std::span<const sql_param> params) -> sql_result {
  if (transaction_lost_) {
    // The session died inside a transaction: everything it did is gone. Until the owner rolls
    // back, nothing may run on a new session as if it were part of that transaction (and a
    // COMMIT there would "succeed" with nothing to commit).
    if (sql == "ROLLBACK") {
      transaction_lost_ = false;
      return {};
    }
    throw sql_error(sql_error::kind::connection, "",
                    "postgresql: the connection was lost inside a transaction, which is rolled "
                    "back");
  }
  if (conn_ == nullptr || PQstatus(conn_) != CONNECTION_OK) {
    if (conn_ != nullptr && in_transaction_) {
      // A connection found broken inside a transaction: say so, and wait for the rollback.
      disconnect();
      transaction_lost_ = true;
      throw sql_error(sql_error::kind::connection, "",
                      "postgresql: connection lost inside a transaction");
    }
    disconnect();
    connect();
  }
  if (params.empty()) {
    PGresult* result = results(PQsendQuery(conn_, std::string(sql).c_str()) != 0);
    // COMMIT of a transaction that had failed answers "ROLLBACK", without an error.
    if (sql == "COMMIT" && result != nullptr && PQresultStatus(result) == PGRES_COMMAND_OK &&
        std::string_view(PQcmdStatus(result)) == "ROLLBACK") {
      PQclear(result);
      in_transaction_ = false;
      throw sql_error(sql_error::kind::conflict, "",
                      "postgresql: the transaction had failed and was rolled back at COMMIT");
    }
    return finish(result);
  }
  return finish(run_prepared(sql, params));
}

auto pg_connection::run_prepared(std::string_view sql, std::span<const sql_param> params)
    -> PGresult* {
  // libpq wants text parameters NUL-terminated, which a string_view need not be: copy them.
  std::vector<std::string> texts(params.size());
  std::vector<const char*> values(params.size(), nullptr);
  for (std::size_t i = 0; i < params.size(); ++i) {
    std::visit(
        [&](const auto& p) {
          using type = std::decay_t<decltype(p)>;
          if constexpr (std::is_same_v<type, std::int64_t>) {
            std::array<char, 24> buf{};
            const auto end = std::to_chars(buf.data(), buf.data() + buf.size(), p).ptr;
            texts[i].assign(buf.data(), end);
            values[i] = texts[i].c_str();
          } else if constexpr (std::is_same_v<type, std::string_view>) {
            // It would be cut at the NUL without a word; PostgreSQL text cannot hold one anyway.
            if (p.find('\0') != std::string_view::npos) {
              throw sql_error(sql_error::kind::statement, "22021",
                              "postgresql: text parameter $" + std::to_string(i + 1) +
                                  " contains a NUL byte (SQLSTATE 22021)");
            }
            texts[i].assign(p);
            values[i] = texts[i].c_str();
          }
        },
        params[i]);
  }
  const std::string key(sql);
  for (int attempt = 0;; ++attempt) {
    auto it = statements_.find(key);
    if (it == statements_.end()) {
      std::string name = "s" + std::to_string(next_statement_++);
      result_ptr prepared(
          results(PQsendPrepare(conn_, name.c_str(), key.c_str(), 0, nullptr) != 0));
      if (!prepared || PQresultStatus(prepared.get()) != PGRES_COMMAND_OK) {
        return prepared.release();  // finish() reports the failure
      }
      it = statements_.emplace(key, std::move(name)).first;
    }
    PGresult* result =
        results(PQsendQueryPrepared(conn_, it->second.c_str(), static_cast<int>(params.size()),
                                    values.data(), nullptr, nullptr, 0) != 0);
    const char* state = result != nullptr ? PQresultErrorField(result, PG_DIAG_SQLSTATE) : nullptr;
    // 26000: someone deallocated our statements (DISCARD ALL, DEALLOCATE). Retrying is only
    // possible outside a transaction; inside one the failure has aborted it already.
    if (attempt == 0 && state != nullptr && std::string_view(state) == "26000") {
      statements_.clear();
      if (PQtransactionStatus(conn_) == PQTRANS_IDLE) {
        PQclear(result);
        continue;
      }
    }
    return result;
  }
}

// PQexec's loop, except that the first error wins: a server ending the session says why
// (57P01 terminated, 25P03 idle in transaction) just before the connection closes, and PQexec
// would keep only libpq's "server closed the connection unexpectedly" that follows.
auto pg_connection::results(bool sent) -> PGresult* {
  if (!sent) return nullptr;
  PGresult* kept = nullptr;
  while (PGresult* next = PQgetResult(conn_)) {
    const auto status = PQresultStatus(next);
    if (kept != nullptr && PQresultStatus(kept) == PGRES_FATAL_ERROR) {
      PQclear(next);
      continue;
    }
    PQclear(kept);
    kept = next;
    if (status == PGRES_COPY_IN || status == PGRES_COPY_OUT || status == PGRES_COPY_BOTH) break;
  }
  return kept;
}

auto pg_connection::finish(PGresult* raw_result) -> sql_result {
  const result_ptr result(raw_result);
  switch (PQtransactionStatus(conn_)) {
    case PQTRANS_INTRANS:
    case PQTRANS_INERROR:
      in_transaction_ = true;
      break;
    case PQTRANS_IDLE:
      in_transaction_ = false;
      break;
    default:  // unknown (connection bad) or active: keep what we knew
      break;
  }
  const auto status = result ? PQresultStatus(result.get()) : PGRES_FATAL_ERROR;
  if (status == PGRES_COPY_IN || status == PGRES_COPY_OUT || status == PGRES_COPY_BOTH) {
    // The session is stuck in COPY mode; a fresh one is simpler than unwinding it.
    disconnect();
    throw sql_error(sql_error::kind::statement, "", "postgresql: COPY is not supported");
  }
  if (status != PGRES_TUPLES_OK && status != PGRES_COMMAND_OK && status != PGRES_EMPTY_QUERY) {
    auto error = pg_error(conn_, result.get());
    // A lost session takes any transaction with it: the next exec starts a new one, once the
    // owner has rolled the lost one back.
    if (error.what_kind == sql_error::kind::connection) {
      if (in_transaction_) transaction_lost_ = true;
      disconnect();
    }
    throw error;
  }
  sql_result out;
  const int rows = PQntuples(result.get());
  const int cols = PQnfields(result.get());
  out.rows.reserve(static_cast<std::size_t>(rows));
  for (int r = 0; r < rows; ++r) {
    auto& row = out.rows.emplace_back();
    row.reserve(static_cast<std::size_t>(cols));
    for (int c = 0; c < cols; ++c) {
      if (PQgetisnull(result.get(), r, c) != 0) {
        row.emplace_back(std::nullopt);
      } else {
        row.emplace_back(std::in_place, PQgetvalue(result.get(), r, c),
                         static_cast<std::size_t>(PQgetlength(result.get(), r, c)));
      }
    }
  }
  const std::string_view affected = PQcmdTuples(result.get());
  std::from_chars(affected.data(), affected.data() + affected.size(), out.affected);
  return out;
}

}  // namespace service
