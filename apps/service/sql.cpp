#include "sql.hpp"

#include <charconv>

#include "pg_connection.hpp"
#include "sqlite_connection.hpp"

namespace service {

auto sql_result::text(std::size_t row, std::size_t col) const -> std::string {
  const auto& field = rows.at(row).at(col);
  return field ? *field : std::string();
}

auto sql_result::integer(std::size_t row, std::size_t col) const -> std::int64_t {
  const auto& field = rows.at(row).at(col);
  if (!field) return 0;
  std::int64_t v = 0;
  const auto [end, ec] = std::from_chars(field->data(), field->data() + field->size(), v);
  if (ec != std::errc{} || end != field->data() + field->size()) {
    throw sql_error(sql_error::kind::statement, "",
                    "expected an integer, the database gave '" + field->substr(0, 40) + "'");
  }
  return v;
}

auto open_sql_connection(const std::string& target, const sql_options& options)
    -> std::unique_ptr<sql_connection> {
  if (is_postgres_url(target)) {
    pg_session_settings settings;
    settings.lock_timeout = options.pg_lock_timeout;
    settings.idle_in_transaction_session_timeout = options.pg_lock_timeout;
    return std::make_unique<pg_connection>(target, options.application_name, settings);
  }
  return std::make_unique<sqlite_connection>(target, options.sqlite_full_sync);
}

}  // namespace service
