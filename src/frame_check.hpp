// procpool - judging what a worker sends: every header and payload from a worker's channel passes
// through these functions before the pool acts on it. They are pure (no I/O, no pool state), so the
// fuzz target in fuzz/ exercises exactly the code the pool runs.
#pragma once

#include <sys/types.h>
#include <cstddef>
#include <cstdint>
#include <exception>
#include <span>
#include <string>
#include <string_view>

#include "exception_codec.hpp"
#include "procpool/detail/wire.hpp"
#include "procpool/progress.hpp"

namespace procpool::detail {

/// What the pool knows about a worker when one of its headers arrives.
struct channel_state {
  bool greeted = false;            // a valid hello already came
  std::uint64_t running_task = 0;  // the task it holds; 0 when idle
  std::size_t max_message_bytes = 0;
  bool skip_asked = false;  // the pool asked it to skip running_task (frame_kind::skip)
};

/// Empty when the pool may read the payload the header announces; otherwise why the header breaks
/// the protocol (the worker is then killed and its task fails with worker_crashed).
auto check_header(const frame_header& h, const channel_state& s) -> std::string;

/// Empty when `payload` is a hello from a worker of this very build speaking this protocol;
/// otherwise what is wrong with it.
auto check_hello(std::span<const std::byte> payload, std::string_view expected_build_id)
    -> std::string;

/// Decodes an exception frame's payload into the exception the caller gets. On a malformed payload
/// returns nullptr and sets `violation`.
auto decode_exception(std::span<const std::byte> payload, const std::string& function, pid_t pid,
                      std::string& violation) -> std::exception_ptr;

/// Decodes a progress frame's payload (done, total, message). Empty when it is well formed;
/// otherwise what is wrong with it.
auto decode_progress(std::span<const std::byte> payload, progress& out) -> std::string;

}  // namespace procpool::detail
