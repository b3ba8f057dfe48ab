// procpool-service - signing webhooks, so a receiver can tell the service's deliveries from
// anyone else's POSTs.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

namespace service {

/// The name of the header that carries the signature.
inline constexpr std::string_view signature_header = "Procpool-Signature";

/// Lower-case hex of HMAC-SHA256(key, message), by OpenSSL.
[[nodiscard]] auto hmac_sha256_hex(std::string_view key, std::string_view message) -> std::string;

/// The header's value for `body` sent at `unix_seconds`:
/// `t=<unix_seconds>,v1=<hex HMAC-SHA256(secret, "<unix_seconds>." + body)>`. The time is signed
/// with the body so that a receiver can refuse an old delivery replayed by whoever captured it.
[[nodiscard]] auto webhook_signature(std::string_view secret, std::int64_t unix_seconds,
                                     std::string_view body) -> std::string;

/// The secret in the file at `path` (its contents, a trailing newline removed). Throws
/// std::runtime_error saying why if the file cannot be read, is empty, or may be read or written
/// by its group or others (a secret any local user can read signs nothing).
[[nodiscard]] auto read_webhook_secret(const std::string& path) -> std::string;

}  // namespace service
