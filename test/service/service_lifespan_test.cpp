// End-to-end tests of procpool-service's lifespan: drain on SIGTERM, recovery after kill -9,
// webhooks delivered at least once with one idempotency key.
#include <gtest/gtest.h>

#include <atomic>
#include <set>

#include "service_harness.hpp"

using namespace service_test;

namespace {

auto str(const json::value& v) -> std::string {
  return std::string(v.as_string());
}

// Polls the job until its webhook reached `state` (written just after the receiver answers).
void wait_for_notification(service_process& svc, std::int64_t id, const std::string& state) {
  const auto deadline = std::chrono::steady_clock::now() + hang_guard;
  while (str(svc.get("/jobs/" + std::to_string(id)).json().at("notification")) != state) {
    ASSERT_LT(std::chrono::steady_clock::now(), deadline) << "notification never " << state;
    std::this_thread::sleep_for(10ms);
  }
}

}  // namespace

TEST(ServiceLifespan, SigtermLetsRunningJobsFinishExitsZeroAndKeepsQueuedJobs) {
  const std::string db = fresh_db("drain");
  service_process svc(db, {"--workers", "1"});
  const auto running = svc.submit(R"({"task": "sleep", "input": {"ms": 300}})");
  svc.wait_for(running, "running");
  const auto queued = svc.submit(R"({"task": "count_primes", "input": {"n": 100}})");

  EXPECT_EQ(svc.stop(SIGTERM), 0);
  EXPECT_NE(svc.rest_of_output().find("every running job finished"), std::string::npos)
      << svc.rest_of_output();
  EXPECT_EQ(query(db, "SELECT state FROM jobs WHERE id = " + std::to_string(running))[0][0],
            "succeeded");
  EXPECT_EQ(query(db, "SELECT state FROM jobs WHERE id = " + std::to_string(queued))[0][0],
            "queued");

  svc.restart();  // the queued job runs at the next start
  EXPECT_NE(svc.banner().find("resumed"), std::string::npos) << svc.banner();
  const json::object job = svc.wait_for(queued);
  EXPECT_EQ(str(job.at("state")), "succeeded");
  EXPECT_EQ(job.at("attempts").as_int64(), 1);
}

TEST(ServiceLifespan, ADrainPastItsDeadlineRequeuesTheRunningJobAndExitsThree) {
  const std::string db = fresh_db("drain-deadline");
  service_process svc(db,
                      {"--workers", "1", "--drain-timeout-ms", "100", "--default-timeout-ms", "0"});
  const auto id = svc.submit(R"({"task": "hang"})");
  svc.wait_for(id, "running");
  EXPECT_EQ(svc.stop(SIGTERM), 3);
  EXPECT_EQ(query(db, "SELECT state FROM jobs WHERE id = " + std::to_string(id))[0][0], "queued");

  svc.restart();
  const json::object again = svc.wait_for(id, "running");
  EXPECT_EQ(again.at("attempts").as_int64(), 2);
  EXPECT_EQ(svc.del("/jobs/" + std::to_string(id)).status, 200u);
  EXPECT_EQ(svc.stop(SIGINT), 0);
}

TEST(ServiceLifespan, AJobInterruptedMaxAttemptsTimesFailsAsInterrupted) {
  const std::string db = fresh_db("interrupted");
  service_process svc(db, {"--workers", "1", "--max-attempts", "1", "--default-timeout-ms", "0"});
  const auto id = svc.submit(R"({"task": "hang"})");
  svc.wait_for(id, "running");
  EXPECT_EQ(svc.stop(SIGKILL), 128 + SIGKILL);
  svc.restart();
  const json::object job = svc.wait_for(id);
  EXPECT_EQ(str(job.at("state")), "failed");
  EXPECT_EQ(str(job.at("error").at("type")), "interrupted");
}

TEST(ServiceLifespan, ARetryInterruptedByAKill9RunsAgainAfterTheRestart) {
  // A retry (retry_of set) left running by a killed service is queued again, like any job — not
  // taken for one whose cancel was requested.
  const std::string db = fresh_db("retry-restart");
  service_process svc(db, {"--workers", "1"});
  // Long enough that the retry is still running when the service is killed.
  const auto first = svc.submit(R"({"task": "hang", "timeout_ms": 3000})");
  EXPECT_EQ(str(svc.wait_for(first).at("state")), "timed_out");
  const reply r = call(svc.port(), http::verb::post, "/jobs/" + std::to_string(first) + "/retry");
  ASSERT_EQ(r.status, 202u) << r.body;
  const auto retry = r.json().at("id").as_int64();
  svc.wait_for(retry, "running");
  EXPECT_EQ(svc.stop(SIGKILL), 128 + SIGKILL);
  svc.restart();
  const json::object again = svc.wait_for(retry);
  EXPECT_EQ(again.at("retry_of").as_int64(), first);
  EXPECT_EQ(str(again.at("error").at("type")), "timeout");  // ran again, and timed out again
  EXPECT_EQ(again.at("attempts").as_int64(), 2);
}

