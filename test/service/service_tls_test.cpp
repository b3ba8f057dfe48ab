// The service's API over TLS, end to end: certificates made at test time with the openssl
// command line, a real TLS client (Beast over OpenSSL) that verifies them, and SIGHUP reloads.
#include <gtest/gtest.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#include <boost/asio/ssl.hpp>
#include <boost/beast/ssl/ssl_stream.hpp>
#include <fstream>
#include <sstream>

#include "service_harness.hpp"

using namespace service_test;
namespace ssl = asio::ssl;

namespace {

auto read_file(const std::string& path) -> std::string {
  std::ifstream in(path);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

void write_file(const std::string& path, const std::string& text) {
  std::ofstream(path, std::ios::trunc) << text;
}

void run(const std::string& command) {
  const std::string quiet = command + " >/dev/null 2>&1";
  if (std::system(quiet.c_str()) != 0) throw std::runtime_error("failed: " + command);
}

// A directory of certificates: a CA, and server certificates it signs for IP 127.0.0.1.
class pki {
 public:
  explicit pki(const std::string& name)
      : dir_((std::filesystem::temp_directory_path() /
              ("procpool-tls-test-" + std::to_string(::getpid()) + "-" + name))
                 .string()) {
    std::filesystem::remove_all(dir_);
    std::filesystem::create_directories(dir_);
    run("openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 "
        "-subj '/CN=procpool test CA " +
        name + "' -keyout " + path("ca.key") + " -out " + path("ca.pem"));
    write_file(path("san.cnf"), "subjectAltName=IP:127.0.0.1\n");
  }
  ~pki() { std::filesystem::remove_all(dir_); }
  pki(const pki&) = delete;
  auto operator=(const pki&) -> pki& = delete;

  [[nodiscard]] auto path(const std::string& file) const -> std::string {
    return dir_ + "/" + file;
  }
  [[nodiscard]] auto ca() const -> std::string { return path("ca.pem"); }

  /// A server certificate `<name>.pem` and key `<name>.key`, with `serial`, valid for two days.
  void server(const std::string& name, int serial) {
    request(name);
    run("openssl x509 -req -in " + path(name + ".csr") + " -CA " + ca() + " -CAkey " +
        path("ca.key") + " -set_serial " + std::to_string(serial) + " -days 2 -extfile " +
        path("san.cnf") + " -out " + path(name + ".pem"));
  }

  /// The same, but valid only in January 2020.
  void expired_server(const std::string& name) {
    request(name);
    write_file(path("index.txt"), "");
    write_file(path("serial"), "7E\n");
    write_file(path("ca.cnf"),
               "[ca]\ndefault_ca = test_ca\n[test_ca]\ndatabase = " + path("index.txt") +
                   "\nnew_certs_dir = " + dir_ + "\ncertificate = " + ca() +
                   "\nprivate_key = " + path("ca.key") + "\nserial = " + path("serial") +
                   "\ndefault_md = sha256\npolicy = any\n[any]\ncommonName = supplied\n");
    run("openssl ca -batch -notext -config " + path("ca.cnf") + " -in " + path(name + ".csr") +
        " -startdate 20200101000000Z -enddate 20200102000000Z -extfile " + path("san.cnf") +
        " -out " + path(name + ".pem"));
  }

 private:
  void request(const std::string& name) {
    run("openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -subj "
        "'/CN=procpool test server " +
        name + "' -keyout " + path(name + ".key") + " -out " + path(name + ".csr"));
  }
  std::string dir_;
};

struct tls_reply {
  boost::system::error_code handshake;  ///< set if the handshake (verification) failed
  std::string serial;                   ///< the server certificate's serial number, hex
  reply r;
};

// One request over TLS, verifying the server's certificate with `ca` for IP 127.0.0.1.
auto tls_call(std::uint16_t port, const std::string& ca, http::verb verb, const std::string& target,
              const std::string& body = "", const header_list& headers = {}) -> tls_reply {
  asio::io_context ioc;
  ssl::context ctx(ssl::context::tls_client);
  ctx.load_verify_file(ca);
  ctx.set_verify_mode(ssl::verify_peer);
  beast::ssl_stream<tcp::socket> stream(ioc, ctx);
  X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(stream.native_handle()), "127.0.0.1");
  stream.next_layer().connect(tcp::endpoint(asio::ip::make_address("127.0.0.1"), port));
  tls_reply out;
  stream.handshake(ssl::stream_base::client, out.handshake);
  if (out.handshake) return out;
  X509* peer = SSL_get1_peer_certificate(stream.native_handle());
  BIGNUM* serial = ASN1_INTEGER_to_BN(X509_get_serialNumber(peer), nullptr);
  char* hex = BN_bn2hex(serial);
  out.serial = hex;
  OPENSSL_free(hex);
  BN_free(serial);
  X509_free(peer);
  http::request<http::string_body> req{verb, target, 11};
  req.set(http::field::host, "127.0.0.1");
  for (const auto& [name, value] : headers) req.set(name, value);
  if (!body.empty()) {
    req.set(http::field::content_type, "application/json");
    req.body() = body;
  }
  req.keep_alive(false);
  req.prepare_payload();
  http::write(stream, req);
  beast::flat_buffer buffer;
  http::response<http::string_body> res;
  http::read(stream, buffer, res);
  out.r = {res.result_int(), res.body(), {}};
  for (const auto& h : res) out.r.headers[std::string(h.name_string())] = std::string(h.value());
  return out;
}

// Waits until the file at `path` holds `text` `count` times (the service's log).
void wait_for_log(const std::string& path, const std::string& text, std::size_t count = 1) {
  const auto deadline = std::chrono::steady_clock::now() + hang_guard;
  for (;;) {
    const std::string log = read_file(path);
    std::size_t found = 0;
    for (auto at = log.find(text); at != std::string::npos; at = log.find(text, at + 1)) ++found;
    if (found >= count) return;
    if (std::chrono::steady_clock::now() > deadline) {
      throw std::runtime_error("the log never said '" + text + "': " + log);
    }
    std::this_thread::sleep_for(10ms);
  }
}

auto tls_flags(const pki& p, const std::string& name) -> std::vector<std::string> {
  return {"--tls-cert", p.path(name + ".pem"), "--tls-key", p.path(name + ".key")};
}

}  // namespace

