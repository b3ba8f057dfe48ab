// procpool - coalescing progress reports in the worker (see progress_reporter.hpp).
#include "progress_reporter.hpp"

#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <mutex>
#include <string>

#include "procpool/detail/codec.hpp"
#include "procpool/detail/wire.hpp"
#include "procpool/progress.hpp"

namespace procpool::detail {
namespace {

constexpr auto min_interval = std::chrono::milliseconds(5);
constexpr std::size_t max_message_bytes = 1024;

struct reporter {
  std::mutex mutex;
  int channel = -1;  // -1: no task running
  std::uint64_t task_id = 0;
  std::chrono::steady_clock::time_point last_sent{};
  bool has_latest = false;
  std::uint64_t done = 0, total = 0;
  std::string message;
  byte_buffer unsent;  // the rest of a frame the channel took only in part; goes out first
};

auto state() -> reporter& {
  static reporter r;  // lives in the worker; the parent never starts a task here
  return r;
}

auto make_frame(const reporter& r) -> byte_buffer {
  byte_buffer frame(sizeof(frame_header));
  encode_into(frame, r.done, r.total, r.message);
  put_frame_header(frame, frame_kind::progress, r.task_id);
  return frame;
}

// Writes `bytes` without blocking; returns how many the channel took (0 when it was full).
auto send_now(int channel, const byte_buffer& bytes, std::size_t from) -> std::size_t {
  const ssize_t n =
      ::send(channel, bytes.data() + from, bytes.size() - from, MSG_DONTWAIT | MSG_NOSIGNAL);
  return n > 0 ? static_cast<std::size_t>(n) : 0;
}

// Sends what is unsent, then the latest report, as far as the channel takes them now.
void try_flush(reporter& r) {
  if (!r.unsent.empty()) {
    const std::size_t n = send_now(r.channel, r.unsent, 0);
    r.unsent.erase(r.unsent.begin(), r.unsent.begin() + static_cast<std::ptrdiff_t>(n));
    if (!r.unsent.empty()) return;
  }
  if (!r.has_latest) return;
  const byte_buffer frame = make_frame(r);
  const std::size_t n = send_now(r.channel, frame, 0);
  if (n == 0) return;  // full: the latest stays pending
  r.has_latest = false;
  r.last_sent = std::chrono::steady_clock::now();
  if (n < frame.size())
    r.unsent.assign(frame.begin() + static_cast<std::ptrdiff_t>(n), frame.end());
}

void write_all(int channel, const byte_buffer& bytes) {
  std::size_t from = 0;
  while (from < bytes.size()) {
    const ssize_t n = ::send(channel, bytes.data() + from, bytes.size() - from, MSG_NOSIGNAL);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return;  // the pool is gone; the outcome's write will notice
    from += static_cast<std::size_t>(n);
  }
}

}  // namespace

void progress_task_started(int channel, std::uint64_t task_id) {
  reporter& r = state();
  std::lock_guard lock(r.mutex);
  r.channel = channel;
  r.task_id = task_id;
  r.has_latest = false;
  r.last_sent = {};
}

void progress_task_finished() {
  reporter& r = state();
  std::lock_guard lock(r.mutex);
  if (r.channel < 0) return;
  write_all(r.channel, r.unsent);
  r.unsent.clear();
  if (r.has_latest) write_all(r.channel, make_frame(r));
  r.has_latest = false;
  r.channel = -1;
}

}  // namespace procpool::detail

namespace procpool {

void report_progress(std::uint64_t done, std::uint64_t total, std::string_view message) {
  auto& r = detail::state();
  std::lock_guard lock(r.mutex);
  if (r.channel < 0) return;
  r.done = done;
  r.total = total;
  r.message.assign(message.substr(0, detail::max_message_bytes));
  r.has_latest = true;
  if (std::chrono::steady_clock::now() - r.last_sent >= detail::min_interval) detail::try_flush(r);
}

}  // namespace procpool
