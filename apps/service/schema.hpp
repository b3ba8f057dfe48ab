// procpool-service - the database schema and its versioned migrations, in both dialects.
#pragma once

#include <cstdint>

#include "sql.hpp"

namespace service {

/// What migrate() did.
struct migration_report {
  std::int64_t from_version = 0;
  std::int64_t to_version = 0;
};

/// Brings the schema to the newest version, once, however many instances start at the same time:
/// PostgreSQL holds a transaction-level advisory lock while it reads the version and applies what
/// is missing (DDL is transactional there, so a failed migration leaves nothing behind); SQLite
/// does the same inside BEGIN IMMEDIATE. The applied versions are rows of schema_migrations.
/// Throws sql_error.
auto migrate(sql_connection& db) -> migration_report;

/// The newest schema version this build knows.
[[nodiscard]] auto schema_version() -> std::int64_t;

}  // namespace service