TEST(ServiceWebhooks, AFailedWebhookIsRetriedWithTheSameIdempotencyKey) {
  webhook_receiver receiver(/*fail_first=*/2);
  service_process svc(fresh_db("webhook"), {"--webhook-backoff-ms", "10"});
  const auto id = svc.submit(R"({"task": "count_primes", "input": {"n": 100}, "notify_url": ")" +
                             receiver.url() + R"("})");
  const auto got = receiver.wait_for(1);
  ASSERT_EQ(got.size(), 1u);
  EXPECT_EQ(got[0].attempt, "3");  // two 503s, then accepted
  EXPECT_EQ(got[0].job.at("id").as_int64(), id);
  EXPECT_EQ(str(got[0].job.at("state")), "succeeded");
  EXPECT_EQ(got[0].job.at("result").at("primes").as_int64(), 25);
  EXPECT_TRUE(got[0].key.ends_with("-" + std::to_string(id))) << got[0].key;
  wait_for_notification(svc, id, "delivered");
  EXPECT_NE(svc.get("/metrics").body.find("service_webhook_retries_total 2\n"), std::string::npos);
}

TEST(ServiceWebhooks, AWebhookThatNeverSucceedsIsMarkedFailed) {
  webhook_receiver receiver(/*fail_first=*/1000);
  service_process svc(fresh_db("webhook-fails"),
                      {"--webhook-backoff-ms", "10", "--webhook-attempts", "3"});
  const auto id = svc.submit(R"({"task": "count_primes", "input": {"n": 100}, "notify_url": ")" +
                             receiver.url() + R"("})");
  wait_for_notification(svc, id, "failed");
  // Why, as the last attempt saw it.
  EXPECT_EQ(str(svc.get("/jobs/" + std::to_string(id)).json().at("notification_error")),
            "HTTP 503");
  EXPECT_NE(svc.get("/metrics").body.find("service_webhooks_failed_total 1\n"), std::string::npos);
}

TEST(ServiceLifespan, EndedJobsAreDeletedAfterTheRetentionPeriodButNoOthers) {
  webhook_receiver refusing(/*fail_first=*/1000);
  service_process svc(fresh_db("retention"),
                      {"--retain-ended-s", "1", "--workers", "2", "--default-timeout-ms", "0",
                       "--webhook-backoff-ms", "600000"});
  const auto ended = svc.submit(R"({"task": "count_primes", "input": {"n": 10}})");
  const auto running = svc.submit(R"({"task": "hang"})");
  const auto unnotified = svc.submit(
      R"({"task": "count_primes", "input": {"n": 10}, "notify_url": ")" + refusing.url() + R"("})");
  svc.wait_for(ended);
  svc.wait_for(unnotified);
  const auto deadline = std::chrono::steady_clock::now() + hang_guard;
  while (svc.get("/jobs/" + std::to_string(ended)).status != 404) {
    ASSERT_LT(std::chrono::steady_clock::now(), deadline) << "never deleted";
    std::this_thread::sleep_for(50ms);
  }
  // Still running, or ended with its webhook still to deliver: kept.
  EXPECT_EQ(str(svc.get("/jobs/" + std::to_string(running)).json().at("state")), "running");
  EXPECT_EQ(str(svc.get("/jobs/" + std::to_string(unnotified)).json().at("notification")),
            "pending");
  EXPECT_NE(svc.get("/metrics").body.find("service_jobs_deleted_total 1\n"), std::string::npos);
}

