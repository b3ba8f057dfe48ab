// End-to-end tests of procpool-service's HTTP API: a real process, a real SQLite file, a real
// HTTP client over loopback.
#include <gtest/gtest.h>

#include <algorithm>

#include "service_harness.hpp"

using namespace service_test;

namespace {

auto str(const json::value& v) -> std::string {
  return std::string(v.as_string());
}

}  // namespace

TEST(ServiceApi, AJobRunsAndItsResultIsStored) {
  service_process svc(fresh_db("runs"));
  const reply accepted = svc.post(R"({"task": "count_primes", "input": {"n": 100}})");
  ASSERT_EQ(accepted.status, 202u) << accepted.body;
  const auto id = accepted.json().at("id").as_int64();
  EXPECT_EQ(accepted.headers.at("Location"), "/jobs/" + std::to_string(id));

  const json::object job = svc.wait_for(id);
  EXPECT_EQ(str(job.at("state")), "succeeded");
  EXPECT_EQ(job.at("result").at("primes").as_int64(), 25);
  EXPECT_EQ(job.at("attempts").as_int64(), 1);
  EXPECT_TRUE(job.at("created_at").is_string());
  EXPECT_TRUE(job.at("started_at").is_string());
  EXPECT_TRUE(job.at("finished_at").is_string());
  EXPECT_TRUE(job.at("error").is_null());
}

