#include "tls_context.hpp"

#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>

#include <stdexcept>

namespace ssl = boost::asio::ssl;

namespace service {

namespace {

// TLS 1.2 stays allowed beside 1.3: clients still in use (older curl, Java 8, Go before 1.12 on
// some systems) speak only 1.2. Its ciphers are restricted to ECDHE key exchange with AEAD (the
// "intermediate" list of Mozilla's guidelines), so 1.2 adds no weak suite; 1.3's suites are all
// fine and are left at OpenSSL's defaults.
constexpr const char* tls12_ciphers =
    "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:"
    "ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-RSA-AES256-GCM-SHA384:"
    "ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305";

auto openssl_error() -> std::string {
  const unsigned long e = ERR_get_error();
  ERR_clear_error();
  if (e == 0) return "unknown OpenSSL error";
  char text[256];
  ERR_error_string_n(e, text, sizeof text);
  return text;
}

}  // namespace

auto make_server_tls_context(const std::string& cert_path, const std::string& key_path)
    -> std::shared_ptr<ssl::context> {
  auto ctx = std::make_shared<ssl::context>(ssl::context::tls_server);
  SSL_CTX* native = ctx->native_handle();
  ERR_clear_error();
  SSL_CTX_set_min_proto_version(native, TLS1_2_VERSION);
  // No compression (CRIME), no renegotiation (a client-driven CPU cost, and never needed by an
  // API), the server's order of ciphers (its list is the good one), a fresh ECDH key each time.
  SSL_CTX_set_options(native, SSL_OP_NO_COMPRESSION | SSL_OP_NO_RENEGOTIATION |
                                  SSL_OP_CIPHER_SERVER_PREFERENCE | SSL_OP_SINGLE_ECDH_USE);
  if (SSL_CTX_set_cipher_list(native, tls12_ciphers) != 1) {
    throw std::runtime_error("TLS: cannot set the cipher list: " + openssl_error());
  }
  if (SSL_CTX_use_certificate_chain_file(native, cert_path.c_str()) != 1) {
    throw std::runtime_error("--tls-cert " + cert_path +
                             ": cannot load a PEM certificate chain: " + openssl_error());
  }
  if (SSL_CTX_use_PrivateKey_file(native, key_path.c_str(), SSL_FILETYPE_PEM) != 1) {
    // OpenSSL checks the pair as it loads the key: say so plainly, it is the usual mistake.
    if (ERR_GET_REASON(ERR_peek_last_error()) == X509_R_KEY_VALUES_MISMATCH) {
      throw std::runtime_error("--tls-key " + key_path + " is not the key of the certificate in " +
                               cert_path + ": " + openssl_error());
    }
    throw std::runtime_error("--tls-key " + key_path +
                             ": cannot load a PEM private key (unencrypted): " + openssl_error());
  }
  if (SSL_CTX_check_private_key(native) != 1) {
    throw std::runtime_error("--tls-key " + key_path + " is not the key of the certificate in " +
                             cert_path + ": " + openssl_error());
  }
  return ctx;
}

tls_context::tls_context(std::string cert_path, std::string key_path)
    : cert_path_(std::move(cert_path)),
      key_path_(std::move(key_path)),
      current_(make_server_tls_context(cert_path_, key_path_)) {}

auto tls_context::reload() -> std::string {
  try {
    current_ = make_server_tls_context(cert_path_, key_path_);
    return {};
  } catch (const std::exception& e) {
    return e.what();
  }
}

}  // namespace service
