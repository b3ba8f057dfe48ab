// procpool - a worker's stdout and stderr: read from its pipes, cut into lines, kept as a tail for
// its crash report, and handed to the output sink in order.
//
// Not thread-safe: a worker_output belongs to its worker and is used under pool_core's lock. The
// pool passes in who is writing (output_label); the forwarder never looks at tasks or workers.
// Lines are only collected under the lock; naming their function (dladdr, perhaps reading a symbol
// table) and calling the sink happen in output_emitter, outside it.
#pragma once

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/posix/stream_descriptor.hpp>
#include <cstdint>
#include <deque>
#include <map>
#include <mutex>
#include <string>
#include <typeinfo>
#include <utility>
#include <vector>

#include "procpool/output.hpp"
#include "unique_fd.hpp"

namespace procpool::detail {

/// Who wrote a line.
struct output_label {
  std::size_t worker = 0;  // slot
  int pid = 0;
  std::uintptr_t function = 0;  // the task it was running; 0 between tasks
  const std::type_info* callable_type = nullptr;
};

struct collected_line {
  output_label label;
  output_stream stream = output_stream::err;
  std::string text;
};

/// Which lines a crash report keeps.
struct tail_policy {
  std::size_t lines = 50;       // pool_options::crash_output_lines
  bool include_stdout = false;  // pool_options::crash_output_includes_stdout
};

class worker_output {
 public:
  worker_output(const boost::asio::any_io_executor& ex, unique_fd out, unique_fd err,
                tail_policy policy);

  auto pipe(output_stream s) -> boost::asio::posix::stream_descriptor& { return at(s).pipe; }

  /// Reads whatever the pipe holds now; false once it has ended (its last partial line is then
  /// collected too).
  auto read(output_stream s, const output_label& label, std::vector<collected_line>& lines) -> bool;

  /// Everything the worker wrote before this moment is in its pipes (it flushes stdio before each
  /// result, and a dead process writes nothing more): reading it now attributes each line to the
  /// task that `label` names and puts the lines before the task's outcome. Text left without a
  /// newline is that task's last line, unless `task_over` is false (the worker already runs the
  /// next task, whose line it may be). `pipes_may_hold_bytes` false (the worker said its pipes were
  /// empty when it wrote the outcome) skips the read: what the task wrote was read already.
  void collect(const output_label& label, std::vector<collected_line>& lines, bool task_over = true,
               bool pipes_may_hold_bytes = true);

  /// Closes both pipes, collecting partial lines first.
  void close(const output_label& label, std::vector<collected_line>& lines);

  /// The last lines kept for a crash report, each ending in a newline.
  [[nodiscard]] auto tail() const -> std::string;

 private:
  struct stream_state {
    explicit stream_state(const boost::asio::any_io_executor& ex) : pipe(ex) {}
    boost::asio::posix::stream_descriptor pipe;
    std::string partial;  // text after the last newline
  };
  auto at(output_stream s) -> stream_state& { return s == output_stream::out ? out_ : err_; }
  void add_line(output_stream s, const output_label& label, std::string text,
                std::vector<collected_line>& lines);
  void close_stream(output_stream s, const output_label& label, std::vector<collected_line>& lines);

  stream_state out_, err_;
  tail_policy policy_;
  std::deque<std::string> tail_;
};

/// Calls the sink with collected lines, one at a time, in order. emit() requires order_mutex()
/// held from before the lines were taken from the pool until after they are handed on: that is
/// what keeps lines in the order the pool read them when several threads flush at once.
class output_emitter {
 public:
  explicit output_emitter(output_sink sink) : sink_(std::move(sink)) {}
  auto order_mutex() -> std::mutex& { return order_mutex_; }
  void emit(const std::vector<collected_line>& lines);

 private:
  auto name_of(const output_label& label) -> const std::string&;

  output_sink sink_;
  std::mutex order_mutex_;
  // Function names already looked up; guarded by order_mutex_.
  std::map<std::pair<std::uintptr_t, const std::type_info*>, std::string> names_;
};

}  // namespace procpool::detail
