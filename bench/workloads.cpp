// The peer workloads W1–W6 of ../shared/peers/RESULTS.md, run on procpool with 2 workers, plus
// start-up, memory and idle-CPU figures. Prints `name: value unit` lines in the peers' format, so
// scripts/bench-compare.sh can put them side by side.
//
// Usage: workloads [--quick] [--workloads w1,w2,...] [--prefix procpool]
//   --quick: far fewer iterations, for CI's smoke run (figures then mean nothing).
#include <fcntl.h>
#include <sys/resource.h>
#include <unistd.h>
#include <zlib.h>

#include <algorithm>
#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/thread_pool.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/use_future.hpp>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <optional>
#include <procpool/procpool.hpp>
#include <stdexcept>
#include <string>
#include <thread>
#include <utility>
#include <vector>

namespace asio = boost::asio;
using clock_type = std::chrono::steady_clock;
using namespace std::chrono_literals;

namespace {

bool quick = false;
std::string prefix = "procpool";

void print(const std::string& name, double value, const char* unit) {
  std::printf("%s.%s: %.4g %s\n", prefix.c_str(), name.c_str(), value, unit);
  std::fflush(stdout);
}

auto ms_since(clock_type::time_point t) -> double {
  return std::chrono::duration<double, std::milli>(clock_type::now() - t).count();
}

auto median(std::vector<double> v) -> double {
  std::sort(v.begin(), v.end());
  return v.empty() ? 0 : v[v.size() / 2];
}

auto percentile(std::vector<double> v, double p) -> double {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  return v[std::min(v.size() - 1, static_cast<std::size_t>(p * static_cast<double>(v.size())))];
}

// ---- the tasks (run in the workers) ----

auto square(int x) -> int {
  return x * x;
}

auto sleep_ms(int ms) -> int {
  std::this_thread::sleep_for(std::chrono::milliseconds(ms));
  return ms;
}

auto length_and_crc(const std::vector<std::byte>& buffer)
    -> std::pair<std::uint64_t, std::uint32_t> {
  const auto crc = ::crc32_z(0, reinterpret_cast<const Bytef*>(buffer.data()), buffer.size());
  return {buffer.size(), static_cast<std::uint32_t>(crc)};
}

// W3 as a user who wants no copy in the worker writes it: the bytes are read where they arrived.
auto length_and_crc_in_place(procpool::shared_bytes buffer)
    -> std::pair<std::uint64_t, std::uint32_t> {
  const auto crc = ::crc32_z(0, reinterpret_cast<const Bytef*>(buffer.data()), buffer.size());
  return {buffer.size(), static_cast<std::uint32_t>(crc)};
}

auto lcg_chain(std::uint32_t n) -> std::uint32_t {
  std::uint32_t x = 1;
  for (std::uint32_t i = 0; i < n; ++i) x = x * 1664525U + 1013904223U;
  return x;
}

auto abort_now(int) -> int {
  std::abort();
}

auto spin_forever(int) -> int {
  volatile unsigned long n = 0;
  for (;;) n = n + 1;
}

// ---- helpers in the parent ----

// Resident memory of `pid` in bytes (0 when it is gone).
auto resident_bytes(int pid) -> double {
  std::ifstream statm("/proc/" + std::to_string(pid) + "/statm");
  double size = 0, resident = 0;
  if (!(statm >> size >> resident)) return 0;
  return resident * static_cast<double>(::sysconf(_SC_PAGESIZE));
}

// CPU time (user + system) of `pid` in clock ticks, or -1 when it is gone or a zombie.
auto cpu_ticks(int pid) -> long {
  std::ifstream stat("/proc/" + std::to_string(pid) + "/stat");
  std::string text((std::istreambuf_iterator<char>(stat)), {});
  const auto close = text.rfind(')');
  if (close == std::string::npos) return -1;
  char state = 0;
  unsigned long utime = 0, stime = 0;
  if (std::sscanf(text.c_str() + close + 1, " %c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %lu %lu",
                  &state, &utime, &stime) != 3 ||
      state == 'Z') {
    return -1;
  }
  return static_cast<long>(utime + stime);
}

// Fills both workers with a 50 ms sleep twice over, as every peer does before timing.
auto warm_up(procpool::process_pool& pool) -> asio::awaitable<void> {
  std::vector<std::future<int>> sleeps;
  for (int i = 0; i < 4; ++i) sleeps.push_back(pool.async_submit(sleep_ms, 50, asio::use_future));
  for (auto& s : sleeps) {
    asio::steady_timer t(co_await asio::this_coro::executor, 1ms);
    while (s.wait_for(0s) != std::future_status::ready) {
      t.expires_after(1ms);
      co_await t.async_wait(asio::use_awaitable);
    }
    s.get();
  }
}

// ---- the workloads ----

auto w1(procpool::process_pool& pool) -> asio::awaitable<void> {
  const int calls = quick ? 50 : 2000;
  for (int i = 0; i < (quick ? 10 : 200); ++i) co_await pool.submit(square, i);
  std::vector<double> per_call_us;
  for (int rep = 0; rep < 3; ++rep) {
    const auto start = clock_type::now();
    for (int i = 0; i < calls; ++i) {
      if (co_await pool.submit(square, i) != i * i) throw std::runtime_error("w1: wrong result");
    }
    per_call_us.push_back(ms_since(start) * 1000.0 / calls);
  }
  print("w1.rtt_median", median(per_call_us), "us");
}

// W1 under load: 1,000 coroutines, each awaiting round trips one after another, so that 1,000 tasks
// are in flight at every moment; each round trip's latency counts. `round_trip(c)` is one call.
template <class RoundTrip>
auto latencies_under_load(RoundTrip round_trip) -> asio::awaitable<std::vector<double>> {
  const int in_flight = quick ? 20 : 1000;
  const int rounds = quick ? 2 : 20;
  auto ex = co_await asio::this_coro::executor;
  std::vector<double> us;
  us.reserve(static_cast<std::size_t>(in_flight * rounds));
  int finished = 0, wrong = 0;
  asio::steady_timer all_done(ex, clock_type::time_point::max());
  for (int c = 0; c < in_flight; ++c) {
    auto client = [&, c]() -> asio::awaitable<void> {
      for (int r = 0; r < rounds; ++r) {
        const auto start = clock_type::now();
        if (co_await round_trip(c % 1000) != (c % 1000) * (c % 1000)) ++wrong;
        us.push_back(ms_since(start) * 1000);
      }
      if (++finished == in_flight) all_done.cancel();
    };
    asio::co_spawn(ex, std::move(client), asio::detached);
  }
  if (finished < in_flight) co_await all_done.async_wait(asio::as_tuple(asio::use_awaitable));
  if (wrong != 0) throw std::runtime_error("w1_load: wrong results");
  co_return us;
}

auto w1_load(procpool::process_pool& pool) -> asio::awaitable<void> {
  auto us = co_await latencies_under_load(
      [&pool](int x) -> asio::awaitable<int> { co_return co_await pool.submit(square, x); });
  print("w1_load.p50", percentile(us, 0.5), "us");
  print("w1_load.p99", percentile(us, 0.99), "us");
}

// The same load on Asio's thread_pool (2 threads) with co_spawn, measured in this process and run,
// so procpool's tail latency has an in-process peer beside it.
auto w1_load_asio() -> asio::awaitable<void> {
  asio::thread_pool threads(2);
  auto us = co_await latencies_under_load([&threads](int x) -> asio::awaitable<int> {
    co_return co_await asio::co_spawn(
        threads, [x]() -> asio::awaitable<int> { co_return square(x); }, asio::use_awaitable);
  });
  threads.join();
  const std::string plain = std::exchange(prefix, "cpp_asio_cospawn_local");
  print("w1_load.p50", percentile(us, 0.5), "us");
  print("w1_load.p99", percentile(us, 0.99), "us");
  prefix = plain;
}

auto w2(procpool::process_pool& pool) -> asio::awaitable<void> {
  const int tasks = quick ? 500 : 50'000;
  auto ex = co_await asio::this_coro::executor;
  asio::steady_timer all_done(ex, clock_type::time_point::max());
  int done = 0, wrong = 0;
  const auto start = clock_type::now();
  for (int i = 0; i < tasks; ++i) {
    pool.async_submit(square, i % 1000, [&, i](std::exception_ptr ep, int r) {
      if (ep || r != (i % 1000) * (i % 1000)) ++wrong;
      if (++done == tasks) all_done.cancel();
    });
  }
  if (done < tasks) co_await all_done.async_wait(asio::as_tuple(asio::use_awaitable));
  const double s = ms_since(start) / 1000.0;
  if (wrong != 0) throw std::runtime_error("w2: wrong results");
  print("w2.throughput", tasks / s, "tasks/s");

  // The same 50,000 calls through pool.map, 1,000 items per task.
  std::vector<int> items(static_cast<std::size_t>(tasks));
  for (int i = 0; i < tasks; ++i) items[static_cast<std::size_t>(i)] = i % 1000;
  std::vector<double> map_rates;
  for (int rep = 0; rep < 3; ++rep) {
    const auto map_start = clock_type::now();
    const auto squares = co_await pool.map(square, items, 1000);
    const double map_s = ms_since(map_start) / 1000.0;
    for (int i = 0; i < tasks; ++i) {
      if (squares[static_cast<std::size_t>(i)] != (i % 1000) * (i % 1000))
        throw std::runtime_error("w2: wrong map result");
    }
    map_rates.push_back(tasks / map_s);
  }
  print("w2.map_throughput", median(map_rates), "tasks/s");
}

auto w3(procpool::process_pool& pool) -> asio::awaitable<void> {
  const std::size_t size = quick ? (std::size_t{1} << 20) : (std::size_t{64} << 20);
  std::vector<std::byte> buffer(size);
  for (std::size_t i = 0; i < size; ++i) buffer[i] = static_cast<std::byte>(i % 256);
  const auto local_start = clock_type::now();
  const auto expected = length_and_crc(buffer);
  print("w3.local_crc_ms", ms_since(local_start), "ms");
  if (!quick && expected.second != 0x8d2b400fU) throw std::runtime_error("w3: local crc differs");
  std::vector<double> mib_per_s;
  for (int rep = 0; rep < 5; ++rep) {
    const auto start = clock_type::now();
    const auto got = co_await pool.submit(length_and_crc, buffer);
    const double s = ms_since(start) / 1000.0;
    if (got != expected) throw std::runtime_error("w3: wrong length or crc");
    mib_per_s.push_back(static_cast<double>(size) / (1 << 20) / s);
  }
  print("w3.roundtrip_median", median(mib_per_s), "MiB/s");
  mib_per_s.clear();
  for (int rep = 0; rep < 5; ++rep) {
    const auto start = clock_type::now();
    const auto got = co_await pool.submit(length_and_crc_in_place, buffer);
    const double s = ms_since(start) / 1000.0;
    if (got != expected) throw std::runtime_error("w3: wrong length or crc (in place)");
    mib_per_s.push_back(static_cast<double>(size) / (1 << 20) / s);
  }
  print("w3.shared_bytes_roundtrip_median", median(mib_per_s), "MiB/s");
}

auto w4(procpool::process_pool& pool) -> asio::awaitable<void> {
  const std::uint32_t n = quick ? 1'000'000 : 260'000'000;
  const auto one = clock_type::now();
  const std::uint32_t expected = lcg_chain(n);
  print("w4.task_ms", ms_since(one), "ms");
  const auto serial_start = clock_type::now();
  for (int i = 0; i < 8; ++i) {
    if (lcg_chain(n) != expected) throw std::runtime_error("w4: serial differs");
  }
  const double serial_s = ms_since(serial_start) / 1000.0;
  std::vector<double> pool_s;
  auto ex = co_await asio::this_coro::executor;
  for (int rep = 0; rep < 3; ++rep) {
    // Completions count down on the io thread; no polling, which would take CPU from the workers.
    asio::steady_timer all_done(ex, clock_type::time_point::max());
    int done = 0, wrong = 0;
    const auto start = clock_type::now();
    for (int i = 0; i < 8; ++i) {
      pool.async_submit(lcg_chain, n, [&](std::exception_ptr ep, std::uint32_t r) {
        if (ep || r != expected) ++wrong;
        if (++done == 8) all_done.cancel();
      });
    }
    if (done < 8) co_await all_done.async_wait(asio::as_tuple(asio::use_awaitable));
    if (wrong != 0) throw std::runtime_error("w4: pool result differs");
    pool_s.push_back(ms_since(start) / 1000.0);
  }
  print("w4.serial_s", serial_s, "s");
  print("w4.pool_s", median(pool_s), "s");
  print("w4.speedup", serial_s / median(pool_s), "x");
  print("w4.speedup_worst", serial_s / *std::max_element(pool_s.begin(), pool_s.end()), "x");
}

auto w5(asio::io_context& io, std::size_t spares) -> asio::awaitable<void> {
  procpool::process_pool pool{io.get_executor(),
                              {.workers = 2, .spare_workers = spares, .output = [](auto&) {}}};
  co_await warm_up(pool);
  auto sibling = pool.async_submit(sleep_ms, 300, asio::use_future);
  asio::steady_timer t(io, 50ms);
  co_await t.async_wait(asio::use_awaitable);
  const auto submit = clock_type::now();
  bool crashed = false;
  try {
    co_await pool.submit(abort_now, 0);
  } catch (const procpool::worker_crashed&) {
    crashed = true;
  }
  const double error_ms = ms_since(submit);
  const auto after = clock_type::now();
  const bool same_pool_ok = (co_await pool.submit(square, 7)) == 49;
  const double next_ms = ms_since(after);
  bool sibling_ok = false;
  while (sibling.wait_for(0s) != std::future_status::ready) {
    t.expires_after(1ms);
    co_await t.async_wait(asio::use_awaitable);
  }
  try {
    sibling_ok = sibling.get() == 300;
  } catch (...) {
  }
  print("w5.error_ms", error_ms, "ms");
  print("w5.crash_reported", crashed ? 1 : 0, "bool");
  print("w5.sibling_ok", sibling_ok ? 1 : 0, "bool");
  print("w5.same_pool_ok", same_pool_ok ? 1 : 0, "bool");
  print("w5.next_task_ms", next_ms, "ms");
}

auto w6(asio::io_context& io, std::size_t spares) -> asio::awaitable<void> {
  procpool::process_pool pool{io.get_executor(),
                              {.workers = 2, .spare_workers = spares, .output = [](auto&) {}}};
  co_await warm_up(pool);
  const auto before = pool.worker_pids();
  const auto start = clock_type::now();
  bool timed_out = false;
  try {
    co_await procpool::wait_for(pool.submit(spin_forever, 0), 500ms);
  } catch (const procpool::timeout_error&) {
    timed_out = true;
  }
  const auto timeout_seen = clock_type::now();
  print("w6.timeout_ms", std::chrono::duration<double, std::milli>(timeout_seen - start).count(),
        "ms");
  // The spinner was one of the two workers that existed before; whichever is gone is it.
  const auto after = pool.worker_pids();
  int victim = 0;
  for (int pid : before) {
    if (std::find(after.begin(), after.end(), pid) == after.end()) victim = pid;
  }
  double exit_ms = victim != 0 && cpu_ticks(victim) < 0 ? 0.0 : -1.0;
  const auto two_start = clock_type::now();
  asio::steady_timer both_done(io, clock_type::time_point::max());
  int answered = 0, right = 0;
  for (int x : {3, 4}) {
    pool.async_submit(square, x, [&, x](std::exception_ptr ep, int r) {
      right += !ep && r == x * x ? 1 : 0;
      if (++answered == 2) both_done.cancel();
    });
  }
  if (answered < 2) co_await both_done.async_wait(asio::as_tuple(asio::use_awaitable));
  const bool two_ok = right == 2;
  const double two_ms = ms_since(two_start);
  asio::steady_timer t(io);
  // Poll like the peers, should the victim still be there (it never is: the pool reports the
  // timeout only after the worker is reaped).
  for (int i = 0; exit_ms < 0 && i < 600; ++i) {
    if (cpu_ticks(victim) < 0) exit_ms = ms_since(timeout_seen);
    t.expires_after(5ms);
    co_await t.async_wait(asio::use_awaitable);
  }
  print("w6.timed_out", timed_out ? 1 : 0, "bool");
  print("w6.worker_found", victim != 0 ? 1 : 0, "bool");
  print("w6.worker_exit_ms", exit_ms, "ms");
  print("w6.worker_alive_1s", exit_ms < 0 ? 1 : 0, "bool");
  print("w6.two_tasks_ms", two_ok ? two_ms : -1, "ms");
}

// Start-up: a new pool's first result, and a crashed worker's replacement's first result.
auto spawn(asio::io_context& io, std::optional<procpool::sandbox> sandbox = std::nullopt)
    -> asio::awaitable<void> {
  std::vector<double> first_us, respawn_us;
  for (int rep = 0; rep < (quick ? 3 : 21); ++rep) {
    const auto start = clock_type::now();
    procpool::process_pool pool{io.get_executor(),
                                {.workers = 1, .output = [](auto&) {}, .sandbox = sandbox}};
    co_await pool.submit(square, 1);
    first_us.push_back(ms_since(start) * 1000);
    try {
      co_await pool.submit(abort_now, 0);
    } catch (const procpool::worker_crashed&) {
    }
    const auto crash_seen = clock_type::now();
    co_await pool.submit(square, 2);
    respawn_us.push_back(ms_since(crash_seen) * 1000);
  }
  print("spawn.first_result_us", median(first_us), "us");
  print("spawn.respawn_us", median(respawn_us), "us");
}

// Memory: the parent's resident growth per queued task, and an idle worker's resident size.
auto memory(asio::io_context& io) -> asio::awaitable<void> {
  procpool::process_pool pool{io.get_executor(), {.workers = 2, .output = [](auto&) {}}};
  co_await warm_up(pool);
  for (int pid : pool.worker_pids())
    print("memory.worker_idle_rss_kib", resident_bytes(pid) / 1024, "KiB");
  const int tasks = quick ? 1000 : 100'000;
  // Both workers sleep while the tasks queue up behind them.
  auto s1 = pool.async_submit(sleep_ms, 200, asio::use_future);
  auto s2 = pool.async_submit(sleep_ms, 200, asio::use_future);
  const double before = resident_bytes(static_cast<int>(::getpid()));
  int done = 0;
  asio::steady_timer all_done(io, clock_type::time_point::max());
  for (int i = 0; i < tasks; ++i) {
    pool.async_submit(square, i, [&](std::exception_ptr, int) {
      if (++done == tasks) all_done.cancel();
    });
  }
  const double during = resident_bytes(static_cast<int>(::getpid()));
  print("memory.parent_bytes_per_queued_task", (during - before) / tasks, "bytes");
  if (done < tasks) co_await all_done.async_wait(asio::as_tuple(asio::use_awaitable));
  s1.get();
  s2.get();
}

// CPU an idle pool burns: parent, fork server and workers over a quiet interval.
auto idle_cpu(asio::io_context& io) -> asio::awaitable<void> {
  procpool::process_pool pool{io.get_executor(), {.workers = 2, .output = [](auto&) {}}};
  co_await warm_up(pool);
  std::vector<int> pids = pool.worker_pids();
  pids.push_back(static_cast<int>(::getpid()));
  auto total = [&] {
    long t = 0;
    for (int p : pids) t += std::max(0L, cpu_ticks(p));
    return t;
  };
  const long before = total();
  const auto start = clock_type::now();
  asio::steady_timer t(io, quick ? 200ms : 2s);
  co_await t.async_wait(asio::use_awaitable);
  const double ticks = static_cast<double>(total() - before);
  const double seconds = ms_since(start) / 1000;
  print("idle.cpu_percent", 100.0 * ticks / static_cast<double>(::sysconf(_SC_CLK_TCK)) / seconds,
        "%");
}

}  // namespace

