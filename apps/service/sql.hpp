// procpool-service - one SQL connection, SQLite or PostgreSQL, behind one small interface: the
// job store is written once against it (one schema, two dialects).
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <initializer_list>
#include <memory>
#include <optional>
#include <span>
#include <stdexcept>
#include <string>
#include <string_view>
#include <utility>
#include <variant>
#include <vector>

namespace service {

enum class sql_dialect { sqlite, postgres };

/// A statement parameter: NULL, an integer or text. Statements number them $1, $2, ... in both
/// dialects.
using sql_param = std::variant<std::nullptr_t, std::int64_t, std::string_view>;

/// A statement's rows (each field as text, nullopt for NULL) and how many rows it changed.
struct sql_result {
  std::vector<std::vector<std::optional<std::string>>> rows;
  std::int64_t affected = 0;

  [[nodiscard]] auto empty() const -> bool { return rows.empty(); }
  [[nodiscard]] auto size() const -> std::size_t { return rows.size(); }
  /// Field `col` of row `row` as text ("" for NULL).
  [[nodiscard]] auto text(std::size_t row, std::size_t col) const -> std::string;
  /// Field `col` of row `row` as an integer (0 for NULL); throws sql_error if it is not one.
  [[nodiscard]] auto integer(std::size_t row, std::size_t col) const -> std::int64_t;
};

/// What failed, and what the caller can do about it.
struct sql_error : std::runtime_error {
  enum class kind {
    connection,  ///< the connection is gone (server restarted or unreachable): retry later; the
                 ///< connection reconnects by itself at the next exec
    conflict,    ///< a lock timeout, deadlock or serialization failure: retry the transaction
    statement,   ///< the statement itself failed (constraint, syntax): do not retry
  };
  sql_error(kind k, std::string sqlstate, const std::string& message)
      : std::runtime_error(message), what_kind(k), state(std::move(sqlstate)) {}
  kind what_kind;
  std::string state;  ///< PostgreSQL's SQLSTATE ("" for SQLite)
};

/// One connection. Blocking; used from one thread at a time.
class sql_connection {
 public:
  virtual ~sql_connection() = default;
  [[nodiscard]] virtual auto dialect() const -> sql_dialect = 0;
  /// Runs one statement (several, separated by ';', when `params` is empty). Prepared statements
  /// are cached by their text. Throws sql_error. A PostgreSQL connection that was lost is
  /// re-established at the start of the next exec (outside a transaction).
  virtual auto exec(std::string_view sql, std::span<const sql_param> params = {}) -> sql_result = 0;
  auto exec(std::string_view sql, std::initializer_list<sql_param> params) -> sql_result {
    return exec(sql, std::span<const sql_param>(params.begin(), params.size()));
  }
};

struct sql_options {
  std::string application_name = "procpool-service";  ///< PostgreSQL: shown in pg_stat_activity
  bool sqlite_full_sync = true;  ///< SQLite: synchronous=FULL (a commit is on disk) or NORMAL
  /// PostgreSQL: lock_timeout and idle_in_transaction_session_timeout of the service's sessions:
  /// a stalled instance holding a lock must not stall the others for longer than a fraction of
  /// the time after which they would declare themselves unable to work.
  std::chrono::milliseconds pg_lock_timeout{5'000};
};

/// Opens `target`: a `postgresql://` or `postgres://` URL (libpq connection URI) opens
/// PostgreSQL, anything else is a SQLite file path. Throws sql_error (kind::connection) if it
/// cannot connect.
auto open_sql_connection(const std::string& target, const sql_options& options)
    -> std::unique_ptr<sql_connection>;

[[nodiscard]] inline auto is_postgres_url(std::string_view target) -> bool {
  return target.starts_with("postgresql://") || target.starts_with("postgres://");
}

}  // namespace service
