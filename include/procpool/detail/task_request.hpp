// procpool - what the template layer hands the pool: an encoded task and how to run it. Holds no
// serialization code, so the pool's own sources do not compile cereal.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <typeinfo>
#include <vector>

namespace procpool::detail {

using byte_buffer = std::vector<std::byte>;

class progress_listener;  // procpool/detail/progress_mailbox.hpp

/// An encoded task: its frame (header included, filled in at dispatch) and how to name it in
/// errors.
struct task_request {
  byte_buffer frame;
  std::uintptr_t function = 0;
  const std::type_info* callable_type = nullptr;  // set for lambdas, whose type names them best
  std::chrono::milliseconds timeout{0};           // 0: the pool's default
  unsigned crash_retries = 0;
  // The caller can cancel it (its handler has a cancellation slot). Such a task is never handed
  // to a busy worker ahead of time: a cancellation that comes before it starts must keep it from
  // running, and a task already in a worker's channel cannot be taken back.
  bool cancellable = false;
  // Where its progress reports go (task_options::on_progress); null: they are checked and dropped.
  std::shared_ptr<progress_listener> progress;
};

}  // namespace procpool::detail
