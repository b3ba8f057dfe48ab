// A progress bar for process-pool work: count the primes below each of N numbers in the workers
// and show one bar with rate and ETA, redrawn in place on a terminal and as plain lines (one per
// tenth) when stdout is a file or a pipe.
//
//   progress_bar [numbers=400] [largest=2000000]
//
// Two kinds of progress feed it: `map` reports the numbers done as chunks finish, and one long
// task reports its own progress from inside the worker with procpool::report_progress.
#include <unistd.h>
#include <procpool/procpool.hpp>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/use_future.hpp>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

namespace asio = boost::asio;
using clock_type = std::chrono::steady_clock;

// [worker]
// Counts the primes below n by trial division: CPU-bound, and reports how far it has got.
auto count_primes_below(std::uint64_t n) -> std::uint64_t {
  std::uint64_t count = 0;
  for (std::uint64_t k = 2; k < n; ++k) {
    bool prime = true;
    for (std::uint64_t d = 2; d * d <= k; ++d) {
      if (k % d == 0) {
        prime = false;
        break;
      }
    }
    count += prime ? 1 : 0;
    if (k % 4096 == 0) procpool::report_progress(k, n);  // cheap: coalesced in the worker
  }
  return count;
}
// [worker]

// One bar: "label [#####.....]  40% 1200/3000 85.2/s ETA 21s", redrawn in place on a terminal;
// on anything else a plain line at each tenth, so that a log stays readable.
class progress_bar {
 public:
  explicit progress_bar(std::string label)
      : label_(std::move(label)), tty_(::isatty(STDOUT_FILENO) == 1) {}

  void update(const procpool::progress& p) {
    const double seconds = std::chrono::duration<double>(clock_type::now() - start_).count();
    const double rate = seconds > 0 ? static_cast<double>(p.done) / seconds : 0;
    const double fraction =
        p.total == 0 ? 0 : static_cast<double>(p.done) / static_cast<double>(p.total);
    const auto tenth = static_cast<int>(fraction * 10);
    if (!tty_ && tenth == last_tenth_) return;
    last_tenth_ = tenth;
    std::string eta = "?";
    if (rate > 0 && p.total >= p.done) {
      eta = std::to_string(static_cast<long>(static_cast<double>(p.total - p.done) / rate)) + "s";
    }
    constexpr int width = 30;
    const int filled = static_cast<int>(fraction * width);
    std::string bar(static_cast<std::size_t>(filled), '#');
    bar.resize(width, '.');
    std::printf("%s%s [%s] %3d%% %llu/%llu %.1f/s ETA %s%s", tty_ ? "\r\x1b[K" : "", label_.c_str(),
                bar.c_str(), static_cast<int>(fraction * 100),
                static_cast<unsigned long long>(p.done), static_cast<unsigned long long>(p.total),
                rate, eta.c_str(), tty_ ? "" : "\n");
    std::fflush(stdout);
  }

  void finish() {
    if (tty_) std::puts("");
  }

 private:
  std::string label_;
  bool tty_;
  clock_type::time_point start_ = clock_type::now();
  int last_tenth_ = -1;
};

auto run(procpool::process_pool& pool, std::uint64_t numbers, std::uint64_t largest)
    -> asio::awaitable<void> {
  // [map_progress]
  std::vector<std::uint64_t> inputs;
  for (std::uint64_t i = 1; i <= numbers; ++i) inputs.push_back(largest / 40 * (1 + i % 7));
  progress_bar bar("numbers");
  procpool::task_options options;
  options.on_progress = [&bar](const procpool::progress& p) { bar.update(p); };
  auto counts = co_await pool.map(options, count_primes_below, inputs, /*chunk_size=*/4);
  bar.finish();
  // [map_progress]
  std::uint64_t sum = 0;
  for (auto c : counts) sum += c;
  std::printf("counted %zu numbers (%llu primes in all)\n", counts.size(),
              static_cast<unsigned long long>(sum));

  // [task_progress]
  progress_bar one("one task");
  const auto primes = co_await pool.submit(
      procpool::task_options{.on_progress = [&one](const procpool::progress& p) { one.update(p); }},
      count_primes_below, largest);
  one.finish();
  // [task_progress]
  std::printf("primes below %llu: %llu\n", static_cast<unsigned long long>(largest),
              static_cast<unsigned long long>(primes));
  co_await pool.shutdown(procpool::shutdown_mode::graceful);  // and io.run() returns
}

int main(int argc, char** argv) {
  procpool::init();
  const std::uint64_t numbers = argc > 1 ? std::strtoull(argv[1], nullptr, 10) : 400;
  const std::uint64_t largest = argc > 2 ? std::strtoull(argv[2], nullptr, 10) : 2'000'000;
  asio::io_context io;
  procpool::process_pool pool{io.get_executor()};
  auto done = asio::co_spawn(io, run(pool, numbers, largest), asio::use_future);
  io.run();
  done.get();
}
