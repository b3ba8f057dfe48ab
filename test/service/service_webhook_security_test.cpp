// The webhook's defences, end to end against the real service: signed deliveries a receiver can
// verify, https:// receivers whose certificate must verify, and the connect-time address policy
// that keeps a notify_url from reaching the service's own host and network (SSRF).
#include <gtest/gtest.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <sys/stat.h>

#include <boost/asio/ssl.hpp>
#include <cstdio>
#include <ctime>
#include <fstream>

#include "service_harness.hpp"

using namespace service_test;
namespace ssl = asio::ssl;

namespace {

auto str(const json::value& v) -> std::string {
  return v.is_string() ? std::string(v.as_string()) : json::serialize(v);
}

auto temp_dir(const std::string& name) -> std::filesystem::path {
  const auto dir = std::filesystem::temp_directory_path() /
                   ("procpool-webhook-test-" + std::to_string(::getpid())) / name;
  std::filesystem::remove_all(dir);
  std::filesystem::create_directories(dir);
  return dir;
}

void write_file(const std::filesystem::path& path, const std::string& text, mode_t mode) {
  std::ofstream(path) << text;
  ::chmod(path.c_str(), mode);
}

/// Polls GET /jobs/{id} until the job's notification is `state`; returns the job.
auto wait_for_notification(service_process& svc, std::int64_t id, const std::string& state)
    -> json::object {
  const auto deadline = std::chrono::steady_clock::now() + hang_guard;
  for (;;) {
    json::object job = svc.get("/jobs/" + std::to_string(id)).json().as_object();
    if (str(job.at("notification")) == state) return job;
    if (std::chrono::steady_clock::now() > deadline) {
      throw std::runtime_error("notification never " + state + ": " + json::serialize(job));
    }
    std::this_thread::sleep_for(10ms);
  }
}

auto job_for(const std::string& url) -> std::string {
  return R"({"task": "count_primes", "input": {"n": 100}, "notify_url": ")" + url + R"("})";
}

/// A receiver on a thread, listening on `address`: counts the connections it accepts (before
/// any TLS handshake), records each request it reads, and answers `status` with `headers`.
/// With a TLS context it speaks TLS; a failed handshake is a connection without a request.
class receiver {
 public:
  struct request {
    std::map<std::string, std::string> headers;
    std::string body;
    std::string server_name;  ///< the TLS client's SNI, if any
  };

  explicit receiver(const std::string& address, http::status status = http::status::ok,
                    std::vector<std::pair<std::string, std::string>> headers = {},
                    ssl::context* tls = nullptr)
      : acceptor_(ioc_, tcp::endpoint(asio::ip::make_address(address), 0)),
        status_(status),
        headers_(std::move(headers)),
        tls_(tls),
        thread_([this] { serve(); }) {}
  ~receiver() {
    stop_ = true;
    try {  // unblocks the accept with a connection of our own
      asio::io_context c;
      tcp::socket s(c);
      s.connect(acceptor_.local_endpoint());
    } catch (...) {
    }
    thread_.join();
  }
  receiver(const receiver&) = delete;
  auto operator=(const receiver&) -> receiver& = delete;

  [[nodiscard]] auto port() const -> std::uint16_t { return acceptor_.local_endpoint().port(); }
  auto connections() -> int {
    std::lock_guard lock(mutex_);
    return connections_;
  }
  auto requests() -> std::vector<request> {
    std::lock_guard lock(mutex_);
    return requests_;
  }
  auto wait_for_request() -> request {
    std::unique_lock lock(mutex_);
    if (!cv_.wait_for(lock, hang_guard, [&] { return !requests_.empty(); })) {
      throw std::runtime_error("no request arrived");
    }
    return requests_.front();
  }

 private:
  void serve() {
    for (;;) {
      boost::system::error_code ec;
      tcp::socket socket(ioc_);
      acceptor_.accept(socket, ec);
      if (ec || stop_) return;
      {
        std::lock_guard lock(mutex_);
        ++connections_;
      }
      if (tls_ != nullptr) {
        ssl::stream<tcp::socket> stream(std::move(socket), *tls_);
        stream.handshake(ssl::stream_base::server, ec);
        if (ec) continue;
        const char* sni = SSL_get_servername(stream.native_handle(), TLSEXT_NAMETYPE_host_name);
        answer(stream, sni != nullptr ? sni : "");
      } else {
        answer(socket, "");
      }
    }
  }

