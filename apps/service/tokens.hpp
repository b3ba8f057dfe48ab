// procpool-service - API tokens: made, stored hashed, looked up, listed and revoked in the
// service's database (so every instance sharing a PostgreSQL database accepts the same tokens).
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "sql.hpp"

namespace service {

/// What a token may do. Each scope implies the ones before it.
enum class token_scope { read = 1, submit = 2, admin = 3 };

[[nodiscard]] auto scope_name(token_scope s) -> const char*;
/// "read", "submit" or "admin"; nullopt for anything else.
[[nodiscard]] auto parse_scope(std::string_view text) -> std::optional<token_scope>;

/// A token as the database keeps it: never its secret, only the secret's SHA-256.
struct token_record {
  std::int64_t id = 0;
  std::string name;
  token_scope scope = token_scope::read;
  std::string hash;  ///< SHA-256 of the secret, 64 hex digits
  std::int64_t created_ms = 0;
  std::int64_t revoked_ms = 0;  ///< 0: not revoked
};

/// A token as a client presents it: `pp_<id>_<secret>`.
struct presented_token {
  std::int64_t id = 0;
  std::string secret;
};
/// nullopt if `text` is not of that form (64 lowercase hex digits of secret).
[[nodiscard]] auto parse_token(std::string_view text) -> std::optional<presented_token>;

/// The SHA-256 of `secret`, as 64 lowercase hex digits.
[[nodiscard]] auto hash_secret(std::string_view secret) -> std::string;
/// Whether `secret` hashes to `hash`, compared in constant time.
[[nodiscard]] auto secret_matches(std::string_view secret, const std::string& hash) -> bool;

// Blocking; on a connection whose schema is migrated (store's constructor does it).

/// Makes a token and stores its hash; returns the token, the only time it exists in clear.
auto create_token(sql_connection& db, token_scope scope, const std::string& name) -> std::string;
auto find_token(sql_connection& db, std::int64_t id) -> std::optional<token_record>;
auto list_tokens(sql_connection& db) -> std::vector<token_record>;
/// False if there is no such token or it was already revoked.
auto revoke_token(sql_connection& db, std::int64_t id) -> bool;

}  // namespace service