static void expect_every_builtin_computation(service_process& svc) {
  const auto sha = svc.submit(R"({"task": "sha256_chain", "input": {"data": "abc", "rounds": 1}})");
  const auto sorted = svc.submit(R"({"task": "sort", "input": {"count": 1000, "seed": 7}})");
  const auto tile = svc.submit(
      R"({"task": "mandelbrot", "input": {"width": 40, "height": 30, "max_iterations": 100}})");
  const auto slept = svc.submit(R"({"task": "sleep", "input": {"ms": 1}})");

  EXPECT_EQ(str(svc.wait_for(sha).at("result").at("digest")),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  const json::object s = svc.wait_for(sorted);
  EXPECT_EQ(s.at("result").at("count").as_int64(), 1000);
  EXPECT_LE(s.at("result").at("min").to_number<std::uint64_t>(),
            s.at("result").at("median").to_number<std::uint64_t>());
  const json::object m = svc.wait_for(tile);
  EXPECT_EQ(m.at("result").at("points").as_int64(), 1200);
  EXPECT_GT(m.at("result").at("inside").as_int64(), 0);
  EXPECT_EQ(str(svc.wait_for(slept).at("state")), "succeeded");
}

TEST(ServiceApi, EveryBuiltInComputationReturnsItsResult) {
  service_process svc(fresh_db("builtins"));
  expect_every_builtin_computation(svc);
}

// --sandbox: the same computations (OpenSSL's digest included) inside compute_only(), and a
// crash still names its signal and stderr.
TEST(ServiceApi, EveryBuiltInComputationRunsInsideTheSandbox) {
  service_process svc(fresh_db("builtins_sandboxed"), {"--sandbox"});
  expect_every_builtin_computation(svc);
  const auto crashed = svc.submit(R"({"task": "crash", "input": {"signal": "SEGV"}})");
  const json::object job = svc.wait_for(crashed);
  EXPECT_EQ(str(job.at("state")), "failed");
  EXPECT_EQ(job.at("error").at("signal").as_int64(), SIGSEGV);
}

TEST(ServiceApi, ATaskRegisteredByTheProgramRuns) {
  service_process svc(fresh_db("custom"));
  const auto id = svc.submit(R"({"task": "collatz", "input": {"below": 1000000}})");
  const json::object job = svc.wait_for(id);
  EXPECT_EQ(job.at("result").at("start").as_int64(), 837799);
  EXPECT_EQ(job.at("result").at("steps").as_int64(), 524);
}

TEST(ServiceApi, AThrowingTaskFailsWithItsTypeAndMessage) {
  service_process svc(fresh_db("throws"));
  const auto id = svc.submit(R"({"task": "throw", "input": {"message": "row 7 is bad"}})");
  const json::object job = svc.wait_for(id);
  EXPECT_EQ(str(job.at("state")), "failed");
  EXPECT_EQ(str(job.at("error").at("type")), "std::runtime_error");
  EXPECT_EQ(str(job.at("error").at("message")), "row 7 is bad");
}

TEST(ServiceApi, ACrashFailsOnlyItsJobAndNamesPidSignalAndStderr) {
  service_process svc(fresh_db("crash"), {"--workers", "2"});
  const auto crashed = svc.submit(R"({"task": "crash", "input": {"signal": "SEGV"}})");
  const json::object job = svc.wait_for(crashed);
  EXPECT_EQ(str(job.at("state")), "failed");
  const json::value& error = job.at("error");
  EXPECT_EQ(str(error.at("type")), "worker_crashed");
  EXPECT_EQ(error.at("signal").as_int64(), SIGSEGV);
  EXPECT_GT(error.at("pid").as_int64(), 0);
  EXPECT_NE(str(error.at("output_tail")).find("about to die"), std::string::npos);
  EXPECT_NE(str(error.at("message")).find("SIGSEGV"), std::string::npos);
  // The pool healed: the next job runs.
  const auto after = svc.submit(R"({"task": "count_primes", "input": {"n": 10}})");
  EXPECT_EQ(str(svc.wait_for(after).at("state")), "succeeded");
}

TEST(ServiceApi, ATimeoutKillsTheWorkerAndFailsTheJobAsTimedOut) {
  service_process svc(fresh_db("timeout"), {"--workers", "1"});
  const auto id = svc.submit(R"({"task": "hang", "timeout_ms": 200})");
  const json::object job = svc.wait_for(id);
  EXPECT_EQ(str(job.at("state")), "timed_out");
  EXPECT_EQ(str(job.at("error").at("type")), "timeout");
  EXPECT_EQ(job.at("error").at("timeout_ms").as_int64(), 200);
  // The only worker was killed and replaced: the next job runs.
  const auto after = svc.submit(R"({"task": "count_primes", "input": {"n": 10}})");
  EXPECT_EQ(str(svc.wait_for(after).at("state")), "succeeded");
  EXPECT_NE(svc.get("/metrics").body.find("procpool_tasks_timed_out_total 1\n"), std::string::npos);
}

TEST(ServiceApi, DeleteCancelsAQueuedJobAndKillsTheWorkerOfARunningOne) {
  service_process svc(fresh_db("cancel"), {"--workers", "1", "--default-timeout-ms", "0"});
  const auto running = svc.submit(R"({"task": "hang"})");
  svc.wait_for(running, "running");
  const auto queued = svc.submit(R"({"task": "sleep", "input": {"ms": 1}})");
  EXPECT_EQ(str(svc.get("/jobs/" + std::to_string(queued)).json().at("state")), "queued");

  const reply q = svc.del("/jobs/" + std::to_string(queued));
  ASSERT_EQ(q.status, 200u) << q.body;
  EXPECT_EQ(str(q.json().at("state")), "cancelled");
  EXPECT_TRUE(q.json().at("started_at").is_null());  // it never ran

  const reply r = svc.del("/jobs/" + std::to_string(running));
  ASSERT_EQ(r.status, 200u) << r.body;
  EXPECT_EQ(str(r.json().at("state")), "cancelled");
  EXPECT_NE(svc.get("/metrics").body.find("procpool_tasks_cancelled_total 1\n"), std::string::npos);

  // Already ended: 409 with the job; unknown: 404.
  const reply again = svc.del("/jobs/" + std::to_string(running));
  EXPECT_EQ(again.status, 409u);
  EXPECT_EQ(str(again.json().at("job").at("state")), "cancelled");
  EXPECT_EQ(svc.del("/jobs/999999").status, 404u);
  // The killed worker was replaced.
  const auto after = svc.submit(R"({"task": "count_primes", "input": {"n": 10}})");
  EXPECT_EQ(str(svc.wait_for(after).at("state")), "succeeded");
}

TEST(ServiceApi, ListsJobsNewestFirstFilteredByStateWithALimit) {
  service_process svc(fresh_db("list"));
  std::vector<std::int64_t> ok;
  for (int i = 0; i < 3; ++i)
    ok.push_back(svc.submit(R"({"task": "count_primes", "input": {"n": 10}})"));
  const auto bad = svc.submit(R"({"task": "throw"})");
  for (auto id : ok) svc.wait_for(id);
  svc.wait_for(bad);

  const json::object all = svc.get("/jobs").json().as_object();
  ASSERT_EQ(all.at("jobs").as_array().size(), 4u);
  EXPECT_EQ(all.at("jobs").as_array()[0].at("id").as_int64(), bad);

  const json::object page = svc.get("/jobs?state=succeeded&limit=2").json().as_object();
  ASSERT_EQ(page.at("jobs").as_array().size(), 2u);
  EXPECT_EQ(page.at("jobs").as_array()[0].at("id").as_int64(), ok[2]);
  EXPECT_EQ(page.at("next_before").as_int64(), ok[1]);
  const json::object next =
      svc.get("/jobs?state=succeeded&limit=2&before=" + std::to_string(ok[1])).json().as_object();
  ASSERT_EQ(next.at("jobs").as_array().size(), 1u);
  EXPECT_EQ(next.at("jobs").as_array()[0].at("id").as_int64(), ok[0]);

  const json::object failed = svc.get("/jobs?state=failed").json().as_object();
  ASSERT_EQ(failed.at("jobs").as_array().size(), 1u);
}

TEST(ServiceApi, BadRequestsGetAClear4xxAndChangeNothing) {
  service_process svc(fresh_db("bad"), {"--max-body-bytes", "4096"});
  struct bad_case {
    http::verb verb;
    std::string target, body;
    unsigned status;
    std::string says;
  };
  const std::vector<bad_case> cases = {
      {http::verb::post, "/jobs", "{not json", 400, "not JSON"},
      {http::verb::post, "/jobs", "[1, 2]", 400, "JSON object"},
      {http::verb::post, "/jobs", R"({"input": {}})", 400, "'task' is required"},
      {http::verb::post, "/jobs", R"({"task": "mine_bitcoin"})", 400,
       "unknown task 'mine_bitcoin'"},
      {http::verb::post, "/jobs", R"({"task": "count_primes", "input": {"n": "many"}})", 400,
       "input.n: must be an integer"},
      {http::verb::post, "/jobs", R"({"task": "count_primes", "input": {"n": -1}})", 400,
       "input.n: must be between"},
      {http::verb::post, "/jobs", R"({"task": "sort", "input": {"seed": 18446744073709551615}})",
       400, "input.seed: must be between"},
      {http::verb::post, "/jobs", R"({"task": "count_primes", "input": 5})", 400,
       "'input' must be a JSON object"},
      {http::verb::post, "/jobs", R"({"task": "sleep", "timeout_ms": 0})", 400, "'timeout_ms'"},
      {http::verb::post, "/jobs", R"({"task": "sleep", "timeout_ms": "soon"})", 400,
       "'timeout_ms'"},
      {http::verb::post, "/jobs", R"({"task": "sleep", "notify_url": "ftp://x.example/"})", 400,
       "'notify_url'"},
      {http::verb::post, "/jobs", R"({"task": "sleep", "priority": 5000})", 400,
       "'priority' must be an integer from -1000 to 1000"},
      {http::verb::post, "/jobs", R"({"task": "sleep", "owner": "me"})", 400,
       "unknown field 'owner'"},
      {http::verb::post, "/jobs",
       R"({"task": "sleep", "input": {"ms": 1}, "x": )" + std::string(5000, ' ') + "1}", 413,
       "too large"},
      {http::verb::get, "/jobs/abc", "", 400, "positive integer"},
      {http::verb::get, "/jobs/-3", "", 400, "positive integer"},
      {http::verb::get, "/jobs/99999999999999999999", "", 400, "positive integer"},
      {http::verb::get, "/jobs/4242", "", 404, "no job 4242"},
      {http::verb::get, "/jobs?state=sleeping", "", 400, "state must be one of"},
      {http::verb::get, "/jobs?limit=0", "", 400, "limit"},
      {http::verb::get, "/jobs?order=asc", "", 400, "unknown parameter"},
      {http::verb::put, "/jobs", "", 405, "method not allowed"},
      {http::verb::post, "/metrics", "", 405, "method not allowed"},
      {http::verb::get, "/admin", "", 404, "no such endpoint"},
  };
  for (const auto& c : cases) {
    const reply r = call(svc.port(), c.verb, c.target, c.body);
    EXPECT_EQ(r.status, c.status) << c.target << " " << c.body.substr(0, 80) << " -> " << r.body;
    EXPECT_NE(r.body.find(c.says), std::string::npos) << r.body;
  }
  // Not HTTP at all, a broken header, a huge header: 400/413 and the connection closed.
  EXPECT_NE(raw(svc.port(), "HELLO\r\n\r\n").find("400 Bad Request"), std::string::npos);
  EXPECT_NE(raw(svc.port(), "GET / HTTP/1.1\r\nHost\r\n\r\n").find("400"), std::string::npos);
  EXPECT_NE(
      raw(svc.port(), "GET / HTTP/1.1\r\nX: " + std::string(20000, 'a') + "\r\n\r\n").find("413"),
      std::string::npos);
  EXPECT_NE(raw(svc.port(), "POST /jobs HTTP/1.1\r\nContent-Length: 99999999999999999999\r\n\r\n")
                .find("HTTP/1.1 4"),
            std::string::npos);
  raw(svc.port(), "POST /jobs HTTP/1.1\r\nContent-Length: 50\r\n\r\n{\"task\"");  // cut short

  // Nothing was stored, and the service still serves.
  EXPECT_EQ(svc.get("/jobs").json().at("jobs").as_array().size(), 0u);
  EXPECT_EQ(svc.get("/healthz").status, 200u);
  const auto id = svc.submit(R"({"task": "count_primes", "input": {"n": 10}})");
  EXPECT_EQ(str(svc.wait_for(id).at("state")), "succeeded");
}

TEST(ServiceApi, ConnectionsBeyondTheLimitGet503AndTheServiceKeepsServing) {
  service_process svc(fresh_db("connections"), {"--max-connections", "2"});
  {
    // Two idle connections hold the limit; a third is told to come back.
    asio::io_context ioc;
    tcp::socket a(ioc), b(ioc);
    a.connect(tcp::endpoint(asio::ip::make_address("127.0.0.1"), svc.port()));
    b.connect(tcp::endpoint(asio::ip::make_address("127.0.0.1"), svc.port()));
    const std::string answer = raw(svc.port(), "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n");
    EXPECT_NE(answer.find("503 Service Unavailable"), std::string::npos) << answer;
    EXPECT_NE(answer.find("Retry-After: 1"), std::string::npos) << answer;
  }
  // Once they close, new connections are served. (The server notices a close on its next read.)
  const auto deadline = std::chrono::steady_clock::now() + hang_guard;
  while (raw(svc.port(), "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n").find("200 OK") ==
         std::string::npos) {
    ASSERT_LT(std::chrono::steady_clock::now(), deadline);
    std::this_thread::sleep_for(10ms);
  }
}

TEST(ServiceApi, AFullQueueAnswers429WithRetryAfter) {
  service_process svc(fresh_db("full"),
                      {"--workers", "1", "--max-active-jobs", "2", "--default-timeout-ms", "0"});
  const auto a = svc.submit(R"({"task": "hang"})");
  const auto b = svc.submit(R"({"task": "hang"})");
  const reply full = svc.post(R"({"task": "hang"})");
  EXPECT_EQ(full.status, 429u);
  EXPECT_EQ(full.headers.at("Retry-After"), "1");
  EXPECT_NE(svc.get("/metrics").body.find("service_jobs_rejected_total 1\n"), std::string::npos);
  // Room again once a job ends.
  EXPECT_EQ(svc.del("/jobs/" + std::to_string(b)).status, 200u);
  const auto c = svc.submit(R"({"task": "sleep", "input": {"ms": 1}})");
  EXPECT_EQ(svc.del("/jobs/" + std::to_string(a)).status, 200u);
  EXPECT_EQ(str(svc.wait_for(c).at("state")), "succeeded");
}

TEST(ServiceApi, InputHeldByWaitingJobsIsBoundedToo) {
  service_process svc(fresh_db("full-bytes"), {"--workers", "1", "--max-active-input-mb", "1",
                                               "--default-timeout-ms", "0"});
  const auto running = svc.submit(R"({"task": "hang"})");
  const std::string big = R"({"task": "sha256_chain", "input": {"rounds": 1, "data": ")" +
                          std::string(600'000, 'x') + R"("}})";
  const auto first = svc.submit(big);  // 600 kB of the 1 MiB
  const reply full = svc.post(big);
  EXPECT_EQ(full.status, 429u);
  EXPECT_NE(full.body.find("MiB of input"), std::string::npos) << full.body;
  // Small jobs still fit; the big one fits again once the first has ended.
  const auto small = svc.submit(R"({"task": "sleep", "input": {"ms": 1}})");
  EXPECT_EQ(svc.del("/jobs/" + std::to_string(running)).status, 200u);
  svc.wait_for(first);
  svc.wait_for(small);
  const auto again = svc.submit(big);
  EXPECT_EQ(str(svc.wait_for(again).at("state")), "succeeded");
}

TEST(ServiceApi, EventsStreamEveryStateChangeInOrder) {
  service_process svc(fresh_db("events"));
  event_reader events(svc.port());
  const auto id = svc.submit(R"({"task": "count_primes", "input": {"n": 1000}})");
  const auto seen = events.wait_until([&](const std::vector<json::object>& all) {
    for (const auto& e : all) {
      if (e.at("id").as_int64() == id && e.at("state").as_string() == "succeeded") return true;
    }
    return false;
  });
  std::vector<std::string> states;
  for (const auto& e : seen) {
    if (e.at("id").as_int64() == id) states.push_back(str(e.at("state")));
  }
  EXPECT_EQ(states, (std::vector<std::string>{"queued", "running", "succeeded"}));
  EXPECT_EQ(seen.back().at("result").at("primes").as_int64(), 168);
}

TEST(ServiceApi, AnEventsClientThatReconnectsWithLastEventIdCatchesUp) {
  service_process svc(fresh_db("events-replay"));
  const auto ended = [](std::int64_t id) {
    return [id](const std::vector<json::object>& all) {
      for (const auto& e : all) {
        if (e.at("id").as_int64() == id && e.at("state").as_string() == "succeeded") return true;
      }
      return false;
    };
  };
  std::int64_t last_seen = 0;
  const auto before = svc.submit(R"({"task": "count_primes", "input": {"n": 100}})");
  {
    event_reader first(svc.port());
    svc.wait_for(before);
    const auto seen = svc.submit(R"({"task": "count_primes", "input": {"n": 100}})");
    last_seen = first.wait_until(ended(seen)).back().at("seq").as_int64();
  }
  // While no client listens, a job runs.
  const auto missed = svc.submit(R"({"task": "count_primes", "input": {"n": 1000}})");
  svc.wait_for(missed);

  event_reader again(svc.port(), last_seen);
  const auto live = svc.submit(R"({"task": "count_primes", "input": {"n": 10}})");
  const auto events = again.wait_until(ended(live));
  // Every change of the missed job comes first, once each, as the job was at that change;
  // nothing from before Last-Event-ID.
  ASSERT_GE(events.size(), 3u);
  for (std::size_t i = 0; i < 3; ++i) EXPECT_EQ(events[i].at("id").as_int64(), missed);
  EXPECT_EQ(str(events[0].at("state")), "queued");
  EXPECT_TRUE(events[0].at("result").is_null());
  EXPECT_EQ(str(events[1].at("state")), "running");
  EXPECT_TRUE(events[1].at("finished_at").is_null());
  EXPECT_EQ(str(events[2].at("state")), "succeeded");
  EXPECT_EQ(events[2].at("result").at("primes").as_int64(), 168);
  std::int64_t previous = last_seen;
  for (const auto& e : events) {
    EXPECT_NE(e.at("id").as_int64(), before);
    EXPECT_GT(e.at("seq").as_int64(), previous);  // in order, no repeats
    previous = e.at("seq").as_int64();
  }
}

TEST(ServiceApi, MetricsHealthAndTasksDescribeTheService) {
  service_process svc(fresh_db("metrics"), {"--workers", "2"});
  const auto id = svc.submit(R"({"task": "count_primes", "input": {"n": 10}})");
  svc.wait_for(id);
  const reply m = svc.get("/metrics");
  EXPECT_EQ(m.status, 200u);
  EXPECT_NE(m.headers.at("Content-Type").find("text/plain"), std::string::npos);
  for (const char* line :
       {"service_jobs{state=\"succeeded\"} 1\n", "service_jobs_accepted_total 1\n",
        "procpool_workers 2\n", "service_job_total_seconds_count 1\n",
        "procpool_tasks_completed_total 1\n"}) {
    EXPECT_NE(m.body.find(line), std::string::npos) << line;
  }
  const reply h = svc.get("/healthz");
  EXPECT_EQ(h.status, 200u);
  EXPECT_EQ(str(h.json().at("status")), "ok");
  const reply t = svc.get("/tasks");
  EXPECT_EQ(t.json().at("tasks").as_array().size(), 10u);
}

TEST(ServiceApi, TasksDescribeTheirInputFieldsFromTheirOwnParse) {
  service_process svc(fresh_db("task-fields"));
  const json::array tasks = svc.get("/tasks").json().at("tasks").as_array();
  auto find = [&](std::string_view name) -> const json::object& {
    for (const auto& t : tasks) {
      if (t.at("name").as_string() == name) return t.as_object();
    }
    throw std::runtime_error("no task " + std::string(name));
  };
  const json::array& n = find("count_primes").at("fields").as_array();
  ASSERT_EQ(n.size(), 1u);
  EXPECT_EQ(str(n[0].at("name")), "n");
  EXPECT_EQ(str(n[0].at("type")), "integer");
  EXPECT_EQ(n[0].at("minimum").as_int64(), 0);
  EXPECT_EQ(n[0].at("maximum").as_int64(), 400'000'000);
  EXPECT_EQ(n[0].at("default").as_int64(), 1'000'000);
  const json::array& sha = find("sha256_chain").at("fields").as_array();
  ASSERT_EQ(sha.size(), 2u);
  EXPECT_EQ(str(sha[0].at("type")), "string");
  EXPECT_EQ(str(sha[0].at("default")), "procpool");
  EXPECT_EQ(find("mandelbrot").at("fields").as_array().size(), 6u);
  EXPECT_TRUE(find("hang").at("fields").as_array().empty());
  EXPECT_EQ(find("collatz").at("fields").as_array().size(), 1u);  // the program's own task
}

TEST(ServiceApi, ARunningJobShowsItsLatestProgressOnGetAndOnEvents) {
  service_process svc(fresh_db("progress"), {"--workers", "1"});
  event_reader events(svc.port());
  const auto id = svc.submit(R"({"task": "sleep", "input": {"ms": 1500}})");
  // Progress events name the job and advance; they are not state changes.
  const auto progress = events.wait_for_others([&](const std::vector<json::object>& all) {
    return std::count_if(all.begin(), all.end(), [&](const json::object& e) {
             return e.at("event") == "progress" && e.at("id").as_int64() == id &&
                    e.at("done").as_int64() > 0;
           }) >= 2;
  });
  const reply running = svc.get("/jobs/" + std::to_string(id));
  ASSERT_EQ(str(running.json().at("state")), "running") << running.body;
  const json::object p = running.json().at("progress").as_object();
  EXPECT_EQ(p.at("total").as_int64(), 1500);
  EXPECT_EQ(str(p.at("message")), "ms");
  EXPECT_FALSE(p.at("updated_at").is_null());
  // In the list as well.
  const json::value listed = svc.get("/jobs?state=running").json().at("jobs").as_array().at(0);
  EXPECT_TRUE(listed.as_object().contains("progress"));

  const json::value done = svc.wait_for(id);
  EXPECT_EQ(str(done.at("state")), "succeeded");
  EXPECT_FALSE(done.as_object().contains("progress"));
  // Throttled: the task reports every 50 ms (about 30 reports); at most one event per 250 ms
  // goes out (about 6), with slack for a slow machine — far fewer than the reports, in order.
  std::int64_t last = -1;
  int count = 0;
  for (const auto& e : events.wait_for_others([](const auto&) { return true; })) {
    if (e.at("event") != "progress" || e.at("id").as_int64() != id) continue;
    EXPECT_GT(e.at("done").as_int64(), last);
    last = e.at("done").as_int64();
    ++count;
  }
  EXPECT_LE(count, 15);
  // The job's state changes all arrived, in order, beside the progress events.
  const auto changes = events.wait_until([id](const std::vector<json::object>& all) {
    return !all.empty() && all.back().at("id").as_int64() == id &&
           all.back().at("state").as_string() == "succeeded";
  });
  ASSERT_EQ(changes.size(), 3u);  // queued, running, succeeded
  EXPECT_EQ(str(changes[1].at("state")), "running");
}

TEST(ServiceApi, RetryMakesANewJobLinkedToAFailedTimedOutOrCancelledOne) {
  service_process svc(fresh_db("retry"), {"--workers", "1"});
  const auto slow = svc.submit(R"({"task": "hang", "timeout_ms": 100})");
  EXPECT_EQ(str(svc.wait_for(slow).at("state")), "timed_out");
  const reply r = call(svc.port(), http::verb::post, "/jobs/" + std::to_string(slow) + "/retry");
  ASSERT_EQ(r.status, 202u) << r.body;
  EXPECT_EQ(r.json().at("retry_of").as_int64(), slow);
  const auto again = r.json().at("id").as_int64();
  EXPECT_NE(again, slow);
  const json::value retried = svc.wait_for(again);
  EXPECT_EQ(str(retried.at("task")), "hang");
  EXPECT_EQ(retried.at("timeout_ms").as_int64(), 100);
  EXPECT_EQ(retried.at("retry_of").as_int64(), slow);
  EXPECT_EQ(str(retried.at("state")), "timed_out");
  EXPECT_TRUE(svc.get("/jobs/" + std::to_string(slow)).json().at("retry_of").is_null());

  const auto ok = svc.submit(R"({"task": "count_primes", "input": {"n": 10}})");
  svc.wait_for(ok);
  const reply refused =
      call(svc.port(), http::verb::post, "/jobs/" + std::to_string(ok) + "/retry");
  EXPECT_EQ(refused.status, 409u);
  EXPECT_NE(refused.body.find("succeeded"), std::string::npos) << refused.body;
  EXPECT_EQ(call(svc.port(), http::verb::post, "/jobs/999999/retry").status, 404u);
  EXPECT_EQ(svc.get("/jobs/" + std::to_string(slow) + "/retry").status, 405u);
  EXPECT_EQ(call(svc.port(), http::verb::post, "/jobs/x/retry").status, 400u);
}

TEST(ServiceApi, ListsFilterByTaskAndStatsCountJobsByState) {
  service_process svc(fresh_db("by-task"), {"--workers", "2"});
  const auto a = svc.submit(R"({"task": "count_primes", "input": {"n": 10}})");
  const auto b = svc.submit(R"({"task": "throw"})");
  svc.wait_for(a);
  svc.wait_for(b);
  const json::array primes = svc.get("/jobs?task=count_primes").json().at("jobs").as_array();
  ASSERT_EQ(primes.size(), 1u);
  EXPECT_EQ(primes[0].at("id").as_int64(), a);
  EXPECT_TRUE(svc.get("/jobs?task=throw&state=succeeded").json().at("jobs").as_array().empty());
  EXPECT_EQ(svc.get("/jobs?task=throw&state=failed").json().at("jobs").as_array().size(), 1u);
  const json::object stats = svc.get("/stats").json().as_object();
  EXPECT_EQ(stats.at("jobs").at("succeeded").as_int64(), 1);
  EXPECT_EQ(stats.at("jobs").at("failed").as_int64(), 1);
  EXPECT_EQ(stats.at("pool").at("workers").as_int64(), 2);
  EXPECT_EQ(stats.at("pool").at("completed").as_int64(), 1);
}

TEST(ServiceApi, TheDashboardIsServedFromTheBinary) {
  service_process svc(fresh_db("dashboard"));
  const reply page = svc.get("/");
  ASSERT_EQ(page.status, 200u);
  EXPECT_NE(page.headers.at("Content-Type").find("text/html"), std::string::npos);
  EXPECT_NE(page.body.find("/dashboard/app.js"), std::string::npos);
  const reply script = svc.get("/dashboard/app.js");
  EXPECT_EQ(script.status, 200u);
  EXPECT_NE(script.headers.at("Content-Type").find("javascript"), std::string::npos);
  EXPECT_EQ(svc.get("/dashboard/missing.js").status, 404u);
  EXPECT_EQ(svc.get("/dashboard/..%2Fmain.cpp").status, 404u);
  EXPECT_EQ(svc.get("/dashboard/.hidden").status, 404u);
  EXPECT_EQ(call(svc.port(), http::verb::post, "/").status, 405u);
}

#if !defined(__SANITIZE_ADDRESS__) && !defined(__SANITIZE_THREAD__)
TEST(ServiceApi, AJobBeyondTheWorkerMemoryLimitFailsAlone) {
  service_process svc(fresh_db("oom"), {"--workers", "1", "--memory-limit-mb", "512"});
  const auto id = svc.submit(R"({"task": "oom", "input": {"mb": 4096}})");
  const json::object job = svc.wait_for(id);
  EXPECT_EQ(str(job.at("state")), "failed");
  EXPECT_EQ(str(job.at("error").at("type")), "std::bad_alloc");
  const auto after = svc.submit(R"({"task": "count_primes", "input": {"n": 10}})");
  EXPECT_EQ(str(svc.wait_for(after).at("state")), "succeeded");
}
#endif
