// procpool-service - the tasks a job can name: plain C++ functions from a JSON input to a JSON
// result, run in procpool's worker processes.
#pragma once

#include <boost/json/object.hpp>
#include <boost/json/value.hpp>
#include <cstdint>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

namespace service {

/// A task's input is not acceptable (missing field, wrong type, out of range). Thrown while the
/// input is checked at POST /jobs, where it becomes a 400 that names the field.
class bad_task_input : public std::invalid_argument {
 public:
  using std::invalid_argument::invalid_argument;
};

/// One field of a task's input, as GET /tasks describes it (recorded from the task's own parse).
struct field_description {
  std::string name;
  std::string type;                               ///< "integer", "number" or "string"
  boost::json::value minimum, maximum, fallback;  ///< null when not applicable
};

/// What a task registers: its name, a one-line summary for the API's error messages and docs, a
/// check run in the service process before a job is accepted, and the run itself (in a worker).
struct task_definition {
  std::string name;
  std::string summary;
  void (*check)(const boost::json::object& input);
  auto(*run)(const boost::json::object& input) -> boost::json::value;
  /// Its input's fields: what integer_field / number_field / string_field saw while `check`
  /// parsed an empty input (each field with its default). Filled in by task_registry::add.
  std::vector<field_description> fields = {};
};

/// The tasks this service runs. Register every task before procpool::init() (workers are forked
/// from a copy of the process as it was then, so a task added later does not exist in them).
class task_registry {
 public:
  /// The registry the service and its workers share.
  static auto global() -> task_registry&;

  /// Registers `Run`, a function `json::value run(const Input&)`, under `name`. Input is a struct
  /// with `static Input parse(const boost::json::object&)`, which throws bad_task_input for an
  /// input the task cannot take: the service calls it before accepting a job, and again in the
  /// worker. One line per task:
  ///
  ///     registry.add<&count_primes>("count_primes", "primes below n");
  template <auto Run>
  void add(std::string name, std::string summary) {
    using input = std::remove_cvref_t<typename first_parameter<decltype(Run)>::type>;
    add(task_definition{
        std::move(name), std::move(summary),
        [](const boost::json::object& in) { (void)input::parse(in); },
        [](const boost::json::object& in) -> boost::json::value { return Run(input::parse(in)); }});
  }
  void add(task_definition task);

  /// The task called `name`, or nullptr.
  [[nodiscard]] auto find(std::string_view name) const -> const task_definition*;
  [[nodiscard]] auto all() const -> const std::vector<task_definition>& { return tasks_; }

 private:
  template <class F>
  struct first_parameter;
  template <class R, class A>
  struct first_parameter<R (*)(A)> {
    using type = A;
  };
  std::vector<task_definition> tasks_;
};

/// Runs `check` on an empty input and returns the fields the field helpers were asked for.
auto describe_fields(void (*check)(const boost::json::object&)) -> std::vector<field_description>;

/// Adds the built-in tasks: count_primes, mandelbrot, sha256_chain, sort, sleep, and the fault
/// demonstrators crash, hang, oom and throw. Call before procpool::init(): it also loads what
/// they would load lazily in a worker (OpenSSL's configuration), which a sandboxed worker cannot.
void add_builtin_tasks(task_registry& registry);

/// What the service submits to the pool: runs task `name` from the global registry on the JSON
/// text `input` and returns the result as JSON text. Runs in a worker process.
auto run_task(std::string name, std::string input) -> std::string;

// Helpers for a task's Input::parse.

/// `input[key]` as an integer in [min, max], or `fallback` if absent.
auto integer_field(const boost::json::object& input, std::string_view key, std::int64_t min,
                   std::int64_t max, std::int64_t fallback) -> std::int64_t;
/// `input[key]` as a number in [min, max], or `fallback` if absent.
auto number_field(const boost::json::object& input, std::string_view key, double min, double max,
                  double fallback) -> double;
/// `input[key]` as a string of at most `max_size` bytes, or `fallback` if absent.
auto string_field(const boost::json::object& input, std::string_view key, std::size_t max_size,
                  std::string_view fallback) -> std::string;

}  // namespace service
