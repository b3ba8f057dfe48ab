// procpool - the frame format on a worker's channel (see docs/design.md, "The wire format").
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <span>

namespace procpool::detail {

inline constexpr std::uint32_t frame_magic = 0x70704c31;  // "ppL1"
inline constexpr std::uint32_t protocol_version = 2;

enum class frame_kind : std::uint16_t {
  hello = 1,      // worker -> parent, once: protocol version and build id
  task = 2,       // parent -> worker: thunk address, function address, encoded arguments
  result = 3,     // worker -> parent: encoded result
  exception = 4,  // worker -> parent: encoded exception_envelope
  // parent -> worker: a task whose bytes (task_prefix and arguments) are in the worker's shared
  // task region; the payload is a shared_task. A new region's memfd rides along (SCM_RIGHTS).
  shared_task = 5,
  // parent -> worker, no payload: do not start task `task_id` (sent ahead, then cancelled) if it
  // has not started yet.
  skip = 6,
  // worker -> parent, no payload: the outcome of task `task_id` when it was skipped, not run.
  skipped = 7,
  // worker -> parent: how far task `task_id` has got; payload: done (u64), total (u64), message
  // (string, at most 1 KiB). See procpool/progress.hpp.
  progress = 8,
};

/// Largest payload of a progress frame: two u64, a length and 1 KiB of message.
inline constexpr std::size_t max_progress_payload = 8 + 8 + 8 + 1024;

/// Payload of a shared_task frame.
struct shared_task {
  std::uint64_t size = 0;  // bytes of the task at the start of the region
};

/// Bits of frame_header::flags. A frame with a bit its kind does not define is a protocol
/// violation.
///
/// On a result or exception: when the worker wrote the outcome, its stdout or stderr pipe still
/// held bytes the pool had not read. Without it the pool skips reading the pipes before the
/// outcome: every byte the task wrote was read already, and lines are collected in the same locked
/// step that reads them, so they still precede the outcome. (A worker that lies only mislabels its
/// own output.)
inline constexpr std::uint16_t frame_flag_output_unread = 1;

/// On a task frame: sent ahead (while the worker runs another task) and cancellable by its caller.
/// Before starting it the worker looks for a skip frame naming it; for other tasks it does not
/// look (that costs a read per task).
inline constexpr std::uint16_t frame_flag_skippable = 2;

/// Fixed-size header in front of every frame; `size` counts the payload bytes after it.
struct frame_header {
  std::uint32_t magic = frame_magic;
  frame_kind kind{};
  std::uint16_t flags = 0;
  std::uint64_t task_id = 0;
  std::uint64_t size = 0;
};
static_assert(sizeof(frame_header) == 24);

/// The one place a frame header is made: `payload_size` bytes of `kind`, about task `task_id`
/// (0 for a hello), with `flags` (frame_flag_*).
constexpr auto make_frame_header(frame_kind kind, std::uint64_t task_id, std::uint64_t payload_size,
                                 std::uint16_t flags = 0) -> frame_header {
  frame_header h;
  h.kind = kind;
  h.flags = flags;
  h.task_id = task_id;
  h.size = payload_size;
  return h;
}

/// Writes the header of a frame built in one buffer whose first sizeof(frame_header) bytes were
/// left for it; the payload is everything after them.
inline void put_frame_header(std::span<std::byte> frame, frame_kind kind, std::uint64_t task_id,
                             std::uint16_t flags = 0) {
  const frame_header h =
      make_frame_header(kind, task_id, frame.size() - sizeof(frame_header), flags);
  std::memcpy(frame.data(), &h, sizeof h);
}

/// Start of a task frame's payload; the encoded argument tuple follows it.
struct task_prefix {
  std::uint64_t thunk = 0;
  std::uint64_t function = 0;
};

}  // namespace procpool::detail
