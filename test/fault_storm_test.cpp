// The fault storm: 10,000 tasks, one in ten misbehaving in a different way, all in flight at once.
// Every task must end exactly as its kind dictates, none may be lost, and the pool must be whole
// afterwards, with no process and no descriptor left behind once it is gone.
#include <signal.h>
#include <unistd.h>

#include <array>
#include <cstdint>
#include <map>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

#include "procpool/process_pool.hpp"
#include "support/pool_fixture.hpp"
#include "support/process_inspection.hpp"
#include "support/tasks.hpp"

namespace procpool::test {
namespace {

enum class kind {
  normal,
  segfault,
  abort,
  exit_7,
  killed,         // SIGKILL, as from outside
  throws,         // std::invalid_argument
  timeout,        // spins past its task timeout
  garbage_frame,  // writes bytes that are not a frame onto its channel
  hangs_up,       // closes its channel and waits
  oversized,      // returns more than max_message_bytes
  stack_overflow,
};

auto kind_of(int i) -> kind {
  const int r = i % 100;
  return r < 10 ? static_cast<kind>(r + 1) : kind::normal;  // ten misbehaving kinds: 10 %
}

// Recurses until the stack runs out; the bound is never reached (the compiler must not know that).
__attribute__((noinline)) auto recurse(int depth, int limit) -> int {
  volatile char frame[1024];
  frame[0] = static_cast<char>(depth);
  if (depth == limit) return frame[0];
  return recurse(depth + 1, limit) + frame[0];
}

auto storm_task(int i) -> std::string {
  switch (kind_of(i)) {
    case kind::normal:
      return "ok " + std::to_string(i);
    case kind::segfault:
      std::raise(SIGSEGV);
      break;
    case kind::abort:
      std::abort();
    case kind::exit_7:
      ::_exit(7);
    case kind::killed:
      std::raise(SIGKILL);
      break;
    case kind::throws:
      throw std::invalid_argument("bad input " + std::to_string(i));
    case kind::timeout:
      spin_forever(0);
      break;
    case kind::garbage_frame: {
      const char junk[64] = "this is not a procpool frame, it is garbage from a worker";
      (void)!::write(3, junk, sizeof junk);
      for (;;) ::pause();
    }
    case kind::hangs_up:
      ::close(3);
      for (;;) ::pause();
    case kind::oversized:
      return std::string(2u << 20, 'x');
    case kind::stack_overflow:
      return std::to_string(recurse(0, i + 100'000'000));
  }
  return "unreachable";
}

struct outcome {
  bool done = false;
  std::string value;
  std::string error;  // "crashed:<sig>:<code>:<detail>", "invalid_argument", "timeout", ...
};

auto classify(std::exception_ptr ep) -> std::string {
  try {
    std::rethrow_exception(ep);
  } catch (const worker_crashed& e) {
    return "crashed:" + std::to_string(e.signal()) + ":" + std::to_string(e.exit_code()) + ":" +
           e.detail();
  } catch (const timeout_error&) {
    return "timeout";
  } catch (const std::invalid_argument&) {
    return "invalid_argument";
  } catch (const std::exception& e) {
    return std::string("other: ") + e.what();
  }
}

auto expected_ok(const outcome& o, int i) -> ::testing::AssertionResult {
  const std::string& e = o.error;
  auto starts = [&](const std::string& prefix) { return e.rfind(prefix, 0) == 0; };
  bool good = false;
  switch (kind_of(i)) {
    case kind::normal:
      good = e.empty() && o.value == "ok " + std::to_string(i);
      break;
    case kind::segfault:
      good = e == "crashed:" + std::to_string(SIGSEGV) + ":-1:";
      break;
    case kind::abort:
      good = e == "crashed:" + std::to_string(SIGABRT) + ":-1:";
      break;
    case kind::exit_7:
      good = e == "crashed:0:7:";
      break;
    case kind::killed:
      good = e == "crashed:" + std::to_string(SIGKILL) + ":-1:";
      break;
    case kind::throws:
      good = e == "invalid_argument";
      break;
    case kind::timeout:
      good = e == "timeout";
      break;
    case kind::garbage_frame:
      good =
          starts("crashed:" + std::to_string(SIGKILL) + ":-1:sent a frame with a bad magic number");
      break;
    case kind::hangs_up:
      good = e == "crashed:" + std::to_string(SIGKILL) + ":-1:closed its channel to the pool";
      break;
    case kind::oversized:
      good = starts("crashed:" + std::to_string(SIGKILL) + ":-1:sent a frame of ");
      break;
    case kind::stack_overflow:
      good = e == "crashed:" + std::to_string(SIGSEGV) + ":-1:";
      break;
  }
  if (good) return ::testing::AssertionSuccess();
  return ::testing::AssertionFailure()
         << "task " << i << " (kind " << static_cast<int>(kind_of(i)) << ") ended with value '"
         << o.value.substr(0, 40) << "' error '" << e << "'";
}

class FaultStorm : public PoolTest {
 protected:
  // n tasks (a multiple of 100), one in ten misbehaving in one of ten ways, on two workers.
  void run_storm(int n, std::optional<procpool::sandbox> sandbox);
};

TEST_F(FaultStorm, TenThousandTasksTenPercentMisbehavingEveryOutcomeExact) {
  run_storm(10'000, std::nullopt);
}

// The same kinds of misbehaviour inside compute_only(): each ends the same way (none of them
// needs a call the filter forbids), and the good tasks pass.
TEST_F(FaultStorm, InsideTheSandboxEveryOutcomeIsTheSame) {
  run_storm(1'000, procpool::sandbox::compute_only());
}

void FaultStorm::run_storm(int n, std::optional<procpool::sandbox> sandbox) {
  {
    // Asio's reactor descriptors become part of the baseline (see Lifecycle's descriptor test).
    process_pool warm_up{io_.get_executor(), {.workers = 1}};
    get(warm_up.async_submit(square, 1, asio::use_future));
  }
  const int fds_before = open_fd_count();
  constexpr std::size_t workers = 2;
  std::vector<outcome> outcomes(n);
  {
    process_pool pool{io_.get_executor(),
                      {.workers = workers,
                       .max_message_bytes = std::size_t{1} << 20,
                       .output = [](const output_line&) {},
                       .sandbox = sandbox}};
    std::promise<void> all_done;
    int remaining = n;  // touched only on the io thread, where the callbacks run
    const task_options timeout_option{.timeout = std::chrono::milliseconds(50)};
    for (int i = 0; i < n; ++i) {
      auto on_done = [&, i](std::exception_ptr ep, std::string value) {
        auto& o = outcomes[static_cast<std::size_t>(i)];
        EXPECT_FALSE(o.done) << "task " << i << " completed twice";
        o.done = true;
        o.value = std::move(value);
        if (ep) o.error = classify(ep);
        if (--remaining == 0) all_done.set_value();
      };
      if (kind_of(i) == kind::timeout) {
        pool.async_submit(timeout_option, storm_task, i, on_done);
      } else {
        pool.async_submit(storm_task, i, on_done);
      }
    }
    get(all_done.get_future());

    std::map<std::string, int> by_error;
    int wrong = 0;
    for (int i = 0; i < n; ++i) {
      const auto& o = outcomes[static_cast<std::size_t>(i)];
      ASSERT_TRUE(o.done) << "task " << i << " was lost";
      if (!expected_ok(o, i)) {
        if (++wrong <= 10) ADD_FAILURE() << expected_ok(o, i).message();
      }
      by_error[o.error.substr(0, o.error.find(':', 8))]++;
    }
    EXPECT_EQ(wrong, 0);
    const pool_stats s = pool.stats();
    const auto hundredth = static_cast<std::uint64_t>(n / 100);
    EXPECT_EQ(s.completed, 90 * hundredth);
    EXPECT_EQ(s.failed, hundredth);       // the throwing kind
    EXPECT_EQ(s.timed_out, hundredth);    // the timeout kind
    EXPECT_EQ(s.crashed, 8 * hundredth);  // the eight crashing kinds
    EXPECT_EQ(s.workers, workers) << "the pool is not back to full size";
    EXPECT_EQ(get(pool.async_submit(square, 12, asio::use_future)), 144);
    std::printf(
        "fault storm%s: %d tasks; completed %llu, failed %llu, crashed %llu, timed out %llu, "
        "respawned %llu\n",
        sandbox ? " (sandboxed)" : "", n, static_cast<unsigned long long>(s.completed),
        static_cast<unsigned long long>(s.failed), static_cast<unsigned long long>(s.crashed),
        static_cast<unsigned long long>(s.timed_out), static_cast<unsigned long long>(s.respawned));
  }
  for (const auto& p : leftover_processes()) {
    ADD_FAILURE() << "left behind: pid " << p.pid << " " << p.name << " state " << p.state;
  }
  EXPECT_EQ(open_fd_count(), fds_before);
}

}  // namespace
}  // namespace procpool::test
