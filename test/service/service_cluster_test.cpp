// End-to-end tests of procpool-service as many instances sharing one PostgreSQL database: real
// service processes on different ports, a real PostgreSQL server started by this program, real
// HTTP clients, webhook receivers and /events readers. Each test can fail: each asserts what the
// database, the webhooks and the event streams show, not what the service says of itself.
#include <gtest/gtest.h>

#include <atomic>
#include <functional>
#include <memory>
#include <set>

#include "service_harness.hpp"

using namespace service_test;

namespace {

auto str(const json::value& v) -> std::string {
  return std::string(v.as_string());
}

// Short heartbeats, so that a dead instance is found in about a second.
auto cluster_flags(std::vector<std::string> extra = {}) -> std::vector<std::string> {
  std::vector<std::string> flags = {"--workers",
                                    "2",
                                    "--heartbeat-ms",
                                    "100",
                                    "--dead-after-ms",
                                    "1000",
                                    "--poll-ms",
                                    "1000",
                                    "--poll-without-notify-ms",
                                    "100",
                                    "--default-timeout-ms",
                                    "0",
                                    "--webhook-backoff-ms",
                                    "20"};
  flags.insert(flags.end(), extra.begin(), extra.end());
  return flags;
}

void wait_until(const std::function<bool()>& done, const std::string& what) {
  const auto deadline = std::chrono::steady_clock::now() + hang_guard;
  while (!done()) {
    if (std::chrono::steady_clock::now() > deadline) throw std::runtime_error("never: " + what);
    std::this_thread::sleep_for(20ms);
  }
}

auto count(const std::string& db, const std::string& sql) -> std::int64_t {
  return std::stoll(query(db, sql).at(0).at(0));
}

constexpr const char* final_states = "('succeeded', 'failed', 'timed_out', 'cancelled')";

// Every job in the database has exactly one final change in the change log.
void expect_one_final_change_per_job(const std::string& db) {
  const auto rows = query(db, std::string("SELECT jobs.id, count(job_events.seq) FROM jobs LEFT "
                                          "JOIN job_events ON job_events.job_id = jobs.id AND "
                                          "job_events.state IN ") +
                                  final_states + " GROUP BY jobs.id");
  for (const auto& row : rows) EXPECT_EQ(row[1], "1") << "job " << row[0] << " final changes";
}

auto metric(service_process& svc, const std::string& name) -> std::int64_t {
  const std::string body = svc.get("/metrics").body;
  const auto at = body.find("\n" + name + " ");
  if (at == std::string::npos) throw std::runtime_error("no metric " + name);
  return std::stoll(body.substr(at + name.size() + 2));
}

auto service_id(const std::string& db) -> std::string {
  return query(db, "SELECT value FROM meta WHERE key = 'service_id'").at(0).at(0);
}

}  // namespace

TEST(Cluster, ThreeInstancesStartingAtOnceOnAnEmptyDatabaseCreateTheSchemaOnce) {
  const std::string db = fresh_pg_db("migrate_once");
  std::vector<std::unique_ptr<service_process>> all;
  for (int i = 0; i < 3; ++i) {
    all.push_back(std::make_unique<service_process>(db, cluster_flags(), /*wait=*/false));
  }
  for (auto& s : all) s->wait_ready();
  const auto versions =
      query(db, "SELECT version, count(*) FROM schema_migrations GROUP BY version ORDER BY 1");
  ASSERT_EQ(versions.size(), 5u);
  for (const auto& v : versions) EXPECT_EQ(v[1], "1") << "version " << v[0];
  const auto instances = all[0]->get("/instances").json().at("instances").as_array();
  std::set<std::string> ids;
  for (const auto& i : instances) ids.insert(str(i.at("id")));
  EXPECT_EQ(ids,
            (std::set<std::string>{all[0]->instance(), all[1]->instance(), all[2]->instance()}));
}

