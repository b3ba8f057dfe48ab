// The pool's pure units, tested directly: why a worker died (diagnose_exit), the worker lifecycle's
// transitions, where the task queue keeps each task, and when the supervisor starts workers.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>

#include "diagnose_exit.hpp"
#include "internal.hpp"
#include "procpool/error.hpp"
#include "task_queue.hpp"
#include "worker_lifecycle.hpp"
#include "worker_supervisor.hpp"

namespace procpool::detail {
namespace {

using namespace std::chrono_literals;

constexpr int killed_by(int sig) {
  return sig;
}  // a waitpid status for "terminated by sig"
constexpr int exited_with(int code) {
  return code << 8;
}

// exit_facts for a wait status, with a few fields changed by `edit`.
template <class Edit = void (*)(exit_facts&)>
auto facts(
    int status, Edit edit = [](exit_facts&) {}) -> exit_facts {
  exit_facts f;
  f.wait_status = status;
  edit(f);
  return f;
}

TEST(DiagnoseExit, AnExitNamesItsCodeAndNoSignal) {
  const auto d = diagnose_exit(facts(exited_with(3)));
  EXPECT_EQ(d.signal, 0);
  EXPECT_EQ(d.exit_code, 3);
  EXPECT_TRUE(d.reason.empty());
  EXPECT_FALSE(d.out_of_memory);
}

TEST(DiagnoseExit, ASignalNamesItselfAndNoExitCode) {
  const auto d = diagnose_exit(facts(killed_by(SIGSEGV)));
  EXPECT_EQ(d.signal, SIGSEGV);
  EXPECT_EQ(d.exit_code, -1);
}

TEST(DiagnoseExit, SigxcpuIsTheCpuLimitOnlyWhenOneIsSet) {
  EXPECT_NE(diagnose_exit(facts(killed_by(SIGXCPU), [](exit_facts& f) { f.cpu_time_limit = 2s; }))
                .reason.find("cpu_time_limit of 2 s"),
            std::string::npos);
  EXPECT_TRUE(diagnose_exit(facts(killed_by(SIGXCPU))).reason.empty());
}

TEST(DiagnoseExit, SigsysIsTheSandboxAndNamesTheCallTheWorkerReported) {
  const auto named = diagnose_exit(facts(killed_by(SIGSYS), [](exit_facts& f) {
    f.stderr_tail = "earlier line\nprocpool: seccomp refused system call 41\n";
  }));
  EXPECT_NE(named.reason.find("seccomp"), std::string::npos) << named.reason;
  EXPECT_NE(named.reason.find("socket (41)"), std::string::npos) << named.reason;
  // Whatever else a worker wrote is text, not a number to trust: no name, the cause still.
  for (const char* tail : {"", "procpool: seccomp refused system call x\n",
                           "procpool: seccomp refused system call 99999999999999999999\n"}) {
    const auto d =
        diagnose_exit(facts(killed_by(SIGSYS), [&](exit_facts& f) { f.stderr_tail = tail; }));
    EXPECT_NE(d.reason.find("seccomp"), std::string::npos) << tail;
  }
}

TEST(DiagnoseExit, AHangUpIsTheCauseOnlyWhenOurSigkillEndedIt) {
  EXPECT_EQ(diagnose_exit(facts(killed_by(SIGKILL), [](exit_facts& f) { f.hung_up_alive = true; }))
                .reason,
            "closed its channel to the pool");
  // It crashed on its own before our kill landed: its own cause stands.
  EXPECT_TRUE(diagnose_exit(facts(killed_by(SIGSEGV), [](exit_facts& f) {
                f.hung_up_alive = true;
              })).reason.empty());
}

TEST(DiagnoseExit, AKillReasonOutranksTheHangUp) {
  const auto d = diagnose_exit(facts(killed_by(SIGKILL), [](exit_facts& f) {
    f.kill_reason = "sent a second hello";
    f.hung_up_alive = true;
  }));
  EXPECT_EQ(d.reason, "sent a second hello");
}

TEST(DiagnoseExit, ItsOwnCgroupsOomKillOutranksEverythingAndNamesTheLimit) {
  const auto d = diagnose_exit(facts(killed_by(SIGKILL), [](exit_facts& f) {
    f.memory_verdict = zygote_memory_cgroup_oom;
    f.kill_reason = "sent a second hello";
    f.memory_max_bytes = 1 << 20;
  }));
  EXPECT_TRUE(d.out_of_memory);
  EXPECT_NE(d.reason.find("memory_max_bytes of 1048576 bytes"), std::string::npos);
}

TEST(DiagnoseExit, ASystemOomIsOnlyTheLikelyCauseWhenNothingBetterIsKnown) {
  const auto guess = diagnose_exit(facts(
      killed_by(SIGKILL), [](exit_facts& f) { f.memory_verdict = zygote_memory_system_oom; }));
  EXPECT_TRUE(guess.out_of_memory);
  EXPECT_NE(guess.reason.find("most likely"), std::string::npos);
  const auto known = diagnose_exit(facts(killed_by(SIGKILL), [](exit_facts& f) {
    f.memory_verdict = zygote_memory_system_oom;
    f.kill_reason = "sent a second hello";
  }));
  EXPECT_FALSE(known.out_of_memory);
  EXPECT_EQ(known.reason, "sent a second hello");
}

using P = worker_phase;
using E = worker_event;

TEST(WorkerLifecycle, AWorkerIsIdleOnceBothItsPidAndItsHelloCameInEitherOrder) {
  EXPECT_EQ(next_phase(next_phase(P::forking, E::forked), E::greeted), P::idle);
  EXPECT_EQ(next_phase(next_phase(P::forking, E::greeted), E::forked), P::idle);
  EXPECT_EQ(next_phase(P::forking, E::forked), P::forked);
  EXPECT_EQ(next_phase(P::forking, E::greeted), P::greeted);
}

TEST(WorkerLifecycle, OnlyAnIdleWorkerTakesATaskOrRetires) {
  EXPECT_EQ(next_phase(P::idle, E::assigned), P::busy);
  EXPECT_EQ(next_phase(P::busy, E::finished), P::idle);
  EXPECT_EQ(next_phase(P::idle, E::retire), P::retiring);
  for (auto p : {P::forking, P::forked, P::greeted, P::busy, P::stopping, P::failed_start}) {
    EXPECT_EQ(next_phase(p, E::assigned), p);
    EXPECT_EQ(next_phase(p, E::retire), p);
  }
}

TEST(WorkerLifecycle, AStopBeforeTheHelloIsAFailedStartAfterItAStop) {
  EXPECT_EQ(next_phase(P::forking, E::stop), P::failed_start);
  EXPECT_EQ(next_phase(P::forked, E::stop), P::failed_start);
  for (auto p : {P::greeted, P::idle, P::busy, P::retiring, P::stopping}) {
    EXPECT_EQ(next_phase(p, E::stop), P::stopping);
  }
  EXPECT_EQ(next_phase(P::failed_start, E::stop), P::failed_start);
}

TEST(WorkerLifecycle, NothingAWorkerSendsRevivesOneBeingStopped) {
  for (auto p : {P::stopping, P::failed_start, P::retiring}) {
    for (auto e : {E::forked, E::greeted, E::assigned, E::finished, E::retire}) {
      EXPECT_EQ(next_phase(p, e), p);
    }
  }
}

TEST(WorkerLifecycle, PredicatesAgreeWithThePhases) {
  EXPECT_TRUE(dies_unstarted(P::failed_start));
  EXPECT_TRUE(dies_unstarted(P::forked));
  EXPECT_FALSE(dies_unstarted(P::stopping));
  EXPECT_FALSE(will_serve(P::retiring));
  EXPECT_FALSE(will_serve(P::stopping));
  EXPECT_TRUE(will_serve(P::forking));
  EXPECT_TRUE(has_greeted(P::greeted));
  EXPECT_FALSE(has_greeted(P::failed_start));
}

auto make_task(std::uint64_t id) -> std::shared_ptr<task> {
  auto t = std::make_shared<task>();
  t->id = id;
  return t;
}

TEST(TaskQueue, TasksRunInSubmissionOrderAndARetryGoesFirst) {
  task_queue q(0);
  for (std::uint64_t id = 1; id <= 3; ++id) q.admit(make_task(id));
  auto first = q.pop();
  EXPECT_EQ(first->id, 1U);
  EXPECT_EQ(first->where, task::place::running);
  q.push_front(first);
  EXPECT_EQ(q.pop()->id, 1U);
  EXPECT_EQ(q.pop()->id, 2U);
  EXPECT_EQ(q.pop()->id, 3U);
  EXPECT_EQ(q.pop(), nullptr);
  EXPECT_FALSE(q.empty());  // running tasks are still held until forgotten
  for (std::uint64_t id = 1; id <= 3; ++id) q.forget(id);
  EXPECT_TRUE(q.empty());
}

TEST(TaskQueue, ACancelledTaskLeavesFromTheMiddleAndARunningOneStays) {
  task_queue q(0);
  for (std::uint64_t id = 1; id <= 3; ++id) q.admit(make_task(id));
  EXPECT_EQ(q.take_unstarted(2)->id, 2U);
  EXPECT_EQ(q.take_unstarted(2), nullptr);
  auto running = q.pop();
  EXPECT_EQ(q.take_unstarted(running->id), nullptr);
  EXPECT_EQ(q.find(running->id), running);
  EXPECT_EQ(q.pop()->id, 3U);
}

TEST(TaskQueue, AFullQueueParksAndAdmitsInOrderThenReleasesRoomWaiters) {
  task_queue q(2);
  for (std::uint64_t id = 1; id <= 4; ++id) q.admit(make_task(id));
  EXPECT_EQ(q.queued(), 2U);
  EXPECT_EQ(q.parked(), 2U);
  EXPECT_FALSE(q.has_room());
  int released = 0;
  q.add_room_waiter(10, [&](std::exception_ptr ep) { released += ep ? 100 : 1; });
  EXPECT_TRUE(q.admit_parked().empty());  // still full
  q.pop();
  auto waiters = q.admit_parked();  // task 3 moves up; the queue is full again
  EXPECT_TRUE(waiters.empty());
  EXPECT_EQ(q.parked(), 1U);
  q.pop();
  q.pop();
  waiters = q.admit_parked();  // task 4 moves up, and there is room left
  ASSERT_EQ(waiters.size(), 1U);
  std::move(waiters.front())(nullptr);
  EXPECT_EQ(released, 1);
  EXPECT_EQ(q.pop()->id, 4U);
}

TEST(TaskQueue, TakingEverythingUnstartedLeavesTheRunningTasks) {
  task_queue q(1);
  for (std::uint64_t id = 1; id <= 3; ++id) q.admit(make_task(id));
  auto running = q.pop();
  q.admit_parked();
  const auto unstarted = q.take_all_unstarted();
  ASSERT_EQ(unstarted.size(), 2U);
  EXPECT_EQ(unstarted[0]->id, 2U);
  EXPECT_EQ(unstarted[1]->id, 3U);
  EXPECT_EQ(q.find(running->id), running);
  EXPECT_EQ(q.take_all().size(), 1U);
  EXPECT_TRUE(q.empty());
}

TEST(TaskQueue, ARoomWaiterCanBeTakenBackOnce) {
  task_queue q(1);
  q.add_room_waiter(7, [](std::exception_ptr) {});
  EXPECT_TRUE(static_cast<bool>(q.take_room_waiter(7)));
  EXPECT_FALSE(static_cast<bool>(q.take_room_waiter(7)));
}

auto options_with_spares(std::size_t spares) -> pool_options {
  pool_options o;
  o.spare_workers = spares;
  return o;
}

using failure = worker_supervisor::failure_decision::action;

// `n` start failures, each after the previous back-off ended.
void fail_starts(worker_supervisor& s, unsigned n) {
  for (unsigned i = 0; i < n; ++i) {
    s.start_failed();
    s.back_off_done();
  }
}

TEST(WorkerSupervisor, SlotsAreTheLowestFreeNumbersAndGrowWhileAllAreTaken) {
  worker_supervisor s(options_with_spares(0), 2);
  EXPECT_EQ(s.take_slot(), 0U);
  EXPECT_EQ(s.take_slot(), 1U);
  EXPECT_EQ(s.take_slot(), 2U);  // a recycled worker still holds its own
  s.free_slot(1);
  EXPECT_EQ(s.take_slot(), 1U);
  s.free_slot(99);  // not a slot: ignored
  s.free_all_slots();
  EXPECT_EQ(s.take_slot(), 0U);
}

TEST(WorkerSupervisor, ReplenishStartsTheMissingWorkersAtOnceAndSparesAfterADelay) {
  worker_supervisor s(options_with_spares(2), 4);
  EXPECT_EQ(s.full_strength(), 6U);
  auto d = s.replenish(3);
  EXPECT_EQ(d.spawn_now, 1U);
  EXPECT_TRUE(d.arm_spare_timer);
  d = s.replenish(3);  // the spare timer is armed already
  EXPECT_EQ(d.spawn_now, 1U);
  EXPECT_FALSE(d.arm_spare_timer);
  s.spare_timer_done();
  EXPECT_EQ(s.spares_missing(4), 2U);
  EXPECT_EQ(s.spares_missing(7), 0U);
  d = s.replenish(6);
  EXPECT_EQ(d.spawn_now, 0U);
  EXPECT_FALSE(d.arm_spare_timer);
}

TEST(WorkerSupervisor, WithoutSparesNoSpareTimerIsArmed) {
  worker_supervisor s(options_with_spares(0), 2);
  const auto d = s.replenish(0);
  EXPECT_EQ(d.spawn_now, 2U);
  EXPECT_FALSE(d.arm_spare_timer);
}

TEST(WorkerSupervisor, BackOffDoublesAfterEachStartFailureAndGivesUpAfterFive) {
  worker_supervisor s(options_with_spares(0), 1);
  for (const auto delay : {10ms, 20ms, 40ms, 80ms}) {
    const auto d = s.start_failed();
    EXPECT_EQ(d.what, failure::back_off);
    EXPECT_EQ(d.delay, delay);
    EXPECT_EQ(s.replenish(0).spawn_now, 0U);  // not before the back-off ends
    s.back_off_done();
  }
  EXPECT_EQ(s.start_failed().what, failure::give_up);
  EXPECT_EQ(s.replenish(0).spawn_now, 0U);
  EXPECT_EQ(s.start_failed().what, failure::give_up);  // each later failure fails the queue again
}

TEST(WorkerSupervisor, FailuresDuringABackOffCountButArmNoSecondTimer) {
  worker_supervisor s(options_with_spares(0), 4);
  EXPECT_EQ(s.start_failed().what, failure::back_off);
  EXPECT_EQ(s.start_failed().what, failure::backing_off);
  EXPECT_EQ(s.start_failed().what, failure::backing_off);
  s.back_off_done();
  const auto d = s.start_failed();
  EXPECT_EQ(d.what, failure::back_off);
  EXPECT_EQ(d.delay, 80ms);
}

TEST(WorkerSupervisor, AReadyWorkerEndsTheRunOfFailures) {
  worker_supervisor s(options_with_spares(0), 1);
  fail_starts(s, max_consecutive_start_failures - 1);
  s.worker_ready();
  EXPECT_EQ(s.start_failed().delay, 10ms);
}

TEST(WorkerSupervisor, ANewTaskAfterGivingUpTriesAfresh) {
  worker_supervisor s(options_with_spares(1), 2);
  EXPECT_FALSE(s.resume_on_new_task());  // it had not given up
  fail_starts(s, max_consecutive_start_failures);
  EXPECT_EQ(s.spares_missing(0), 0U);
  EXPECT_TRUE(s.resume_on_new_task());
  EXPECT_FALSE(s.resume_on_new_task());
  EXPECT_EQ(s.replenish(0).spawn_now, 2U);
  EXPECT_EQ(s.start_failed().delay, 10ms);
}

TEST(WorkerSupervisor, EveryWorkerGetsTheOptionsSetUp) {
  pool_options o;
  o.memory_limit_bytes = 1 << 20;
  o.cpu_time_limit = 3s;
  o.crash_output_lines = 7;
  const worker_supervisor s(o, 1);
  EXPECT_EQ(s.setup().memory_limit_bytes, 1U << 20);
  EXPECT_EQ(s.setup().cpu_seconds, 3U);
  EXPECT_EQ(s.tail().lines, 7U);
}

}  // namespace
}  // namespace procpool::detail
