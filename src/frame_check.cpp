// procpool - judging what a worker sends (see frame_check.hpp).
#include "frame_check.hpp"

#include "procpool/detail/codec.hpp"

namespace procpool::detail {

auto check_header(const frame_header& h, const channel_state& s) -> std::string {
  if (h.magic != frame_magic) return "sent a frame with a bad magic number";
  // A progress frame has its own, fixed bound (below), whatever max_message_bytes is.
  if (h.kind != frame_kind::progress && h.size > s.max_message_bytes) {
    return "sent a frame of " + std::to_string(h.size) +
           " bytes, more than pool_options::max_message_bytes";
  }
  switch (h.kind) {
    case frame_kind::hello:
      if (h.flags != 0) return "sent a hello with flags " + std::to_string(h.flags);
      if (s.greeted) return "sent a second hello";
      return {};
    case frame_kind::result:
    case frame_kind::exception:
      if ((h.flags & ~frame_flag_output_unread) != 0) {
        return "sent an outcome with unknown flags " + std::to_string(h.flags);
      }
      if (s.running_task == 0 || s.running_task != h.task_id) {
        return "sent a result for task " + std::to_string(h.task_id) + ", which it was not running";
      }
      return {};
    case frame_kind::progress:
      if (h.flags != 0 || h.size > max_progress_payload) return "sent a malformed progress frame";
      if (s.running_task == 0 || s.running_task != h.task_id) {
        return "sent progress for task " + std::to_string(h.task_id) + ", which it was not running";
      }
      return {};
    case frame_kind::skipped:
      if (h.flags != 0 || h.size != 0) return "sent a malformed skipped frame";
      if (s.running_task == 0 || s.running_task != h.task_id || !s.skip_asked) {
        return "skipped task " + std::to_string(h.task_id) + ", which it was not asked to skip";
      }
      return {};
    default:
      return "sent a frame of unknown kind " + std::to_string(static_cast<std::uint32_t>(h.kind));
  }
}

auto check_hello(std::span<const std::byte> payload, std::string_view expected_build_id)
    -> std::string {
  std::uint32_t version = 0;
  std::string id;
  std::int32_t pid = 0;
  try {
    decode_from(payload, version, id, pid);
  } catch (const std::exception& e) {
    return std::string("sent a malformed hello: ") + e.what();
  }
  if (version != protocol_version) {
    return "speaks protocol version " + std::to_string(version) + ", expected " +
           std::to_string(protocol_version);
  }
  if (id != expected_build_id) {
    return "runs a different build of the program (build id " + id + ", expected " +
           std::string(expected_build_id) + ")";
  }
  return {};
}

auto decode_exception(std::span<const std::byte> payload, const std::string& function, pid_t pid,
                      std::string& violation) -> std::exception_ptr {
  exception_envelope env;
  try {
    decode_from(payload, env);
  } catch (const std::exception& e) {
    violation = std::string("sent a malformed exception: ") + e.what();
    return nullptr;
  }
  return rebuild_exception(env, function, pid);
}

auto decode_progress(std::span<const std::byte> payload, progress& out) -> std::string {
  try {
    decode_from(payload, out.done, out.total, out.message);
  } catch (const std::exception& e) {
    return std::string("sent a malformed progress frame: ") + e.what();
  }
  return {};
}

}  // namespace procpool::detail
