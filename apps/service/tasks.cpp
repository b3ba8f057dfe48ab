#include "tasks.hpp"

#include <openssl/evp.h>
#include <sys/resource.h>
#include <unistd.h>

#include <algorithm>
#include <boost/json/parse.hpp>
#include <boost/json/serialize.hpp>
#include <chrono>
#include <complex>
#include <csignal>
#include <cstdio>
#include <cstring>
#include <memory>
#include <procpool/progress.hpp>
#include <random>
#include <thread>

namespace json = boost::json;

namespace service {

auto task_registry::global() -> task_registry& {
  static task_registry registry;
  return registry;
}

void task_registry::add(task_definition task) {
  if (find(task.name) != nullptr) throw std::logic_error("task registered twice: " + task.name);
  if (task.fields.empty()) task.fields = describe_fields(task.check);
  tasks_.push_back(std::move(task));
}

auto task_registry::find(std::string_view name) const -> const task_definition* {
  for (const auto& t : tasks_) {
    if (t.name == name) return &t;
  }
  return nullptr;
}

auto run_task(std::string name, std::string input) -> std::string {
  const task_definition* task = task_registry::global().find(name);
  if (task == nullptr) throw bad_task_input("unknown task: " + name);
  const json::value parsed = json::parse(input);
  return json::serialize(task->run(parsed.as_object()));
}

namespace {

auto field_error(std::string_view key, const std::string& what) -> bad_task_input {
  return bad_task_input("input." + std::string(key) + ": " + what);
}

// Set while describe_fields runs a parse: the field helpers record what they are asked for.
thread_local std::vector<field_description>* recording = nullptr;

void record(std::string_view key, const char* type, json::value min, json::value max,
            json::value fallback) {
  if (recording != nullptr) {
    recording->push_back(
        {std::string(key), type, std::move(min), std::move(max), std::move(fallback)});
  }
}

}  // namespace

auto describe_fields(void (*check)(const json::object&)) -> std::vector<field_description> {
  std::vector<field_description> fields;
  struct stop_recording {
    ~stop_recording() { recording = nullptr; }
  } guard;
  recording = &fields;
  try {
    check(json::object{});
  } catch (...) {
    // A required field with no default stops the parse: what was recorded up to it stands.
  }
  return fields;
}

auto integer_field(const json::object& input, std::string_view key, std::int64_t min,
                   std::int64_t max, std::int64_t fallback) -> std::int64_t {
  record(key, "integer", min, max, fallback);
  const json::value* v = input.if_contains(key);
  if (v == nullptr) return fallback;
  std::int64_t n = 0;
  if (v->is_int64()) {
    n = v->get_int64();
  } else if (!v->is_uint64()) {
    throw field_error(key, "must be an integer");
  }
  // Boost.JSON keeps an integer as uint64 only when it does not fit int64: above any max.
  if (!v->is_int64() || n < min || n > max) {
    throw field_error(key,
                      "must be between " + std::to_string(min) + " and " + std::to_string(max));
  }
  return n;
}

auto number_field(const json::object& input, std::string_view key, double min, double max,
                  double fallback) -> double {
  record(key, "number", min, max, fallback);
  const json::value* v = input.if_contains(key);
  if (v == nullptr) return fallback;
  if (!v->is_number()) throw field_error(key, "must be a number");
  const double d = v->to_number<double>();
  if (!(d >= min && d <= max)) {
    throw field_error(key,
                      "must be between " + std::to_string(min) + " and " + std::to_string(max));
  }
  return d;
}

auto string_field(const json::object& input, std::string_view key, std::size_t max_size,
                  std::string_view fallback) -> std::string {
  record(key, "string", nullptr, max_size, json::string(fallback));
  const json::value* v = input.if_contains(key);
  if (v == nullptr) return std::string(fallback);
  if (!v->is_string()) throw field_error(key, "must be a string");
  if (v->get_string().size() > max_size) {
    throw field_error(key, "must be at most " + std::to_string(max_size) + " bytes");
  }
  return std::string(v->get_string());
}

// ---- the built-in tasks ----

namespace {

struct count_primes_input {
  std::int64_t n;
  static auto parse(const json::object& in) -> count_primes_input {
    return {integer_field(in, "n", 0, 400'000'000, 1'000'000)};
  }
};

/// Primes below n, by the sieve of Eratosthenes.
auto count_primes(const count_primes_input& in) -> json::value {
  const auto n = static_cast<std::size_t>(in.n);
  std::vector<bool> composite(n, false);
  std::int64_t count = 0;
  for (std::size_t i = 2; i < n; ++i) {
    if (i % 65536 == 0) procpool::report_progress(i, n);
    if (composite[i]) continue;
    ++count;
    for (std::size_t j = i * i; j < n; j += i) composite[j] = true;
  }
  return {{"n", in.n}, {"primes", count}};
}

struct mandelbrot_input {
  std::int64_t width, height, max_iterations;
  double center_x, center_y, scale;
  static auto parse(const json::object& in) -> mandelbrot_input {
    return {integer_field(in, "width", 1, 8192, 400),
            integer_field(in, "height", 1, 8192, 300),
            integer_field(in, "max_iterations", 1, 1'000'000, 500),
            number_field(in, "center_x", -4, 4, -0.5),
            number_field(in, "center_y", -4, 4, 0),
            number_field(in, "scale", 1e-15, 10, 3)};
  }
};

/// A tile of the Mandelbrot set: how many points stay bounded, and the total escape iterations.
auto mandelbrot(const mandelbrot_input& in) -> json::value {
  std::int64_t inside = 0, iterations = 0;
  const double step = in.scale / static_cast<double>(in.width);
  for (std::int64_t y = 0; y < in.height; ++y) {
    procpool::report_progress(static_cast<std::uint64_t>(y), static_cast<std::uint64_t>(in.height),
                              "rows");
    for (std::int64_t x = 0; x < in.width; ++x) {
      const std::complex<double> c(in.center_x + (static_cast<double>(x) - in.width / 2.0) * step,
                                   in.center_y + (static_cast<double>(y) - in.height / 2.0) * step);
      std::complex<double> z = 0;
      std::int64_t i = 0;
      while (i < in.max_iterations && std::norm(z) <= 4.0) {
        z = z * z + c;
        ++i;
      }
      iterations += i;
      inside += (i == in.max_iterations);
    }
  }
  return {{"points", in.width * in.height}, {"inside", inside}, {"iterations", iterations}};
}

struct sha256_chain_input {
  std::string data;
  std::int64_t rounds;
  static auto parse(const json::object& in) -> sha256_chain_input {
    return {string_field(in, "data", 1 << 20, "procpool"),
            integer_field(in, "rounds", 1, 100'000'000, 100'000)};
  }
};

/// SHA-256 applied `rounds` times, each round hashing the previous digest.
auto sha256_chain(const sha256_chain_input& in) -> json::value {
  unsigned char digest[EVP_MAX_MD_SIZE];
  unsigned int size = 0;
  EVP_Digest(in.data.data(), in.data.size(), digest, &size, EVP_sha256(), nullptr);
  for (std::int64_t r = 1; r < in.rounds; ++r) {
    if (r % 4096 == 0) {
      procpool::report_progress(static_cast<std::uint64_t>(r),
                                static_cast<std::uint64_t>(in.rounds), "rounds");
    }
    EVP_Digest(digest, size, digest, &size, EVP_sha256(), nullptr);
  }
  std::string hex;
  char byte[3];
  for (unsigned int i = 0; i < size; ++i) {
    std::snprintf(byte, sizeof byte, "%02x", digest[i]);
    hex += byte;
  }
  return {{"rounds", in.rounds}, {"digest", hex}};
}

struct sort_input {
  std::int64_t count, seed;
  static auto parse(const json::object& in) -> sort_input {
    return {integer_field(in, "count", 1, 100'000'000, 1'000'000),
            integer_field(in, "seed", 0, INT64_MAX, 1)};
  }
};

/// Sorts `count` pseudo-random 64-bit numbers; returns order statistics and a checksum.
auto sort_numbers(const sort_input& in) -> json::value {
  std::mt19937_64 random(static_cast<std::uint64_t>(in.seed));
  std::vector<std::uint64_t> v(static_cast<std::size_t>(in.count));
  procpool::report_progress(0, 3, "generating");
  for (auto& x : v) x = random();
  procpool::report_progress(1, 3, "sorting");
  std::sort(v.begin(), v.end());
  procpool::report_progress(2, 3, "checksum");
  std::uint64_t checksum = 0;
  for (std::size_t i = 0; i < v.size(); ++i) checksum = checksum * 31 + (v[i] >> 32);
  return {{"count", in.count},
          {"min", v.front()},
          {"median", v[v.size() / 2]},
          {"max", v.back()},
          {"checksum", checksum}};
}

struct sleep_input {
  std::int64_t ms;
  static auto parse(const json::object& in) -> sleep_input {
    return {integer_field(in, "ms", 0, 3'600'000, 100)};
  }
};

/// Waits `ms` milliseconds: stands in for a task whose duration you choose.
auto sleep_for(const sleep_input& in) -> json::value {
  // In slices, reporting the time slept so far (a stand-in for work that reports progress).
  const auto start = std::chrono::steady_clock::now();
  const auto end = start + std::chrono::milliseconds(in.ms);
  for (auto now = start; now < end; now = std::chrono::steady_clock::now()) {
    procpool::report_progress(
        static_cast<std::uint64_t>(
            std::chrono::duration_cast<std::chrono::milliseconds>(now - start).count()),
        static_cast<std::uint64_t>(in.ms), "ms");
    std::this_thread::sleep_for(
        std::min<std::chrono::steady_clock::duration>(end - now, std::chrono::milliseconds(50)));
  }
  return {{"slept_ms", in.ms}};
}

struct crash_input {
  int signal;
  static auto parse(const json::object& in) -> crash_input {
    const std::string name = string_field(in, "signal", 16, "SEGV");
    if (name == "SEGV") return {SIGSEGV};
    if (name == "ABRT") return {SIGABRT};
    if (name == "KILL") return {SIGKILL};
    if (name == "FPE") return {SIGFPE};
    throw bad_task_input("input.signal: must be one of SEGV, ABRT, KILL, FPE");
  }
};

/// Dies by a signal, as native code with a bug would, after saying so on stderr.
auto crash(const crash_input& in) -> json::value {
  std::fprintf(stderr, "crash task: about to die by signal %d\n", in.signal);
  std::fflush(stderr);
  std::raise(in.signal);
  return nullptr;
}

struct no_input {
  static auto parse(const json::object&) -> no_input { return {}; }
};

/// Never returns (until its timeout, a cancellation or shutdown kills the worker).
auto hang(const no_input&) -> json::value {
  for (;;) ::pause();
}

struct oom_input {
  std::int64_t mb;
  static auto parse(const json::object& in) -> oom_input {
    return {integer_field(in, "mb", 1, 1 << 20, 1 << 20)};
  }
};

/// Allocates and touches `mb` MiB, 16 MiB at a time, until it has them all or memory runs out:
/// with the service's per-worker memory limit, the allocation fails (std::bad_alloc) or the
/// kernel kills the worker, and only this job fails.
auto oom(const oom_input& in) -> json::value {
  rlimit limit{};
  ::getrlimit(RLIMIT_AS, &limit);
  if (limit.rlim_cur == RLIM_INFINITY) {
    throw std::runtime_error(
        "oom: this worker has no memory limit (--memory-limit-mb 0); refusing to exhaust the "
        "machine's memory");
  }
  std::vector<std::unique_ptr<char[]>> blocks;
  constexpr std::size_t block = std::size_t{16} << 20;
  for (std::int64_t got = 0; got < in.mb; got += 16) {
    blocks.emplace_back(new char[block]);
    std::memset(blocks.back().get(), 1, block);
  }
  return {{"allocated_mb", in.mb}};
}

struct throw_input {
  std::string message;
  static auto parse(const json::object& in) -> throw_input {
    return {string_field(in, "message", 4096, "the task failed")};
  }
};

/// Throws std::runtime_error(message): the job fails with that type and message.
auto throw_error(const throw_input& in) -> json::value {
  throw std::runtime_error(in.message);
}

}  // namespace

void add_builtin_tasks(task_registry& registry) {
  // OpenSSL reads its configuration and loads its SHA-256 on first use. Done here, before
  // procpool::init(), workers inherit both: a sandboxed worker (--sandbox) may not open files.
  unsigned char digest[EVP_MAX_MD_SIZE];
  unsigned int size = 0;
  EVP_Digest("", 0, digest, &size, EVP_sha256(), nullptr);
  registry.add<&count_primes>("count_primes", "primes below n (sieve); input {n}");
  registry.add<&mandelbrot>(
      "mandelbrot",
      "a Mandelbrot tile; input {width, height, max_iterations, center_x, center_y, scale}");
  registry.add<&sha256_chain>("sha256_chain", "iterated SHA-256; input {data, rounds}");
  registry.add<&sort_numbers>("sort", "sorts generated 64-bit numbers; input {count, seed}");
  registry.add<&sleep_for>("sleep", "waits; input {ms}");
  registry.add<&crash>("crash", "dies by a signal; input {signal: SEGV|ABRT|KILL|FPE}");
  registry.add<&hang>("hang", "never returns (use timeout_ms or DELETE)");
  registry.add<&oom>("oom", "allocates memory until the worker's limit; input {mb}");
  registry.add<&throw_error>("throw", "throws std::runtime_error; input {message}");
}

}  // namespace service
