// procpool-service - the SQLite side of sql_connection: one database file, WAL mode.
#pragma once

#include <sqlite3.h>

#include <map>
#include <string>

#include "sql.hpp"

namespace service {

/// A connection to a SQLite file in WAL mode (readers never block the writer; the tests and
/// operators can read the file while the service runs), with a 5 s busy timeout. Statements are
/// prepared once and kept.
class sqlite_connection final : public sql_connection {
 public:
  sqlite_connection(const std::string& path, bool full_sync);
  ~sqlite_connection() override;
  sqlite_connection(const sqlite_connection&) = delete;
  auto operator=(const sqlite_connection&) -> sqlite_connection& = delete;

  [[nodiscard]] auto dialect() const -> sql_dialect override { return sql_dialect::sqlite; }
  using sql_connection::exec;
  auto exec(std::string_view sql, std::span<const sql_param> params) -> sql_result override;

 private:
  [[noreturn]] void fail(const char* what);
  auto prepared(std::string_view sql) -> sqlite3_stmt*;
  sqlite3* db_ = nullptr;
  std::map<std::string, sqlite3_stmt*, std::less<>> statements_;
};

}  // namespace service