// Tokens live in the shared database: one made once is accepted by every instance, and its
// revocation reaches every instance (here at once: --token-cache-ms 0).
TEST(Cluster, InstancesOnOneDatabaseShareTokensAndTheirRevocation) {
  const std::string db = fresh_pg_db("shared_tokens");
  const std::string token = create_token(db, "submit");
  std::vector<std::unique_ptr<service_process>> all;
  for (int i = 0; i < 2; ++i) {
    all.push_back(std::make_unique<service_process>(
        db, cluster_flags({"--require-tokens", "--token-cache-ms", "0"})));
  }
  for (auto& s : all) {
    EXPECT_EQ(call(s->port(), http::verb::get, "/jobs", "", bearer(token)).status, 200u);
    EXPECT_EQ(call(s->port(), http::verb::get, "/jobs").status, 401u);
  }
  const std::string id = token.substr(3, token.find('_', 3) - 3);
  ASSERT_EQ(run_service_command({"token", "revoke", id, "--db", db}).status, 0);
  for (auto& s : all) {
    EXPECT_EQ(call(s->port(), http::verb::get, "/jobs", "", bearer(token)).status, 401u);
  }
}

class ClusterBurst : public testing::TestWithParam<bool> {};

// Waves of jobs from several clients across three instances: every job ends once, with one
// final change and one webhook; every instance did some of the work. Without NOTIFY (polling
// only) as with it.
TEST_P(ClusterBurst, EveryJobEndsOnceAndTheWorkIsSpreadOverAllInstances) {
  const bool notify = GetParam();
  const std::string db = fresh_pg_db(notify ? "burst_notify" : "burst_poll");
  webhook_receiver receiver;
  std::vector<std::unique_ptr<service_process>> instances;
  for (int i = 0; i < 3; ++i) {
    instances.push_back(std::make_unique<service_process>(
        db, cluster_flags(notify ? std::vector<std::string>{}
                                 : std::vector<std::string>{"--notify", "off"})));
  }
  constexpr int clients = 6, waves = 5, per_wave = 10;
  std::mutex mutex;
  std::set<std::int64_t> accepted;
  std::vector<std::thread> threads;
  for (int c = 0; c < clients; ++c) {
    threads.emplace_back([&, c] {
      for (int w = 0; w < waves; ++w) {
        std::vector<std::int64_t> wave;
        for (int j = 0; j < per_wave; ++j) {
          auto& to = *instances[static_cast<std::size_t>((c + j) % 3)];
          wave.push_back(to.submit(R"({"task": "sleep", "input": {"ms": )" +
                                   std::to_string(5 + (c * 7 + j * 3) % 20) +
                                   R"(}, "notify_url": ")" + receiver.url() + R"("})"));
        }
        for (auto id : wave) instances[static_cast<std::size_t>(c % 3)]->wait_for(id);
        std::lock_guard lock(mutex);
        accepted.insert(wave.begin(), wave.end());
      }
    });
  }
  for (auto& t : threads) t.join();
  const std::size_t total = clients * waves * per_wave;
  ASSERT_EQ(accepted.size(), total);
  EXPECT_EQ(count(db, "SELECT count(*) FROM jobs WHERE state = 'succeeded' AND attempts = 1"),
            static_cast<std::int64_t>(total));
  expect_one_final_change_per_job(db);
  const auto owners = query(db, "SELECT owner, count(*) FROM jobs GROUP BY owner ORDER BY owner");
  EXPECT_EQ(owners.size(), 3u) << "the work was not spread over the three instances";
  std::string spread;
  for (const auto& o : owners) spread += o[0] + ": " + o[1] + " jobs; ";

  // One webhook per job, with its final state.
  const auto deliveries = receiver.wait_for(total);
  std::map<std::string, int> per_key;
  for (const auto& d : deliveries) {
    ++per_key[d.key];
    EXPECT_EQ(str(d.job.at("state")), "succeeded");
  }
  EXPECT_EQ(per_key.size(), total);
  for (const auto& [key, n] : per_key) EXPECT_EQ(n, 1) << key;
  std::printf("burst (%s): %zu jobs, %zu webhooks, %s\n", notify ? "notify" : "poll only", total,
              receiver.all().size(), spread.c_str());
}

INSTANTIATE_TEST_SUITE_P(NotifyAndPollOnly, ClusterBurst, testing::Values(true, false),
                         [](const auto& param_info) {
                           return param_info.param ? "Notify" : "PollOnly";
                         });