int main(int argc, char** argv) {
  procpool::init();
  std::string which = "w1,w1_load,w2,w2_ahead,w3,w4,w5,w6,spawn,sandbox,memory,idle";
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--quick") quick = true;
    if (a == "--workloads" && i + 1 < argc) which = argv[++i];
    if (a == "--prefix" && i + 1 < argc) prefix = argv[++i];
  }
  auto wanted = [&](const char* w) {
    return ("," + which + ",").find(std::string(",") + w + ",") != std::string::npos;
  };
  asio::io_context io;
  int status = 0;
  asio::co_spawn(
      io,
      [&]() -> asio::awaitable<void> {
        {
          procpool::process_pool pool{io.get_executor(), {.workers = 2}};
          co_await warm_up(pool);
          if (wanted("w1")) co_await w1(pool);
          if (wanted("w1_load")) co_await w1_load(pool);
          if (wanted("w2")) co_await w2(pool);
          if (wanted("w3")) co_await w3(pool);
          if (wanted("w4")) co_await w4(pool);
          co_await pool.shutdown(procpool::shutdown_mode::graceful);
        }
        if (wanted("w2_ahead")) {
          // W2 and W1 under load (co_await submit: cancellable tasks) again with
          // pool_options::send_ahead, under their own names.
          procpool::process_pool pool{io.get_executor(), {.workers = 2, .send_ahead = 16}};
          co_await warm_up(pool);
          const std::string plain = std::exchange(prefix, prefix + "_send_ahead");
          co_await w2(pool);
          co_await w1_load(pool);
          prefix = plain;
          co_await pool.shutdown(procpool::shutdown_mode::graceful);
        }
        if (wanted("w1_load")) co_await w1_load_asio();
        if (wanted("w5")) co_await w5(io, 0);
        if (wanted("w6")) co_await w6(io, 0);
        // The same with one hot spare (pool_options::spare_workers), under their own names.
        const std::string plain = std::exchange(prefix, prefix + "_spare1");
        if (wanted("w5")) co_await w5(io, 1);
        if (wanted("w6")) co_await w6(io, 1);
        prefix = plain;
        if (wanted("spawn")) co_await spawn(io);
        if (wanted("sandbox")) {
          // W1 and the start of a worker again, with sandbox::compute_only() (a network
          // namespace, the uid drop as root, no-new-privs and the seccomp filter in each new
          // worker), under their own names beside the rows above.
          const std::string unsandboxed = std::exchange(prefix, prefix + "_sandbox");
          {
            procpool::process_pool pool{
                io.get_executor(), {.workers = 2, .sandbox = procpool::sandbox::compute_only()}};
            co_await warm_up(pool);
            co_await w1(pool);
            co_await pool.shutdown(procpool::shutdown_mode::graceful);
          }
          co_await spawn(io, procpool::sandbox::compute_only());
          prefix = unsandboxed;
        }
        if (wanted("memory")) co_await memory(io);
        if (wanted("idle")) co_await idle_cpu(io);
      },
      [&](std::exception_ptr ep) {
        if (!ep) return;
        try {
          std::rethrow_exception(ep);
        } catch (const std::exception& e) {
          std::fprintf(stderr, "workloads: %s\n", e.what());
        }
        status = 1;
      });
  io.run();
  return status;
}
