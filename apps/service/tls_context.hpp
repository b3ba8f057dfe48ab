// procpool-service - the API's TLS settings and certificate, reloadable while serving.
#pragma once

#include <boost/asio/ssl/context.hpp>
#include <memory>
#include <string>

namespace service {

/// The server's TLS context: TLS 1.2 or newer, forward-secret AEAD ciphers only, no compression,
/// no renegotiation, the server's cipher preference. Used on the event loop thread only.
class tls_context {
 public:
  /// Loads the certificate chain and key (PEM); throws std::runtime_error saying which file is
  /// wrong and why.
  tls_context(std::string cert_path, std::string key_path);

  /// The context new connections use. A connection keeps the one it started with.
  [[nodiscard]] auto current() const -> std::shared_ptr<boost::asio::ssl::context> {
    return current_;
  }
  /// Loads the files again (after they were replaced): new connections get the new certificate.
  /// If they cannot be loaded, the current context stays and the reason is returned (empty on
  /// success).
  auto reload() -> std::string;

 private:
  std::string cert_path_, key_path_;
  std::shared_ptr<boost::asio::ssl::context> current_;
};

/// A context as tls_context makes them; throws std::runtime_error naming the file at fault.
auto make_server_tls_context(const std::string& cert_path, const std::string& key_path)
    -> std::shared_ptr<boost::asio::ssl::context>;

}  // namespace service