// An instance killed with jobs running and a webhook undelivered: another instance re-runs the
// jobs (attempt 2) once it finds the dead instance, each job ends once, and the webhook is sent
// by a living instance.
TEST(Cluster, AKilledInstancesJobsAreRescuedRunAgainAndEndOnce) {
  const std::string db = fresh_pg_db("kill9");
  webhook_receiver receiver;
  receiver.set_refusing(true);
  // The victim retries webhooks only after ten minutes: its refused one stays pending.
  service_process victim(db, cluster_flags({"--webhook-backoff-ms", "600000"}));
  const auto hooked = victim.submit(
      R"({"task": "count_primes", "input": {"n": 10}, "notify_url": ")" + receiver.url() + R"("})");
  victim.wait_for(hooked);
  wait_until([&] { return receiver.attempts() >= 1; }, "the victim's first webhook attempt");
  std::vector<std::int64_t> long_jobs;
  for (int i = 0; i < 2; ++i) {
    long_jobs.push_back(victim.submit(R"({"task": "sleep", "input": {"ms": 1500}})"));
  }
  for (auto id : long_jobs) victim.wait_for(id, "running");

  service_process a(db, cluster_flags()), b(db, cluster_flags());
  std::vector<std::int64_t> others;
  for (int i = 0; i < 10; ++i) {
    others.push_back((i % 2 ? a : b).submit(R"({"task": "sleep", "input": {"ms": 30}})"));
  }
  receiver.set_refusing(false);
  const auto killed_at_ms = std::stoll(
      query(db, "SELECT (extract(epoch from clock_timestamp()) * 1000)::bigint").at(0).at(0));
  EXPECT_EQ(victim.stop(SIGKILL), 128 + SIGKILL);

  for (auto id : long_jobs) {
    const json::object job = a.wait_for(id);
    EXPECT_EQ(str(job.at("state")), "succeeded");
    EXPECT_EQ(job.at("attempts").as_int64(), 2);
    const std::string owner = str(job.at("owner"));
    EXPECT_TRUE(owner == a.instance() || owner == b.instance()) << owner;
  }
  for (auto id : others) EXPECT_EQ(str(a.wait_for(id).at("state")), "succeeded");
  expect_one_final_change_per_job(db);
  // The rescue delay: from the kill to attempt 2's start.
  const auto restarted_ms =
      count(db, "SELECT max(started_ms) FROM jobs WHERE id IN (" + std::to_string(long_jobs[0]) +
                    ", " + std::to_string(long_jobs[1]) + ")");
  EXPECT_LT(restarted_ms - killed_at_ms, 10'000) << "hang guard: the documented bound is ~1.2 s";

  // The victim's undelivered webhook, delivered by a living instance, under the same key.
  const auto deliveries = receiver.wait_for(1);
  ASSERT_EQ(deliveries.size(), 1u);
  EXPECT_EQ(deliveries[0].key, service_id(db) + "-" + std::to_string(hooked));
  wait_until(
      [&] {
        return str(a.get("/jobs/" + std::to_string(hooked)).json().at("notification")) ==
               "delivered";
      },
      "the webhook marked delivered");
  EXPECT_EQ(metric(a, "service_instances_declared_dead_total") +
                metric(b, "service_instances_declared_dead_total"),
            1);
  EXPECT_EQ(metric(a, "service_jobs_rescued_total") + metric(b, "service_jobs_rescued_total"), 2);
  EXPECT_EQ(a.get("/instances").json().at("instances").as_array().size(), 2u);
  std::printf(
      "kill -9: 2 running jobs rescued and run again (attempt 2) %lld ms after the kill; "
      "%zu other jobs ran once; 1 pending webhook delivered by a living instance\n",
      static_cast<long long>(restarted_ms - killed_at_ms), others.size());
}

// An instance stopped (SIGSTOP) past the dead threshold while it runs a job: another instance
// takes the job over and finishes it; when the stalled instance resumes, its late completion
// changes nothing (no second result, no second webhook, no second event), and it rejoins.
TEST(Cluster, AStalledInstancesLateCompletionChangesNothing) {
  const std::string db = fresh_pg_db("stalled");
  webhook_receiver receiver;
  service_process stalled(db, cluster_flags({"--workers", "1"}));
  const auto id = stalled.submit(R"({"task": "sleep", "input": {"ms": 2500}, "notify_url": ")" +
                                 receiver.url() + R"("})");
  const json::object first = stalled.wait_for(id, "running");
  EXPECT_EQ(str(first.at("owner")), stalled.instance());

  service_process other(db, cluster_flags({"--workers", "1"}));
  event_reader events(other.port());
  stalled.signal(SIGSTOP);
  const json::object done = other.wait_for(id);
  EXPECT_EQ(str(done.at("state")), "succeeded");
  EXPECT_EQ(done.at("attempts").as_int64(), 2);
  EXPECT_EQ(str(done.at("owner")), other.instance());
  receiver.wait_for(1);

  stalled.signal(SIGCONT);
  // The stalled instance drops its outcome (fenced), then rejoins the cluster.
  wait_until([&] { return metric(stalled, "service_completions_fenced_total") == 1; },
             "the stale completion fenced");
  wait_until(
      [&] {
        const json::value all = other.get("/instances").json();
        for (const auto& i : all.at("instances").as_array()) {
          if (str(i.at("id")) == stalled.instance()) return true;
        }
        return false;
      },
      "the stalled instance rejoined");
  // It serves again: a new job on it runs.
  const auto after = stalled.submit(R"({"task": "count_primes", "input": {"n": 10}})");
  EXPECT_EQ(str(stalled.wait_for(after).at("state")), "succeeded");
  events.wait_until([&](const std::vector<json::object>& all) {
    for (const auto& e : all) {
      if (e.at("id").as_int64() == after && e.at("state").as_string() == "succeeded") return true;
    }
    return false;
  });

  const json::object final_job = other.get("/jobs/" + std::to_string(id)).json().as_object();
  EXPECT_EQ(final_job.at("finished_at"), done.at("finished_at"));
  EXPECT_EQ(str(final_job.at("owner")), other.instance());
  expect_one_final_change_per_job(db);
  EXPECT_EQ(receiver.all().size(), 1u) << "a second webhook for the job";
  int finals_on_stream = 0;
  for (const auto& e : events.wait_until([](const auto&) { return true; })) {
    if (e.at("id").as_int64() == id && e.at("state").as_string() == "succeeded") ++finals_on_stream;
  }
  EXPECT_EQ(finals_on_stream, 1);
  std::printf(
      "stalled instance: job %lld finished once by the other instance (attempt 2); the "
      "stalled instance's late outcome was dropped (1 completion fenced), 1 webhook\n",
      static_cast<long long>(id));
}

