// The service's front door, end to end: API tokens and their scopes, the refusal to listen on a
// public address by accident, and the rate limit. A real process, a real database, real HTTP.
#include <gtest/gtest.h>

#include <fstream>
#include <sstream>

#include "service_harness.hpp"

using namespace service_test;

namespace {

// Every request that needs a scope, with the scope it needs.
struct endpoint {
  http::verb verb;
  std::string target;
  std::string body;
  std::string scope;
};

auto endpoints(std::int64_t failed_job, std::int64_t queued_job) -> std::vector<endpoint> {
  const std::string failed = "/jobs/" + std::to_string(failed_job);
  return {
      {http::verb::get, "/jobs", "", "read"},
      {http::verb::get, failed, "", "read"},
      {http::verb::get, "/stats", "", "read"},
      {http::verb::get, "/tasks", "", "read"},
      {http::verb::get, "/instances", "", "read"},
      {http::verb::get, "/metrics", "", "read"},
      {http::verb::post, "/jobs", R"({"task": "sleep", "input": {"ms": 1}})", "submit"},
      {http::verb::post, failed + "/retry", "", "admin"},
      {http::verb::delete_, "/jobs/" + std::to_string(queued_job), "", "admin"},
  };
}

auto header(const reply& r, const std::string& name) -> std::string {
  const auto it = r.headers.find(name);
  return it == r.headers.end() ? "" : it->second;
}

auto rank(const std::string& scope) -> int {
  return scope == "read" ? 1 : scope == "submit" ? 2 : 3;
}

// A file for the service's stderr, apart from the database (which may be a PostgreSQL URL).
auto log_file(const std::string& name) -> std::string {
  const auto path = std::filesystem::temp_directory_path() /
                    ("procpool-auth-test-" + std::to_string(::getpid()) + "-" + name + ".stderr");
  std::filesystem::remove(path);
  return path.string();
}

auto read_file(const std::string& path) -> std::string {
  std::ifstream in(path);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

// A job that ends failed (for retry) and one that stays queued until cancelled: a service with
// one worker busy with a long sleep.
struct jobs_to_act_on {
  std::int64_t failed = 0;
  std::int64_t queued = 0;
};

auto make_jobs(service_process& svc) -> jobs_to_act_on {
  jobs_to_act_on j;
  j.failed = svc.submit(R"({"task": "crash", "input": {"signal": "KILL"}})");
  svc.wait_for(j.failed);
  svc.submit(R"({"task": "sleep", "input": {"ms": 60000}})");  // holds the only worker
  j.queued = svc.submit(R"({"task": "sleep", "input": {"ms": 1}})");
  return j;
}

}  // namespace

class AuthScopes : public testing::TestWithParam<std::string> {};

// Each scope gets exactly the endpoints it covers (and those of narrower scopes); the others
// answer 403 naming the scope needed, never 401.
TEST_P(AuthScopes, AScopeAllowsItsEndpointsAndForbidsTheRest) {
  const std::string scope = GetParam();
  const std::string db = fresh_db("scope_" + scope);
  const std::string admin = create_token(db, "admin", "setup");
  const std::string token = create_token(db, scope);
  service_process svc(db, {"--require-tokens", "--workers", "1"});
  svc.use_token(admin);
  const auto jobs = make_jobs(svc);
  for (const auto& e : endpoints(jobs.failed, jobs.queued)) {
    const reply r = call(svc.port(), e.verb, e.target, e.body, bearer(token));
    const std::string what = std::string(http::to_string(e.verb)) + " " + e.target;
    if (rank(scope) >= rank(e.scope)) {
      EXPECT_LT(r.status, 300u) << what << ": " << r.body;
    } else {
      EXPECT_EQ(r.status, 403u) << what << ": " << r.body;
      EXPECT_NE(r.body.find("'" + e.scope + "'"), std::string::npos) << r.body;
      EXPECT_NE(header(r, "WWW-Authenticate").find("insufficient_scope"), std::string::npos);
    }
  }
  // Every scope reads the event stream.
  event_reader events(svc.port(), {}, bearer(token));
  svc.use_token(admin);
  const auto id = svc.submit(R"({"task": "sleep", "input": {"ms": 1}})");
  svc.del("/jobs/" + std::to_string(id));
  events.wait_until([&](const auto& all) {
    return std::any_of(all.begin(), all.end(),
                       [&](const json::object& e) { return e.at("id").as_int64() == id; });
  });
}

INSTANTIATE_TEST_SUITE_P(Auth, AuthScopes, testing::Values("read", "submit", "admin"));

TEST(Auth, ARequestWithoutAValidTokenGets401AndOpenEndpointsStayOpen) {
  const std::string db = fresh_db("no_token");
  const std::string token = create_token(db, "admin");
  service_process svc(db, {"--require-tokens"});
  const std::string wrong_secret =
      token.substr(0, token.size() - 1) + (token.back() == '0' ? "1" : "0");
  for (const std::string& presented : {std::string(), std::string("nonsense"), wrong_secret,
                                       std::string("pp_999_") + std::string(64, 'a')}) {
    for (const char* target : {"/jobs", "/stats", "/metrics"}) {
      const reply r = call(svc.port(), http::verb::get, target, "", bearer(presented));
      EXPECT_EQ(r.status, 401u) << target << " with '" << presented << "': " << r.body;
      EXPECT_TRUE(header(r, "WWW-Authenticate").starts_with("Bearer")) << target;
    }
    const reply post = call(svc.port(), http::verb::post, "/jobs",
                            R"({"task": "sleep", "input": {"ms": 1}})", bearer(presented));
    EXPECT_EQ(post.status, 401u);
  }
  // Not a Bearer scheme: as if there were no token.
  EXPECT_EQ(
      call(svc.port(), http::verb::get, "/jobs", "", {{"Authorization", "Basic " + token}}).status,
      401u);
  // /events without a token: 401 before any stream starts.
  const std::string events = raw(svc.port(), "GET /events HTTP/1.1\r\nHost: x\r\n\r\n");
  EXPECT_TRUE(events.starts_with("HTTP/1.1 401")) << events;
  EXPECT_EQ(svc.get("/healthz").status, 200u);
  EXPECT_EQ(svc.get("/").status, 200u);  // the page, which shows a login form
  EXPECT_EQ(call(svc.port(), http::verb::get, "/jobs", "", bearer(token)).status, 200u);
}

TEST(Auth, OpenMetricsServesMetricsWithoutAToken) {
  const std::string db = fresh_db("open_metrics");
  service_process svc(db, {"--require-tokens", "--open-metrics"});
  EXPECT_EQ(svc.get("/metrics").status, 200u);
  EXPECT_EQ(svc.get("/stats").status, 401u);
}

TEST(Auth, ARevokedTokenIsRefused) {
  const std::string db = fresh_db("revoked");
  const std::string token = create_token(db, "submit");
  const std::string other = create_token(db, "read");
  // No cache: a revocation takes effect at the next request.
  service_process svc(db, {"--require-tokens", "--token-cache-ms", "0"});
  svc.use_token(token);
  ASSERT_EQ(svc.get("/jobs").status, 200u);
  const std::string id = token.substr(3, token.find('_', 3) - 3);
  const auto revoked = run_service_command({"token", "revoke", id, "--db", db});
  ASSERT_EQ(revoked.status, 0) << revoked.err;
  const reply r = svc.get("/jobs");
  EXPECT_EQ(r.status, 401u) << r.body;
  EXPECT_NE(header(r, "WWW-Authenticate").find("invalid_token"), std::string::npos);
  EXPECT_EQ(call(svc.port(), http::verb::get, "/jobs", "", bearer(other)).status, 200u);
  // Revoking it again says there is nothing to revoke.
  EXPECT_EQ(run_service_command({"token", "revoke", id, "--db", db}).status, 1);
}

TEST(Auth, ATokenOfAnotherServicesDatabaseIsRefused) {
  const std::string db = fresh_db("ours");
  const std::string theirs_db = fresh_db("theirs");
  create_token(db, "admin", "ours");  // same id (1) on both databases, another secret
  const std::string theirs = create_token(theirs_db, "admin", "theirs");
  service_process svc(db, {"--require-tokens"});
  const reply r = call(svc.port(), http::verb::get, "/jobs", "", bearer(theirs));
  EXPECT_EQ(r.status, 401u) << r.body;
}

TEST(Auth, TheTokenNeverAppearsInTokenListOrTheLogs) {
  const std::string db = fresh_db("secret");
  const std::string token = create_token(db, "admin", "ci runner");
  const std::string secret = token.substr(token.rfind('_') + 1);
  const auto list = run_service_command({"token", "list", "--db", db});
  ASSERT_EQ(list.status, 0) << list.err;
  EXPECT_NE(list.out.find("ci runner"), std::string::npos) << list.out;
  EXPECT_NE(list.out.find("admin"), std::string::npos) << list.out;
  EXPECT_EQ(list.out.find(secret), std::string::npos) << list.out;
  EXPECT_EQ(list.err.find(secret), std::string::npos);
  // Nor, in clear, in the database.
  const auto rows = query(db, "SELECT hash FROM api_tokens");
  ASSERT_EQ(rows.size(), 1u);
  EXPECT_EQ(rows[0][0].find(secret), std::string::npos);

  const std::string log = log_file("secret");
  {
    service_process svc(db, {"--require-tokens"}, true, webhook_addresses::loopback_allowed, log);
    svc.use_token(token);
    const auto id = svc.submit(R"({"task": "crash", "input": {"signal": "SEGV"}})");
    svc.wait_for(id);
    EXPECT_EQ(call(svc.port(), http::verb::get, "/jobs", "", bearer(token + "x")).status, 401u);
    EXPECT_EQ(svc.stop(SIGTERM), 0);
    EXPECT_EQ(svc.rest_of_output().find(secret), std::string::npos);
    EXPECT_EQ(svc.banner().find(secret), std::string::npos);
  }
  const std::string logged = read_file(log);
  EXPECT_FALSE(logged.empty());  // the crash was logged: the log was captured
  EXPECT_EQ(logged.find(secret), std::string::npos) << logged;
}

TEST(Auth, WithoutRequireTokensATokenIsNotNeeded) {
  const std::string db = fresh_db("open");
  service_process svc(db);
  EXPECT_EQ(svc.get("/jobs").status, 200u);
  EXPECT_EQ(svc.post(R"({"task": "sleep", "input": {"ms": 1}})").status, 202u);
}

// A page on any site can make the browser POST to a service on loopback: without tokens, the
// browser's Origin and Sec-Fetch-Site headers are what tells such a request apart. Clients that
// are not browsers (curl, the harness) send neither.
TEST(Auth, WithoutTokensARequestFromAnotherSitesPageChangesNothing) {
  service_process svc(fresh_db("cross_site"));
  const std::string body = R"({"task": "sleep", "input": {"ms": 1}})";
  const auto from_evil =
      call(svc.port(), http::verb::post, "/jobs", body, {{"Origin", "http://evil.example"}});
  EXPECT_EQ(from_evil.status, 403u) << from_evil.body;
  EXPECT_NE(from_evil.body.find("another site"), std::string::npos) << from_evil.body;
  const auto fetch_site =
      call(svc.port(), http::verb::post, "/jobs", body, {{"Sec-Fetch-Site", "cross-site"}});
  EXPECT_EQ(fetch_site.status, 403u);
  const auto null_origin = call(svc.port(), http::verb::post, "/jobs", body, {{"Origin", "null"}});
  EXPECT_EQ(null_origin.status, 403u);
  EXPECT_EQ(svc.get("/jobs").json().at("jobs").as_array().size(), 0u);
  // The dashboard's own requests (same origin: Origin is the Host it was served from), and a
  // client that sends no Origin, are served.
  const auto same_origin =
      call(svc.port(), http::verb::post, "/jobs", body,
           {{"Origin", "http://127.0.0.1"}, {"Sec-Fetch-Site", "same-origin"}});
  EXPECT_EQ(same_origin.status, 202u) << same_origin.body;
  EXPECT_EQ(svc.post(body).status, 202u);
  // Reading is not refused (the browser's same-origin policy keeps the answer from the page).
  EXPECT_EQ(
      call(svc.port(), http::verb::get, "/jobs", "", {{"Origin", "http://evil.example"}}).status,
      200u);
}

TEST(Auth, TokenCommandsSayWhatIsWrong) {
  const std::string db = fresh_db("commands");
  const auto no_scope = run_service_command({"token", "create", "--db", db});
  EXPECT_EQ(no_scope.status, 2);
  EXPECT_NE(no_scope.err.find("--scope read, submit or admin"), std::string::npos) << no_scope.err;
  const auto bad_scope = run_service_command({"token", "create", "--scope", "root", "--db", db});
  EXPECT_EQ(bad_scope.status, 2);
  const auto no_action = run_service_command({"token", "--db", db});
  EXPECT_EQ(no_action.status, 2);
  EXPECT_NE(no_action.err.find("create, list or revoke"), std::string::npos) << no_action.err;
  EXPECT_EQ(run_service_command({"token", "revoke", "41", "--db", db}).status, 1);
}

// --- the dashboard's session cookie ---

TEST(Session, ATokenPostedToSessionBecomesACookieAcceptedLikeTheHeader) {
  const std::string db = fresh_db("session");
  const std::string token = create_token(db, "submit");
  service_process svc(db, {"--require-tokens"});
  const reply bad =
      call(svc.port(), http::verb::post, "/session", "", bearer("pp_1_" + std::string(64, '0')));
  EXPECT_EQ(bad.status, 401u) << bad.body;
  EXPECT_EQ(header(bad, "Set-Cookie"), "");
  EXPECT_EQ(call(svc.port(), http::verb::post, "/session").status, 401u);

  const reply signed_in = call(svc.port(), http::verb::post, "/session", "", bearer(token));
  ASSERT_EQ(signed_in.status, 200u) << signed_in.body;
  EXPECT_EQ(header(signed_in, "Set-Cookie"),
            "procpool_session=" + token + "; HttpOnly; SameSite=Strict; Path=/");
  EXPECT_EQ(signed_in.json().at("scope").as_string(), "submit");

  const header_list cookie = {{"Cookie", "theme=dark; procpool_session=" + token}};
  EXPECT_EQ(call(svc.port(), http::verb::get, "/jobs", "", cookie).status, 200u);
  const std::string job = R"({"task": "sleep", "input": {"ms": 1}})";
  // A change made with the cookie alone could come from a form on another page: refused.
  const reply forged = call(svc.port(), http::verb::post, "/jobs", job, cookie);
  EXPECT_EQ(forged.status, 403u);
  EXPECT_NE(forged.body.find("X-Procpool-Request: 1"), std::string::npos) << forged.body;
  header_list from_page = cookie;
  from_page.emplace_back("X-Procpool-Request", "1");
  const reply accepted = call(svc.port(), http::verb::post, "/jobs", job, from_page);
  ASSERT_EQ(accepted.status, 202u) << accepted.body;
  // The cookie's token keeps its scope.
  const std::string target = "/jobs/" + std::to_string(accepted.json().at("id").as_int64());
  EXPECT_EQ(call(svc.port(), http::verb::delete_, target, "", from_page).status, 403u);
  // /events with the cookie, as EventSource sends it.
  event_reader events(svc.port(), {}, cookie);
  // A cookie with a wrong token is refused like the header.
  EXPECT_EQ(call(svc.port(), http::verb::get, "/jobs", "",
                 {{"Cookie", "procpool_session=" + token + "0"}})
                .status,
            401u);

  const reply signed_out = call(svc.port(), http::verb::delete_, "/session");
  EXPECT_EQ(signed_out.status, 200u);
  EXPECT_NE(header(signed_out, "Set-Cookie").find("Max-Age=0"), std::string::npos);
}

// --- exposure ---

TEST(Exposure, ANonLoopbackAddressWithoutTlsAndTokensIsRefusedSayingWhichFlagsToSet) {
  const std::string db = fresh_db("exposed");
  for (const std::vector<std::string>& extra :
       {std::vector<std::string>{}, std::vector<std::string>{"--require-tokens"}}) {
    std::vector<std::string> args = {"--address", "0.0.0.0", "--port", "0", "--db", db};
    args.insert(args.end(), extra.begin(), extra.end());
    const auto r = run_service_command(args);
    EXPECT_EQ(r.status, 2) << r.out << r.err;
    EXPECT_NE(r.err.find("not a loopback address"), std::string::npos) << r.err;
    EXPECT_NE(r.err.find("--tls-cert"), std::string::npos) << r.err;
    EXPECT_NE(r.err.find("--insecure"), std::string::npos) << r.err;
    EXPECT_EQ(r.err.find("--require-tokens") != std::string::npos, extra.empty()) << r.err;
    EXPECT_EQ(r.out.find("listening"), std::string::npos) << r.out;
  }
}

TEST(Exposure, ASwitchSetToZeroInTheEnvironmentIsOff) {
  const std::string db = fresh_db("exposed_env");
  ::setenv("PROCPOOL_SERVICE_INSECURE", "0", 1);
  const auto r = run_service_command({"--address", "0.0.0.0", "--port", "0", "--db", db});
  ::unsetenv("PROCPOOL_SERVICE_INSECURE");
  EXPECT_EQ(r.status, 2) << r.out << r.err;
  EXPECT_NE(r.err.find("refusing to listen on 0.0.0.0"), std::string::npos) << r.err;
}

TEST(Exposure, LoopbackAddressesNeedNothing) {
  int n = 0;
  for (const char* address : {"127.0.0.1", "127.1.2.3", "::1"}) {
    const std::string db = fresh_db("loopback" + std::to_string(n++));
    service_process svc(db, {"--address", address});
    EXPECT_NE(svc.banner().find("listening on"), std::string::npos);
  }
}

TEST(Exposure, InsecureStartsWithALoudWarning) {
  const std::string db = fresh_db("insecure");
  const std::string log = log_file("insecure");
  service_process svc(db, {"--address", "0.0.0.0", "--insecure"}, true,
                      webhook_addresses::loopback_allowed, log);
  EXPECT_EQ(svc.get("/healthz").status, 200u);
  EXPECT_NE(read_file(log).find("WARNING: --insecure"), std::string::npos) << read_file(log);
}

// --- rate limit ---

TEST(RateLimit, AClientOverItsBurstGets429WithRetryAfterAndOtherTokensAreUnaffected) {
  const std::string db = fresh_db("rate");
  const std::string first = create_token(db, "read", "first");
  const std::string second = create_token(db, "read", "second");
  // One request a minute after a burst of three: nothing refills during the test.
  service_process svc(db, {"--require-tokens", "--rate-limit", "1/min", "--rate-burst", "3"});
  for (int i = 0; i < 3; ++i) {
    EXPECT_EQ(call(svc.port(), http::verb::get, "/jobs", "", bearer(first)).status, 200u) << i;
  }
  const reply limited = call(svc.port(), http::verb::get, "/jobs", "", bearer(first));
  ASSERT_EQ(limited.status, 429u) << limited.body;
  EXPECT_GE(std::stoi(limited.headers.at("Retry-After")), 1);
  EXPECT_LE(std::stoi(limited.headers.at("Retry-After")), 60);
  EXPECT_EQ(call(svc.port(), http::verb::get, "/jobs", "", bearer(second)).status, 200u);
  // /healthz is never limited (load balancers probe it often).
  EXPECT_EQ(svc.get("/healthz").status, 200u);
}

TEST(RateLimit, RequestsWithoutAValidTokenCountAgainstTheirAddress) {
  const std::string db = fresh_db("rate_guessing");
  const std::string token = create_token(db, "read");
  service_process svc(db, {"--require-tokens", "--rate-limit", "1/min", "--rate-burst", "2"});
  const std::string guess = "pp_1_" + std::string(64, 'f');
  EXPECT_EQ(call(svc.port(), http::verb::get, "/jobs", "", bearer(guess)).status, 401u);
  EXPECT_EQ(svc.get("/jobs").status, 401u);
  const reply limited = call(svc.port(), http::verb::get, "/jobs", "", bearer(guess));
  EXPECT_EQ(limited.status, 429u) << limited.body;
  EXPECT_GE(std::stoi(header(limited, "Retry-After")), 1);
  // Nor can the dashboard's sign-in be used to try tokens.
  EXPECT_EQ(call(svc.port(), http::verb::post, "/session", "", bearer(guess)).status, 429u);
  // A valid token has a bucket of its own.
  EXPECT_EQ(call(svc.port(), http::verb::get, "/jobs", "", bearer(token)).status, 200u);
}

TEST(RateLimit, WithoutTokensClientsAreLimitedByAddress) {
  const std::string db = fresh_db("rate_anonymous");
  service_process svc(db, {"--rate-limit", "1/min", "--rate-burst", "2"});
  EXPECT_EQ(svc.get("/jobs").status, 200u);
  EXPECT_EQ(svc.get("/stats").status, 200u);
  const reply limited = svc.get("/jobs");
  EXPECT_EQ(limited.status, 429u) << limited.body;
  EXPECT_TRUE(limited.headers.contains("Retry-After"));
}

TEST(RateLimit, ABadRateSaysWhatIsExpected) {
  const auto r = run_service_command({"--rate-limit", "fast"});
  EXPECT_EQ(r.status, 2);
  EXPECT_NE(r.err.find("20/s"), std::string::npos) << r.err;
}