TEST(Tls, AClientThatTrustsTheCaIsServedAndReadsEventsOverTls) {
  pki p("served");
  p.server("server", 1);
  const std::string db = fresh_db("tls_served");
  const std::string token = create_token(db, "submit");
  // Not loopback: TLS with required tokens is what lets the service start without --insecure.
  auto flags = tls_flags(p, "server");
  flags.insert(flags.end(), {"--address", "0.0.0.0", "--require-tokens"});
  service_process svc(db, flags);
  EXPECT_NE(svc.banner().find("listening on https://"), std::string::npos) << svc.banner();
  const tls_reply health = tls_call(svc.port(), p.ca(), http::verb::get, "/healthz");
  ASSERT_FALSE(health.handshake) << health.handshake.message();
  EXPECT_EQ(health.r.status, 200u);
  EXPECT_EQ(tls_call(svc.port(), p.ca(), http::verb::get, "/jobs").r.status, 401u);
  // The dashboard's session cookie is Secure over TLS.
  const tls_reply session =
      tls_call(svc.port(), p.ca(), http::verb::post, "/session", "", bearer(token));
  ASSERT_EQ(session.r.status, 200u) << session.r.body;
  EXPECT_TRUE(session.r.headers.at("Set-Cookie").ends_with("; Path=/; Secure"))
      << session.r.headers.at("Set-Cookie");

  // /events over TLS: the stream opens, and a job submitted over TLS shows up on it.
  asio::io_context ioc;
  ssl::context ctx(ssl::context::tls_client);
  ctx.load_verify_file(p.ca());
  ctx.set_verify_mode(ssl::verify_peer);
  beast::ssl_stream<tcp::socket> events(ioc, ctx);
  X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(events.native_handle()), "127.0.0.1");
  events.next_layer().connect(tcp::endpoint(asio::ip::make_address("127.0.0.1"), svc.port()));
  events.handshake(ssl::stream_base::client);
  const std::string get =
      "GET /events HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer " + token + "\r\n\r\n";
  asio::write(events, asio::buffer(get));
  std::string in;
  asio::read_until(events, asio::dynamic_buffer(in), ": connected\n\n");
  EXPECT_TRUE(in.starts_with("HTTP/1.1 200")) << in;
  const tls_reply posted = tls_call(svc.port(), p.ca(), http::verb::post, "/jobs",
                                    R"({"task": "sleep", "input": {"ms": 1}})", bearer(token));
  ASSERT_EQ(posted.r.status, 202u) << posted.r.body;
  asio::read_until(events, asio::dynamic_buffer(in), "\"state\":\"succeeded\"");
  EXPECT_NE(in.find("event: job"), std::string::npos);
}