class ClusterCancel : public testing::TestWithParam<bool> {};

// DELETE on one instance of a job running on another kills the worker there: through NOTIFY,
// or (notifications off) through the owner's poll of the cancel flag.
TEST_P(ClusterCancel, DeleteOnOneInstanceKillsTheWorkerOnAnother) {
  const bool notify = GetParam();
  const std::string db = fresh_pg_db(notify ? "cancel_notify" : "cancel_poll");
  const auto flags =
      cluster_flags(notify ? std::vector<std::string>{"--workers", "1"}
                           : std::vector<std::string>{"--workers", "1", "--notify", "off"});
  service_process runner(db, flags);
  const auto id = runner.submit(R"({"task": "hang"})");
  runner.wait_for(id, "running");
  service_process asker(db, flags);
  const reply r = asker.del("/jobs/" + std::to_string(id));
  ASSERT_EQ(r.status, 200u) << r.body;
  EXPECT_EQ(str(r.json().at("state")), "cancelled");
  EXPECT_EQ(str(r.json().at("owner")), runner.instance());
  EXPECT_EQ(str(r.json().at("error").at("type")), "cancelled");
  EXPECT_EQ(metric(runner, "procpool_tasks_cancelled_total"), 1);
  expect_one_final_change_per_job(db);
  // The worker was killed, not left hanging: the runner's single worker takes the next job.
  const auto next = asker.submit(R"({"task": "count_primes", "input": {"n": 10}})");
  EXPECT_EQ(str(runner.wait_for(next).at("state")), "succeeded");
}

INSTANTIATE_TEST_SUITE_P(NotifyAndPollOnly, ClusterCancel, testing::Values(true, false),
                         [](const auto& param_info) {
                           return param_info.param ? "Notify" : "PollOnly";
                         });