// The restart test: clients submit while the service runs jobs; the service is SIGKILLed with
// jobs queued and running, restarted on the same database, and given more jobs. Every job ends
// in exactly one final state (the database's change log has one final change per job), and each
// job's webhook arrives at least once, always with its one final state.
TEST(ServiceRestart, EveryAcceptedJobEndsExactlyOnceAcrossAKill9) {
  const std::string db = fresh_db("restart");
  webhook_receiver receiver;
  service_process svc(db, {"--workers", "2", "--webhook-backoff-ms", "20"});
  const std::string body_head =
      R"({"task": "sleep", "notify_url": ")" + receiver.url() + R"(", "input": {"ms": )";

  std::mutex mutex;
  std::set<std::int64_t> accepted;
  std::atomic<bool> killed{false};
  std::atomic<int> refused_during_kill{0};
  auto client = [&](std::uint16_t port, int n) {
    for (int i = 0; i < n && !killed; ++i) {
      try {
        const reply r =
            call(port, http::verb::post, "/jobs", body_head + std::to_string(20 + i % 40) + "}}");
        if (r.status == 202) {
          std::lock_guard lock(mutex);
          accepted.insert(r.json().at("id").as_int64());
        }
      } catch (const std::exception&) {
        ++refused_during_kill;  // the service died under this request
        return;
      }
    }
  };
  std::vector<std::thread> clients;
  for (int c = 0; c < 4; ++c) clients.emplace_back(client, svc.port(), 1000);
  // Kill once jobs are both running and queued.
  const auto deadline = std::chrono::steady_clock::now() + hang_guard;
  for (;;) {
    ASSERT_LT(std::chrono::steady_clock::now(), deadline);
    const auto queued = svc.get("/jobs?state=queued&limit=20").json().at("jobs").as_array().size();
    const auto running = svc.get("/jobs?state=running").json().at("jobs").as_array().size();
    std::size_t done = 0;
    {
      std::lock_guard lock(mutex);
      done = accepted.size();
    }
    if (queued >= 10 && running >= 1 && done >= 40) break;
    std::this_thread::sleep_for(5ms);
  }
  EXPECT_EQ(svc.stop(SIGKILL), 128 + SIGKILL);
  killed = true;
  for (auto& t : clients) t.join();
  const std::size_t before_restart = accepted.size();

  svc.restart();
  EXPECT_NE(svc.banner().find("resumed"), std::string::npos) << svc.banner();
  killed = false;
  clients.clear();
  for (int c = 0; c < 2; ++c) clients.emplace_back(client, svc.port(), 10);
  for (auto& t : clients) t.join();

  // Every job in the database (accepted ones, and any stored just before the kill whose 202
  // never reached its client) reaches a final state.
  const auto all_ids = query(db, "SELECT id FROM jobs ORDER BY id");
  for (const auto& row : all_ids) svc.wait_for(std::stoll(row[0]));
  for (auto id : accepted) {
    bool found = false;
    for (const auto& row : all_ids) found = found || std::stoll(row[0]) == id;
    EXPECT_TRUE(found) << "accepted job " << id << " is not in the database";
  }
  const auto finals = query(db,
                            "SELECT jobs.id, count(job_events.seq) FROM jobs LEFT JOIN job_events "
                            "ON job_events.job_id = jobs.id AND job_events.state IN "
                            "('succeeded', 'failed', 'timed_out', 'cancelled') GROUP BY jobs.id");
  ASSERT_EQ(finals.size(), all_ids.size());
  for (const auto& row : finals) EXPECT_EQ(row[1], "1") << "job " << row[0] << " final changes";
  const auto rerun = query(db, "SELECT count(*) FROM jobs WHERE attempts > 1")[0][0];
  const auto not_ok = query(db, "SELECT count(*) FROM jobs WHERE state != 'succeeded'")[0][0];
  EXPECT_EQ(not_ok, "0");

  // Webhooks: every job's key arrives, every delivery of a key says the same final state.
  const std::string service_id = query(db, "SELECT value FROM meta WHERE key = 'service_id'")[0][0];
  std::map<std::string, std::set<std::string>> states_by_key;
  const auto hooks_deadline = std::chrono::steady_clock::now() + hang_guard;
  std::vector<webhook_receiver::delivery> hooks;
  for (;;) {
    hooks = receiver.all();
    states_by_key.clear();
    for (const auto& d : hooks) states_by_key[d.key].insert(str(d.job.at("state")));
    if (states_by_key.size() >= all_ids.size()) break;
    ASSERT_LT(std::chrono::steady_clock::now(), hooks_deadline)
        << states_by_key.size() << " of " << all_ids.size();
    std::this_thread::sleep_for(10ms);
  }
  for (const auto& row : all_ids) {
    const auto it = states_by_key.find(service_id + "-" + row[0]);
    ASSERT_NE(it, states_by_key.end()) << "no webhook for job " << row[0];
    EXPECT_EQ(it->second, std::set<std::string>{"succeeded"});
  }
  std::printf(
      "restart test: %zu jobs accepted before the kill, %zu in all, %zu in the database, %s run "
      "again after the kill, %d requests cut by it, %zu webhooks for %zu jobs (%zu duplicates)\n",
      before_restart, accepted.size(), all_ids.size(), rerun.c_str(), refused_during_kill.load(),
      hooks.size(), states_by_key.size(), hooks.size() - states_by_key.size());
}
