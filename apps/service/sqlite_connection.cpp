#include "sqlite_connection.hpp"

#include <string>

namespace service {

sqlite_connection::sqlite_connection(const std::string& path, bool full_sync) {
  if (sqlite3_open_v2(path.c_str(), &db_, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE, nullptr) !=
      SQLITE_OK) {
    const std::string msg = db_ ? sqlite3_errmsg(db_) : "out of memory";
    sqlite3_close(db_);
    throw sql_error(sql_error::kind::connection, "", "cannot open database " + path + ": " + msg);
  }
  sqlite3_busy_timeout(db_, 5000);
  try {
    exec("PRAGMA journal_mode=WAL", {});
    exec(full_sync ? "PRAGMA synchronous=FULL" : "PRAGMA synchronous=NORMAL", {});
  } catch (...) {
    sqlite3_close(db_);
    throw;
  }
}

sqlite_connection::~sqlite_connection() {
  for (auto& [sql, st] : statements_) sqlite3_finalize(st);
  sqlite3_close(db_);
}

void sqlite_connection::fail(const char* what) {
  const int code = sqlite3_extended_errcode(db_);
  const auto k = (code & 0xff) == SQLITE_BUSY || (code & 0xff) == SQLITE_LOCKED
                     ? sql_error::kind::conflict
                     : sql_error::kind::statement;
  throw sql_error(k, "", std::string("sqlite ") + what + ": " + sqlite3_errmsg(db_));
}

auto sqlite_connection::prepared(std::string_view sql) -> sqlite3_stmt* {
  if (auto it = statements_.find(sql); it != statements_.end()) return it->second;
  sqlite3_stmt* st = nullptr;
  if (sqlite3_prepare_v3(db_, sql.data(), static_cast<int>(sql.size()), SQLITE_PREPARE_PERSISTENT,
                         &st, nullptr) != SQLITE_OK) {
    fail("prepare");
  }
  statements_.emplace(std::string(sql), st);
  return st;
}

auto sqlite_connection::exec(std::string_view sql, std::span<const sql_param> params)
    -> sql_result {
  sql_result out;
  if (params.empty() && sql.find('$') == std::string_view::npos) {
    // Scripts (several statements) and pragmas; rows, if any, are collected as text.
    const std::string text(sql);
    char* err = nullptr;
    auto collect = [](void* p, int n, char** values, char**) -> int {
      auto& rows = static_cast<sql_result*>(p)->rows;
      auto& row = rows.emplace_back();
      for (int i = 0; i < n; ++i) {
        row.push_back(values[i] ? std::optional<std::string>(values[i]) : std::nullopt);
      }
      return 0;
    };
    if (sqlite3_exec(db_, text.c_str(), collect, &out, &err) != SQLITE_OK) {
      std::string msg = err ? err : sqlite3_errmsg(db_);
      sqlite3_free(err);
      const int code = sqlite3_extended_errcode(db_) & 0xff;
      throw sql_error(code == SQLITE_BUSY || code == SQLITE_LOCKED ? sql_error::kind::conflict
                                                                   : sql_error::kind::statement,
                      "", "sqlite: " + msg);
    }
    out.affected = sqlite3_changes64(db_);
    return out;
  }
  sqlite3_stmt* st = prepared(sql);
  // Reset and unbind on every way out, so the cached statement is ready for its next use.
  struct reset_guard {
    sqlite3_stmt* st;
    ~reset_guard() {
      sqlite3_reset(st);
      sqlite3_clear_bindings(st);
    }
  } guard{st};
  for (std::size_t i = 0; i < params.size(); ++i) {
    // "$1" is a named parameter to SQLite; its index is where it first appears.
    const std::string name = "$" + std::to_string(i + 1);
    const int index = sqlite3_bind_parameter_index(st, name.c_str());
    if (index == 0) continue;  // not used by this statement
    const auto& p = params[i];
    if (const auto* n = std::get_if<std::int64_t>(&p)) {
      sqlite3_bind_int64(st, index, *n);
    } else if (const auto* s = std::get_if<std::string_view>(&p)) {
      sqlite3_bind_text64(st, index, s->data(), s->size(), SQLITE_TRANSIENT, SQLITE_UTF8);
    } else {
      sqlite3_bind_null(st, index);
    }
  }
  for (;;) {
    const int rc = sqlite3_step(st);
    if (rc == SQLITE_DONE) break;
    if (rc != SQLITE_ROW) fail("step");
    const int n = sqlite3_column_count(st);
    auto& row = out.rows.emplace_back();
    row.reserve(static_cast<std::size_t>(n));
    for (int c = 0; c < n; ++c) {
      const auto* text = reinterpret_cast<const char*>(sqlite3_column_text(st, c));
      if (text == nullptr) {
        row.emplace_back(std::nullopt);
      } else {
        row.emplace_back(std::string(text, static_cast<std::size_t>(sqlite3_column_bytes(st, c))));
      }
    }
  }
  out.affected = sqlite3_changes64(db_);
  return out;
}

}  // namespace service