// The LISTEN connection of an instance is terminated by the server: the instance reconnects by
// itself and its /events stream misses no change made meanwhile by another instance.
TEST(Cluster, ABrokenListenConnectionRecoversAndMissesNoEvent) {
  const std::string db = fresh_pg_db("listen_lost");
  service_process watcher(db, cluster_flags()), worker(db, cluster_flags());
  event_reader events(watcher.port());
  const auto first = worker.submit(R"({"task": "count_primes", "input": {"n": 10}})");
  worker.wait_for(first);
  const auto terminated =
      query(db,
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = "
            "left('procpool-service listener " +
                watcher.instance() + "', 63)");
  ASSERT_EQ(terminated.size(), 1u);
  EXPECT_EQ(terminated[0][0], "t");
  std::vector<std::int64_t> ids;
  for (int i = 0; i < 10; ++i) {
    ids.push_back(worker.submit(R"({"task": "count_primes", "input": {"n": 10}})"));
  }
  for (auto id : ids) worker.wait_for(id);
  const auto seen = events.wait_until([&](const std::vector<json::object>& all) {
    std::set<std::int64_t> ended;
    for (const auto& e : all) {
      if (e.at("state").as_string() == "succeeded") ended.insert(e.at("id").as_int64());
    }
    return std::all_of(ids.begin(), ids.end(), [&](auto id) { return ended.count(id) > 0; });
  });
  // Exactly the change log, in order, from the first change the stream showed.
  std::vector<std::int64_t> stream;
  for (const auto& e : seen) stream.push_back(e.at("seq").as_int64());
  ASSERT_FALSE(stream.empty());
  std::vector<std::int64_t> log;
  for (const auto& row :
       query(db, "SELECT seq FROM job_events WHERE seq >= " + std::to_string(stream.front()) +
                     " AND seq <= " + std::to_string(stream.back()) + " ORDER BY seq")) {
    log.push_back(std::stoll(row[0]));
  }
  EXPECT_EQ(stream, log);
  wait_until([&] { return metric(watcher, "service_notify_listening") == 1; },
             "the listener reconnected");
  EXPECT_EQ(count(db,
                  "SELECT count(*) FROM pg_stat_activity WHERE application_name = "
                  "left('procpool-service listener " +
                      watcher.instance() + "', 63)"),
            1);
}

// PostgreSQL restarts while clients submit to two instances: every job the service accepted
// (202) is in the database and ends exactly once; the instances reconnect by themselves.
TEST(Cluster, ADatabaseRestartUnderLoadLosesNothingAcknowledged) {
  const std::string db = fresh_pg_db("db_restart");
  service_process a(db, cluster_flags({"--heartbeat-ms", "300", "--dead-after-ms", "5000"}));
  service_process b(db, cluster_flags({"--heartbeat-ms", "300", "--dead-after-ms", "5000"}));
  std::mutex mutex;
  std::set<std::int64_t> accepted;
  std::atomic<int> refused{0}, after_restart{0};
  std::atomic<bool> restarted{false}, stop{false};
  std::vector<std::thread> clients;
  for (int c = 0; c < 3; ++c) {
    clients.emplace_back([&, c] {
      for (int i = 0; !stop; ++i) {
        auto& to = (c + i) % 2 ? a : b;
        try {
          const reply r = to.post(R"({"task": "sleep", "input": {"ms": 20}})");
          if (r.status == 202) {
            std::lock_guard lock(mutex);
            accepted.insert(r.json().at("id").as_int64());
            if (restarted) ++after_restart;
          } else {
            ++refused;  // 503 while the database is away: nothing stored, the client retries
            std::this_thread::sleep_for(20ms);
          }
        } catch (const std::exception&) {
          ++refused;
        }
      }
    });
  }
  wait_until(
      [&] {
        std::lock_guard lock(mutex);
        return accepted.size() >= 30;
      },
      "30 jobs accepted");
  shared_pg().restart();
  restarted = true;
  wait_until([&] { return after_restart >= 30; }, "30 jobs accepted after the restart");
  stop = true;
  for (auto& t : clients) t.join();

  for (auto id : accepted) EXPECT_EQ(str(a.wait_for(id).at("state")), "succeeded") << id;
  const auto stored = count(db, "SELECT count(*) FROM jobs");
  EXPECT_GE(stored, static_cast<std::int64_t>(accepted.size()));
  for (const auto& row : query(db, "SELECT id FROM jobs")) a.wait_for(std::stoll(row[0]));
  expect_one_final_change_per_job(db);
  wait_until([&] { return a.get("/healthz").status == 200 && b.get("/healthz").status == 200; },
             "both instances healthy");
  std::printf(
      "database restart: %zu jobs accepted (%d after the restart), %d requests refused "
      "while it was away, %lld jobs in the database, every one ended once\n",
      accepted.size(), after_restart.load(), refused.load(), static_cast<long long>(stored));
}
