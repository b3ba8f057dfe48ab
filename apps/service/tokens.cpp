#include "tokens.hpp"

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/rand.h>

#include <charconv>
#include <stdexcept>

#include "job.hpp"

namespace service {

namespace {

auto hex(const unsigned char* bytes, std::size_t n) -> std::string {
  static constexpr char digits[] = "0123456789abcdef";
  std::string out;
  out.reserve(2 * n);
  for (std::size_t i = 0; i < n; ++i) {
    out += digits[bytes[i] >> 4];
    out += digits[bytes[i] & 0xf];
  }
  return out;
}

auto to_record(const sql_result& r, std::size_t row) -> token_record {
  token_record t;
  t.id = r.integer(row, 0);
  t.name = r.text(row, 1);
  t.scope = parse_scope(r.text(row, 2)).value_or(token_scope::read);
  t.hash = r.text(row, 3);
  t.created_ms = r.integer(row, 4);
  t.revoked_ms = r.integer(row, 5);
  return t;
}

constexpr const char* token_columns = "id, name, scope, hash, created_ms, revoked_ms";
constexpr std::size_t secret_bytes = 32;

}  // namespace

auto scope_name(token_scope s) -> const char* {
  switch (s) {
    case token_scope::read:
      return "read";
    case token_scope::submit:
      return "submit";
    case token_scope::admin:
      return "admin";
  }
  return "read";
}

auto parse_scope(std::string_view text) -> std::optional<token_scope> {
  for (auto s : {token_scope::read, token_scope::submit, token_scope::admin}) {
    if (text == scope_name(s)) return s;
  }
  return std::nullopt;
}

auto parse_token(std::string_view text) -> std::optional<presented_token> {
  if (!text.starts_with("pp_")) return std::nullopt;
  text.remove_prefix(3);
  const auto sep = text.find('_');
  if (sep == std::string_view::npos || sep == 0 || sep > 18) return std::nullopt;
  presented_token t;
  const auto [end, ec] = std::from_chars(text.data(), text.data() + sep, t.id);
  if (ec != std::errc{} || end != text.data() + sep || t.id <= 0) return std::nullopt;
  const std::string_view secret = text.substr(sep + 1);
  if (secret.size() != 2 * secret_bytes) return std::nullopt;
  for (char c : secret) {
    if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'))) return std::nullopt;
  }
  t.secret = std::string(secret);
  return t;
}

// SHA-256, no salt, no key-derivation function: the secrets are 256 random bits from the
// operating system's generator, not passwords a person chose. Nobody can guess one or find it
// from its hash by trying candidates, so a deliberately slow hash (bcrypt, Argon2) would add cost
// to every request and no safety. The hash only keeps a copy of the database from being a list
// of usable tokens.
auto hash_secret(std::string_view secret) -> std::string {
  unsigned char digest[EVP_MAX_MD_SIZE];
  unsigned int length = 0;
  if (EVP_Digest(secret.data(), secret.size(), digest, &length, EVP_sha256(), nullptr) != 1) {
    throw std::runtime_error("SHA-256 failed (OpenSSL)");
  }
  return hex(digest, length);
}

auto secret_matches(std::string_view secret, const std::string& hash) -> bool {
  const std::string computed = hash_secret(secret);
  // Constant time: how long the comparison takes says nothing about how much of it matched.
  return computed.size() == hash.size() &&
         CRYPTO_memcmp(computed.data(), hash.data(), hash.size()) == 0;
}

auto create_token(sql_connection& db, token_scope scope, const std::string& name) -> std::string {
  unsigned char bytes[secret_bytes];
  if (RAND_bytes(bytes, sizeof bytes) != 1) {
    throw std::runtime_error("cannot get random bytes for a token (OpenSSL RAND_bytes)");
  }
  const std::string secret = hex(bytes, sizeof bytes);
  const std::string hash = hash_secret(secret);
  const auto row = db.exec(
      "INSERT INTO api_tokens (name, scope, hash, created_ms) VALUES ($1, $2, $3, $4) "
      "RETURNING id",
      {std::string_view(name), std::string_view(scope_name(scope)), std::string_view(hash),
       now_ms()});
  return "pp_" + std::to_string(row.integer(0, 0)) + "_" + secret;
}

auto find_token(sql_connection& db, std::int64_t id) -> std::optional<token_record> {
  const auto r =
      db.exec(std::string("SELECT ") + token_columns + " FROM api_tokens WHERE id = $1", {id});
  if (r.empty()) return std::nullopt;
  return to_record(r, 0);
}

auto list_tokens(sql_connection& db) -> std::vector<token_record> {
  const auto r =
      db.exec(std::string("SELECT ") + token_columns + " FROM api_tokens ORDER BY id", {});
  std::vector<token_record> all;
  for (std::size_t i = 0; i < r.size(); ++i) all.push_back(to_record(r, i));
  return all;
}

auto revoke_token(sql_connection& db, std::int64_t id) -> bool {
  return db.exec("UPDATE api_tokens SET revoked_ms = $1 WHERE id = $2 AND revoked_ms = 0",
                 {now_ms(), id})
             .affected == 1;
}

}  // namespace service