TEST(Tls, PlainHttpToTheTlsPortGetsNoHttpAnswer) {
  pki p("plain");
  p.server("server", 1);
  service_process svc(fresh_db("tls_plain"), tls_flags(p, "server"));
  const std::string answer = raw(svc.port(), "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n");
  EXPECT_FALSE(answer.starts_with("HTTP/")) << answer;
  // The server is still fine.
  EXPECT_EQ(tls_call(svc.port(), p.ca(), http::verb::get, "/healthz").r.status, 200u);
}

TEST(Tls, AClientThatDoesNotTrustTheCaFailsVerification) {
  pki p("trusted");
  pki other("untrusted");
  p.server("server", 1);
  service_process svc(fresh_db("tls_untrusted"), tls_flags(p, "server"));
  const tls_reply r = tls_call(svc.port(), other.ca(), http::verb::get, "/healthz");
  EXPECT_TRUE(r.handshake);
  EXPECT_NE(r.handshake.message().find("certificate verify failed"), std::string::npos)
      << r.handshake.message();
}

TEST(Tls, AnExpiredServerCertificateFailsVerification) {
  pki p("expired");
  p.expired_server("server");
  service_process svc(fresh_db("tls_expired"), tls_flags(p, "server"));
  const tls_reply r = tls_call(svc.port(), p.ca(), http::verb::get, "/healthz");
  ASSERT_TRUE(r.handshake);
  EXPECT_NE(r.handshake.message().find("certificate verify failed"), std::string::npos)
      << r.handshake.message();
}

TEST(Tls, SighupReloadsTheCertificateForNewConnectionsAndABadOneKeepsTheOld) {
  pki p("reload");
  p.server("server", 1);
  p.server("renewed", 2);
  const std::string db = fresh_db("tls_reload");
  const std::string log = p.path("service.stderr");
  service_process svc(db, tls_flags(p, "server"), true, webhook_addresses::loopback_allowed, log);
  EXPECT_EQ(tls_call(svc.port(), p.ca(), http::verb::get, "/healthz").serial, "01");

  std::filesystem::copy_file(p.path("renewed.pem"), p.path("server.pem"),
                             std::filesystem::copy_options::overwrite_existing);
  std::filesystem::copy_file(p.path("renewed.key"), p.path("server.key"),
                             std::filesystem::copy_options::overwrite_existing);
  svc.signal(SIGHUP);
  wait_for_log(log, "TLS: SIGHUP: reloaded");
  const tls_reply renewed = tls_call(svc.port(), p.ca(), http::verb::get, "/healthz");
  EXPECT_EQ(renewed.serial, "02");
  EXPECT_EQ(renewed.r.status, 200u);

  // A broken file (half-written, or a key that does not match): the old certificate stays.
  write_file(p.path("server.pem"), "-----BEGIN CERTIFICATE-----\nnot one\n");
  svc.signal(SIGHUP);
  wait_for_log(log, "TLS: SIGHUP: kept the current certificate");
  EXPECT_NE(read_file(log).find("--tls-cert " + p.path("server.pem")), std::string::npos)
      << read_file(log);
  EXPECT_EQ(tls_call(svc.port(), p.ca(), http::verb::get, "/healthz").serial, "02");
}

TEST(Tls, AKeyThatIsNotTheCertificatesStopsTheStartSayingSo) {
  pki p("mismatch");
  p.server("server", 1);
  p.server("other", 2);
  const auto r = run_service_command({"--db", fresh_db("tls_mismatch"), "--port", "0", "--tls-cert",
                                      p.path("server.pem"), "--tls-key", p.path("other.key")});
  EXPECT_EQ(r.status, 1);
  EXPECT_NE(r.err.find("is not the key of the certificate"), std::string::npos) << r.err;
  const auto half = run_service_command({"--port", "0", "--tls-cert", p.path("server.pem")});
  EXPECT_EQ(half.status, 2);
  EXPECT_NE(half.err.find("both --tls-cert and --tls-key"), std::string::npos) << half.err;
}

// Without TLS there is nothing to reload, but a `systemctl reload` must not stop the service.
TEST(Tls, SighupWithoutTlsLeavesTheServiceServing) {
  pki p("no_tls");
  const std::string log = p.path("service.stderr");
  service_process svc(fresh_db("no_tls_hup"), {}, true, webhook_addresses::loopback_allowed, log);
  svc.signal(SIGHUP);
  wait_for_log(log, "SIGHUP: nothing to reload");
  EXPECT_EQ(svc.get("/healthz").status, 200u);
}
