// procpool - the worker's side of progress reports (see procpool/progress.hpp): the state behind
// report_progress, and the two calls the worker loop makes around each task.
//
// Thread-safe: report_progress may be called from any thread of the worker while a task runs.
#pragma once

#include <cstdint>

namespace procpool::detail {

/// The worker loop starts task `task_id`, whose frames go to `channel`.
void progress_task_started(int channel, std::uint64_t task_id);

/// The task has returned: the latest report not yet sent goes out now (blocking; the outcome's
/// write would block the same way), and later reports are ignored until the next task starts.
void progress_task_finished();

}  // namespace procpool::detail
