// procpool-service - the PostgreSQL side of sql_connection (libpq), and the connection settings
// the listener shares with it.
#pragma once

#include <libpq-fe.h>

#include <array>
#include <chrono>
#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <unordered_map>

#include "sql.hpp"

namespace service {

/// How to reach the server: a libpq connection URI (postgresql://user@host:port/db?...) or
/// key=value string, and the name shown in pg_stat_activity.
struct pg_conninfo {
  std::string conninfo;
  std::string application_name;

  /// Keywords and values for PQconnectdbParams / PQconnectStartParams with expand_dbname = 1,
  /// null-terminated. Our defaults come first (application_name, connect_timeout=5,
  /// keepalives=1, keepalives_idle=10, keepalives_interval=5, keepalives_count=3,
  /// tcp_user_timeout=30000) and `conninfo` last, so anything the URI sets wins. The values
  /// point into this object: keep it alive and unchanged while they are used.
  static constexpr std::size_t param_count = 9;
  [[nodiscard]] auto keywords() const -> std::array<const char*, param_count>;
  [[nodiscard]] auto values() const -> std::array<const char*, param_count>;
};

/// Limits set on every (re)connected session; zero disables one.
struct pg_session_settings {
  /// A client that stalls inside a transaction (stopped, hung) loses its session, and with it its
  /// locks, after this long.
  std::chrono::milliseconds idle_in_transaction_session_timeout{5'000};
  /// A statement waiting this long for a lock fails with kind::conflict (SQLSTATE 55P03).
  std::chrono::milliseconds lock_timeout{5'000};
  /// A statement running this long is cancelled: kind::conflict (SQLSTATE 57014).
  std::chrono::milliseconds statement_timeout{30'000};
};

/// An sql_error for the failed `result` of a call on `conn` (`result` may be null): kind by
/// SQLSTATE (and by the connection's state), message "postgresql: <primary message> (SQLSTATE
/// xxxxx)". Never contains the password.
[[nodiscard]] auto pg_error(PGconn* conn, const PGresult* result) -> sql_error;

/// One PostgreSQL session behind sql_connection. Statements with parameters are prepared once
/// per session and cached by their text; parameters go as text ($1, $2, ...). A lost connection
/// throws kind::connection and is re-established at the start of the next exec: never silently
/// in the middle of a transaction, since the transaction is gone with the session.
class pg_connection final : public sql_connection {
 public:
  /// Connects at once; throws sql_error (kind::connection, libpq's message) if it cannot.
  pg_connection(std::string conninfo, std::string application_name,
                pg_session_settings settings = {});
  ~pg_connection() override;
  pg_connection(const pg_connection&) = delete;
  auto operator=(const pg_connection&) -> pg_connection& = delete;

  [[nodiscard]] auto dialect() const -> sql_dialect override { return sql_dialect::postgres; }
  auto exec(std::string_view sql, std::span<const sql_param> params = {}) -> sql_result override;
  using sql_connection::exec;

 private:
  void connect();
  void disconnect();
  void apply_settings();
  auto run_prepared(std::string_view sql, std::span<const sql_param> params) -> PGresult*;
  auto finish(PGresult* result) -> sql_result;
  auto results(bool sent) -> PGresult*;

  pg_conninfo info_;
  pg_session_settings settings_;
  PGconn* conn_ = nullptr;
  // Set by our own BEGIN/COMMIT as the server reports them, so a connection lost while it is
  // set is reported instead of being replaced under the caller's transaction.
  bool in_transaction_ = false;
  bool transaction_lost_ = false;  // the session died inside a transaction not yet rolled back
  std::unordered_map<std::string, std::string> statements_;  // SQL text -> prepared name
  std::uint64_t next_statement_ = 1;
};

}  // namespace service
