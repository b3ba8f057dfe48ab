// procpool - where the workers' stdout and stderr go.
#pragma once

#include <cstddef>
#include <functional>
#include <string_view>

namespace procpool {

enum class output_stream { out, err };

/// One line a worker wrote (without its newline). The views are valid during the sink call only.
struct output_line {
  std::size_t worker = 0;  ///< the worker's slot in the pool, 0 .. workers-1
  int pid = 0;             ///< the worker's process id
  output_stream stream = output_stream::err;
  std::string_view function;  ///< the task it was running, or empty between tasks
  std::string_view text;
};

/// Receives every line the workers write. Called on the pool's executor, one line at a time, in
/// the order the lines were read, never while the pool's internal lock is held (a sink may call
/// stats()). An empty sink means the default: each line goes to the program's stderr as
/// `[worker 0 pid 1234 cpu_heavy(long long)] text`.
using output_sink = std::function<void(const output_line&)>;

/// The default sink (see output_sink).
void write_to_stderr(const output_line& line);

}  // namespace procpool