  template <class Stream>
  void answer(Stream& stream, const std::string& server_name) {
    boost::system::error_code ec;
    beast::flat_buffer buffer;
    http::request<http::string_body> req;
    http::read(stream, buffer, req, ec);
    if (ec) return;
    {
      std::lock_guard lock(mutex_);
      request r;
      for (const auto& h : req) r.headers[std::string(h.name_string())] = std::string(h.value());
      r.body = req.body();
      r.server_name = server_name;
      requests_.push_back(std::move(r));
    }
    cv_.notify_all();
    http::response<http::string_body> res{status_, 11};
    for (const auto& [name, value] : headers_) res.set(name, value);
    res.keep_alive(false);
    res.prepare_payload();
    http::write(stream, res, ec);
  }

  asio::io_context ioc_;
  tcp::acceptor acceptor_;
  http::status status_;
  std::vector<std::pair<std::string, std::string>> headers_;
  ssl::context* tls_;
  std::atomic<bool> stop_{false};
  std::mutex mutex_;
  std::condition_variable cv_;
  int connections_ = 0;
  std::vector<request> requests_;
  std::thread thread_;
};

// ---- signatures ---------------------------------------------------------------------------

auto hmac_hex(const std::string& key, const std::string& message) -> std::string {
  unsigned char digest[EVP_MAX_MD_SIZE];
  unsigned int n = 0;
  HMAC(EVP_sha256(), key.data(), static_cast<int>(key.size()),
       reinterpret_cast<const unsigned char*>(message.data()), message.size(), digest, &n);
  std::string hex;
  char two[3];
  for (unsigned int i = 0; i < n; ++i) {
    std::snprintf(two, sizeof two, "%02x", digest[i]);
    hex += two;
  }
  return hex;
}

/// What a receiver does: splits `t=..,v1=..`, recomputes the HMAC over "<t>." + body.
auto signature_verifies(const std::string& secret, const std::string& header,
                        const std::string& body) -> bool {
  const auto comma = header.find(",v1=");
  if (!header.starts_with("t=") || comma == std::string::npos) return false;
  const std::string t = header.substr(2, comma - 2);
  return hmac_hex(secret, t + "." + body) == header.substr(comma + 4);
}

TEST(WebhookSecurity, DeliveriesAreSignedAndATamperedBodyFailsVerification) {
  const auto dir = temp_dir("signed");
  const std::string secret = "correct horse battery staple";
  write_file(dir / "secret", secret + "\n", 0600);
  receiver hook("127.0.0.1");
  service_process svc(fresh_db("webhook-signed"), {"--webhook-secret-file", dir / "secret"});
  EXPECT_EQ(svc.banner().find("NOT signed"), std::string::npos) << svc.banner();
  const auto before = std::time(nullptr);
  const auto id = svc.submit(job_for("http://127.0.0.1:" + std::to_string(hook.port()) + "/hook"));
  const auto req = hook.wait_for_request();
  const auto after = std::time(nullptr);
  ASSERT_EQ(req.headers.count("Procpool-Signature"), 1u);
  const std::string header = req.headers.at("Procpool-Signature");
  EXPECT_TRUE(signature_verifies(secret, header, req.body)) << header;
  // The secret file's newline is not part of the secret.
  EXPECT_FALSE(signature_verifies(secret + "\n", header, req.body));
  // t is the time of sending, in Unix seconds: a receiver rejects old ones (replays).
  const long long t = std::stoll(header.substr(2));
  EXPECT_GE(t, before);
  EXPECT_LE(t, after);
  // One byte changed in transit, nothing recomputed: the receiver's check fails.
  std::string tampered = req.body;
  tampered[tampered.size() / 2] ^= 1;
  EXPECT_FALSE(signature_verifies(secret, header, tampered));
  // Nor does the signature carry over to another time.
  const std::string moved = "t=" + std::to_string(t + 1) + header.substr(header.find(','));
  EXPECT_FALSE(signature_verifies(secret, moved, req.body));
  wait_for_notification(svc, id, "delivered");
}

TEST(WebhookSecurity, WithoutASecretDeliveriesAreUnsignedAndTheServiceSaysSo) {
  receiver hook("127.0.0.1");
  service_process svc(fresh_db("webhook-unsigned"));
  EXPECT_NE(svc.banner().find("webhooks are NOT signed"), std::string::npos) << svc.banner();
  svc.submit(job_for("http://127.0.0.1:" + std::to_string(hook.port()) + "/hook"));
  EXPECT_EQ(hook.wait_for_request().headers.count("Procpool-Signature"), 0u);
}

/// Runs the service to its exit with `flags`; returns (exit status, stdout and stderr).
auto run_to_exit(const std::vector<std::string>& flags) -> std::pair<int, std::string> {
  std::string command =
      std::string(PROCPOOL_SERVICE_BINARY) + " --port 0 --db " + fresh_db("webhook-refuses-start");
  for (const auto& f : flags) command += " '" + f + "'";
  FILE* out = ::popen((command + " 2>&1 </dev/null").c_str(), "r");
  std::string text;
  char buf[4096];
  while (std::size_t n = std::fread(buf, 1, sizeof buf, out)) text.append(buf, n);
  const int status = ::pclose(out);
  return {WIFEXITED(status) ? WEXITSTATUS(status) : -1, text};
}

TEST(WebhookSecurity, TheServiceRefusesToStartWithASecretFileItCannotTrust) {
  const auto dir = temp_dir("bad-secrets");
  write_file(dir / "shared", "s3cret\n", 0644);
  write_file(dir / "empty", "\n", 0600);
  const std::vector<std::pair<std::string, std::string>> cases = {
      {(dir / "shared").string(), "its group or others may read or write it (mode 0644)"},
      {(dir / "empty").string(), "empty"},
      {(dir / "missing").string(), "No such file"},
  };
  for (const auto& [path, why] : cases) {
    const auto [status, output] = run_to_exit({"--webhook-secret-file", path});
    EXPECT_EQ(status, 1) << output;
    EXPECT_NE(output.find("--webhook-secret-file " + path + ": " + why), std::string::npos)
        << output;
  }
}

TEST(WebhookSecurity, TheServiceRefusesToStartWithACaFileItCannotLoad) {
  const auto dir = temp_dir("bad-ca");
  write_file(dir / "ca.pem", "not a certificate\n", 0644);
  const auto [status, output] = run_to_exit({"--webhook-ca-file", (dir / "ca.pem").string()});
  EXPECT_EQ(status, 1) << output;
  EXPECT_NE(output.find("--webhook-ca-file " + (dir / "ca.pem").string() +
                        ": cannot load it as PEM certificates"),
            std::string::npos)
      << output;
}

// ---- https:// receivers -------------------------------------------------------------------

/// A CA and receiver certificates made with the openssl command line, once per test program.
struct test_pki {
  std::filesystem::path dir;
  std::filesystem::path ca() const { return dir / "ca.pem"; }
  std::filesystem::path key() const { return dir / "server.key"; }
  /// Names 127.0.0.1 and localhost, valid for a day.
  std::filesystem::path good() const { return dir / "good.pem"; }
  /// The same names, expired yesterday.
  std::filesystem::path expired() const { return dir / "expired.pem"; }
  /// Valid, but for 127.0.0.2 only.
  std::filesystem::path other_host() const { return dir / "other.pem"; }
};

void sh(const std::string& command) {
  if (std::system((command + " >/dev/null 2>&1").c_str()) != 0) {
    throw std::runtime_error("failed: " + command);
  }
}

auto pki() -> const test_pki& {
  static const test_pki made = [] {
    test_pki p{temp_dir("pki")};
    const std::string d = p.dir.string();
    const std::string ec = " -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes ";
    sh("openssl req -x509" + ec + "-keyout " + d + "/ca.key -out " + d +
       "/ca.pem -days 2 -subj /CN=procpool-test-ca");
    sh("openssl req" + ec + "-keyout " + d + "/server.key -out " + d +
       "/server.csr -subj /CN=localhost");
    write_file(p.dir / "names.ext", "subjectAltName=IP:127.0.0.1,DNS:localhost\n", 0600);
    write_file(p.dir / "other.ext", "subjectAltName=IP:127.0.0.2\n", 0600);
    const std::string sign = "openssl x509 -req -in " + d + "/server.csr -CA " + d +
                             "/ca.pem -CAkey " + d + "/ca.key -CAcreateserial";
    sh(sign + " -days 1 -extfile " + d + "/names.ext -out " + d + "/good.pem");
    sh(sign + " -days -1 -extfile " + d + "/names.ext -out " + d + "/expired.pem");
    sh(sign + " -days 1 -extfile " + d + "/other.ext -out " + d + "/other.pem");
    return p;
  }();
  return made;
}

auto server_context(const std::filesystem::path& cert) -> std::unique_ptr<ssl::context> {
  auto ctx = std::make_unique<ssl::context>(ssl::context::tls_server);
  ctx->use_certificate_chain_file(cert.string());
  ctx->use_private_key_file(pki().key().string(), ssl::context::pem);
  return ctx;
}

TEST(WebhookSecurity, AnHttpsReceiverIsReachedWhenItsCertificateVerifies) {
  const auto tls = server_context(pki().good());
  receiver hook("127.0.0.1", http::status::ok, {}, tls.get());
  service_process svc(fresh_db("webhook-https"), {"--webhook-ca-file", pki().ca().string()});
  const auto id = svc.submit(job_for("https://127.0.0.1:" + std::to_string(hook.port()) + "/hook"));
  const auto job = wait_for_notification(svc, id, "delivered");
  ASSERT_EQ(hook.requests().size(), 1u);
  EXPECT_EQ(json::parse(hook.requests()[0].body).at("id").as_int64(), id);
  EXPECT_EQ(hook.requests()[0].server_name, "");  // no SNI for an IP address (RFC 6066)
  EXPECT_TRUE(job.at("notification_error").is_null());
}

TEST(WebhookSecurity, AnHttpsReceiverNamedByDnsGetsItsNameAsSniAndMustCarryIt) {
  const auto tls = server_context(pki().good());
  receiver hook("127.0.0.1", http::status::ok, {}, tls.get());
  service_process svc(fresh_db("webhook-https-name"), {"--webhook-ca-file", pki().ca().string()});
  const auto id = svc.submit(job_for("https://localhost:" + std::to_string(hook.port()) + "/hook"));
  wait_for_notification(svc, id, "delivered");
  ASSERT_EQ(hook.requests().size(), 1u);
  EXPECT_EQ(hook.requests()[0].server_name, "localhost");
  EXPECT_EQ(hook.requests()[0].headers.at("Host"), "localhost:" + std::to_string(hook.port()));
}

// A receiver whose certificate does not verify never gets the job: the delivery fails with the
// reason, before any request is sent.
void expect_tls_refused(const std::filesystem::path& cert, const std::vector<std::string>& flags,
                        const std::string& why, const std::string& host = "127.0.0.1") {
  const auto tls = server_context(cert);
  receiver hook("127.0.0.1", http::status::ok, {}, tls.get());
  std::vector<std::string> all = {"--webhook-attempts", "1"};
  all.insert(all.end(), flags.begin(), flags.end());
  service_process svc(fresh_db("webhook-https-refused"), all);
  const auto id =
      svc.submit(job_for("https://" + host + ":" + std::to_string(hook.port()) + "/hook"));
  const auto job = wait_for_notification(svc, id, "failed");
  EXPECT_NE(str(job.at("notification_error")).find(why), std::string::npos) << json::serialize(job);
  EXPECT_EQ(hook.connections(), 1);
  EXPECT_TRUE(hook.requests().empty());
}

TEST(WebhookSecurity, AnHttpsReceiverSignedByAnUntrustedCaIsNotReached) {
  expect_tls_refused(pki().good(), {},
                     "the certificate of 127.0.0.1 did not verify: unable to get local issuer");
}

TEST(WebhookSecurity, AnHttpsReceiverWithAnExpiredCertificateIsNotReached) {
  expect_tls_refused(pki().expired(), {"--webhook-ca-file", pki().ca().string()},
                     "did not verify: certificate has expired");
}

TEST(WebhookSecurity, AnHttpsReceiverWithACertificateForAnotherHostIsNotReached) {
  expect_tls_refused(pki().other_host(), {"--webhook-ca-file", pki().ca().string()},
                     "did not verify: IP address mismatch");
  expect_tls_refused(pki().other_host(), {"--webhook-ca-file", pki().ca().string()},
                     "the certificate of localhost did not verify: hostname mismatch", "localhost");
}

// ---- which addresses a webhook may reach (SSRF) -------------------------------------------

TEST(WebhookSecurity, LoopbackLinkLocalAndMetadataAddressesAreRefusedAtConnectTime) {
  receiver v4("127.0.0.1");
  std::unique_ptr<receiver> v6;
  try {
    v6 = std::make_unique<receiver>("::1");
  } catch (const std::exception&) {
    // No IPv6 loopback here: the service must refuse [::1] all the same.
  }
  service_process svc(fresh_db("webhook-ssrf"), {}, true, webhook_addresses::service_defaults);
  const std::string port = std::to_string(v4.port());
  const std::vector<std::pair<std::string, std::string>> cases = {
      {"http://127.0.0.1:" + port + "/", "refused: 127.0.0.1 is a loopback address"},
      // A DNS name that resolves to a loopback address: the address decides, not the name.
      {"http://localhost:" + port + "/", " is a loopback address; see --webhook-allow-network"},
      {"https://localhost:" + port + "/", " is a loopback address"},
      // 127.0.0.1 spelled as one number: the resolver reads it as an address.
      {"http://2130706433:" + port + "/", "refused: 127.0.0.1 is a loopback address"},
      {"http://169.254.169.254/latest/meta-data/",
       "refused: 169.254.169.254 is a cloud metadata address"},
      {"http://[::1]:" + std::to_string(v6 ? v6->port() : 9) + "/",
       "refused: ::1 is a loopback address"},
      {"http://[::ffff:127.0.0.1]:" + port + "/", "refused: ::ffff:127.0.0.1 is a loopback"},
      {"http://10.0.0.1:" + port + "/", "refused: 10.0.0.1 is a private address"},
      {"http://0.0.0.0:" + port + "/", "refused: 0.0.0.0 is an unspecified address"},
  };
  for (const auto& [url, why] : cases) {
    const auto id = svc.submit(job_for(url));
    const auto job = wait_for_notification(svc, id, "failed");
    EXPECT_NE(str(job.at("notification_error")).find(why), std::string::npos)
        << url << ": " << json::serialize(job);
  }
  EXPECT_EQ(v4.connections(), 0);
  if (v6) {
    EXPECT_EQ(v6->connections(), 0);
  }
  // A refusal is final at once: the policy would refuse every retry the same way.
  const std::string metrics = svc.get("/metrics").body;
  EXPECT_NE(metrics.find("service_webhook_retries_total 0\n"), std::string::npos);
  EXPECT_NE(metrics.find("service_webhooks_refused_total 9\n"), std::string::npos);
}

TEST(WebhookSecurity, AnAllowedNetworkIsReachedAndOnlyIt) {
  receiver allowed("127.0.0.2");
  receiver other("127.0.0.1");
  service_process svc(fresh_db("webhook-allow-network"),
                      {"--webhook-allow-network", "127.0.0.2/32", "--webhook-attempts", "1"});
  const auto ok = svc.submit(job_for("http://127.0.0.2:" + std::to_string(allowed.port()) + "/"));
  const auto no = svc.submit(job_for("http://127.0.0.1:" + std::to_string(other.port()) + "/"));
  wait_for_notification(svc, ok, "delivered");
  wait_for_notification(svc, no, "failed");
  EXPECT_EQ(allowed.requests().size(), 1u);
  EXPECT_EQ(other.connections(), 0);
}

TEST(WebhookSecurity, ARedirectToAForbiddenAddressIsNotFollowed) {
  receiver target("127.0.0.1");
  receiver redirector("127.0.0.2", http::status::found,
                      {{"Location", "http://127.0.0.1:" + std::to_string(target.port()) + "/"}});
  service_process svc(fresh_db("webhook-redirect"),
                      {"--webhook-allow-network", "127.0.0.2/32", "--webhook-attempts", "1"});
  const auto id =
      svc.submit(job_for("http://127.0.0.2:" + std::to_string(redirector.port()) + "/hook"));
  const auto job = wait_for_notification(svc, id, "failed");
  EXPECT_EQ(str(job.at("notification_error")), "HTTP 302 (redirects are not followed)");
  EXPECT_EQ(redirector.requests().size(), 1u);
  EXPECT_EQ(target.connections(), 0);
}

}  // namespace
