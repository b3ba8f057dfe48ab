// procpool - the worker loop: read a task frame, run it, write its result or exception.
#include <fcntl.h>
#include <malloc.h>
#include <poll.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <climits>
#include <cstdio>
#include <cstring>
#include <iostream>
#include <memory>
#include <vector>

#include "exception_codec.hpp"
#include "internal.hpp"
#include "procpool/detail/invoke.hpp"
#include "procpool/detail/wire.hpp"
#include "progress_reporter.hpp"

namespace procpool::detail {
namespace {

[[noreturn]] void leave(int status) {
  std::cout.flush();
  std::cerr.flush();
  std::fflush(nullptr);
  // _exit, not exit: the parent's atexit handlers and static destructors belong to the parent.
  ::_exit(status);
}

// Reads the channel through a buffer, so that a small task's header and payload (and the next
// task's, when the pool sends several) cost one read() rather than two each.
class channel_reader {
 public:
  // Left uninitialized: zero-filling it would fault in all its pages at start-up, which on some
  // machines costs more than the rest of a worker's start.
  explicit channel_reader(int fd) : fd_(fd), buffer_(new std::byte[capacity]) {}

  auto read_exactly(void* data, std::size_t size) -> bool {
    auto* out = static_cast<std::byte*>(data);
    while (size > 0) {
      if (begin_ == end_) {
        // A large payload goes straight to its destination, not through the buffer.
        if (size >= capacity) return read_direct(out, size);
        if (!fill()) return false;
      }
      const std::size_t n = std::min(size, end_ - begin_);
      std::memcpy(out, buffer_.get() + begin_, n);
      begin_ += n;
      out += n;
      size -= n;
    }
    return true;
  }

  /// A descriptor that arrived with the bytes read so far (the pool's task region), or -1.
  auto take_descriptor() -> int { return std::exchange(passed_fd_, -1); }

  /// Adds to `skips` the tasks that skip frames already here, or arriving now (one non-blocking
  /// read), ask not to start; nothing is consumed. Called before a task sent ahead starts, so a
  /// cancellation that came after it is seen in time.
  void note_skips(std::vector<std::uint64_t>& skips) {
    read_more_now();
    for (std::size_t at = begin_; end_ - at >= sizeof(frame_header);) {
      frame_header h;
      std::memcpy(&h, buffer_.get() + at, sizeof h);
      if (h.kind == frame_kind::skip &&
          std::find(skips.begin(), skips.end(), h.task_id) == skips.end()) {
        skips.push_back(h.task_id);
      }
      if (h.size > end_ - at - sizeof h) break;
      at += sizeof h + static_cast<std::size_t>(h.size);
    }
  }

 private:
  void read_more_now() {
    if (begin_ != 0) {
      std::memmove(buffer_.get(), buffer_.get() + begin_, end_ - begin_);
      end_ -= begin_;
      begin_ = 0;
    }
    if (end_ == capacity) return;
    const long n =
        receive_message(fd_, buffer_.get() + end_, capacity - end_, std::span<int>(&received_, 1));
    keep_received_descriptor();
    if (n > 0) end_ += static_cast<std::size_t>(n);
  }

  void keep_received_descriptor() {
    if (received_ >= 0) {
      if (passed_fd_ >= 0) ::close(passed_fd_);
      passed_fd_ = std::exchange(received_, -1);
    }
  }

  // A non-blocking attempt, then poll, then the read: measured ~4 us per round trip faster on
  // this kernel than one blocking recvmsg (bench/workloads w1, 2026-12-01), though it is three
  // calls instead of one.
  auto fill() -> bool {
    for (;;) {
      const long n = receive_message(fd_, buffer_.get(), capacity, std::span<int>(&received_, 1));
      keep_received_descriptor();
      if (n > 0) {
        begin_ = 0;
        end_ = static_cast<std::size_t>(n);
        return true;
      }
      if (n < 0 && errno == EINTR) continue;
      if (n < 0 && errno == EAGAIN) {
        pollfd p{fd_, POLLIN, 0};
        ::poll(&p, 1, -1);
        continue;
      }
      return false;
    }
  }

  auto read_direct(std::byte* out, std::size_t size) -> bool {
    while (size > 0) {
      const ssize_t n = ::read(fd_, out, size);
      if (n > 0) {
        out += n;
        size -= static_cast<std::size_t>(n);
      } else if (n < 0 && errno == EINTR) {
        continue;
      } else {
        return false;
      }
    }
    return true;
  }

  int fd_;
  static constexpr std::size_t capacity = 64 * 1024;
  std::unique_ptr<std::byte[]> buffer_;
  int received_ = -1, passed_fd_ = -1;
  std::size_t begin_ = 0, end_ = 0;
};

void write_frame(int fd, frame_kind kind, std::uint64_t task_id, const byte_buffer& payload,
                 std::uint16_t flags = 0) {
  frame_header h = make_frame_header(kind, task_id, payload.size(), flags);
  iovec iov[2] = {{&h, sizeof h}, {const_cast<std::byte*>(payload.data()), payload.size()}};
  int count = payload.empty() ? 1 : 2;
  iovec* v = iov;
  while (count > 0) {
    const ssize_t n = ::writev(fd, v, count);
    if (n < 0) {
      if (errno == EINTR) continue;
      leave(0);  // the parent is gone or closed the channel: nobody wants the result
    }
    auto left = static_cast<std::size_t>(n);
    while (count > 0 && left >= v->iov_len) {
      left -= v->iov_len;
      ++v;
      --count;
    }
    if (count > 0) {
      v->iov_base = static_cast<char*>(v->iov_base) + left;
      v->iov_len -= left;
    }
  }
}

// RLIMIT_CPU counts a process's whole life, so the limit is moved before each task to "what it
// has used so far plus the task's allowance". The hard limit a second later is the backstop.
void arm_cpu_limit(std::uint64_t seconds) {
  rusage used{};
  ::getrusage(RUSAGE_SELF, &used);
  // In whole seconds, rounded up: the task gets at least its limit (RLIMIT_CPU counts seconds).
  const auto used_us = (used.ru_utime.tv_sec + used.ru_stime.tv_sec) * 1'000'000L +
                       used.ru_utime.tv_usec + used.ru_stime.tv_usec;
  const auto so_far = static_cast<rlim_t>((used_us + 999'999) / 1'000'000);
  // The hard limit (SIGKILL a second after SIGXCPU, for a task that ignores it) only as root: an
  // unprivileged process may lower its hard limit but never raise it again, so the next task's
  // limit could not be set. Unprivileged, SIGXCPU (fatal by default) is the limit.
  rlimit limit{so_far + seconds, RLIM_INFINITY};
  if (::geteuid() == 0) {
    limit.rlim_max = so_far + seconds + 1;
  } else {
    ::getrlimit(RLIMIT_CPU, &limit);
    limit.rlim_cur = std::min<rlim_t>(so_far + seconds, limit.rlim_max);
  }
  ::setrlimit(RLIMIT_CPU, &limit);
}

void run_initializer(std::uint64_t address) {
  try {
    reinterpret_cast<void (*)()>(address)();
  } catch (...) {
    const exception_envelope e = describe_current_exception();
    std::fprintf(stderr, "procpool: the worker initializer threw %s: %s\n",
                 demangle(e.type_name.c_str()).c_str(), e.what.c_str());
    leave(3);
  }
}

// The pool's shared task region, mapped read-only: large tasks arrive here instead of through the
// channel (one copy instead of a copy through the socket and another out of it).
class task_region {
 public:
  task_region() = default;
  task_region(const task_region&) = delete;
  auto operator=(const task_region&) -> task_region& = delete;
  ~task_region() { release(); }

  void adopt(int fd) {
    release();
    struct stat st {};
    if (::fstat(fd, &st) != 0 || st.st_size <= 0) leave(2);
    void* p = ::mmap(nullptr, static_cast<std::size_t>(st.st_size), PROT_READ, MAP_SHARED, fd, 0);
    ::close(fd);
    if (p == MAP_FAILED) leave(2);
    data_ = static_cast<const std::byte*>(p);
    size_ = static_cast<std::size_t>(st.st_size);
  }
  [[nodiscard]] auto size() const -> std::size_t { return size_; }
  [[nodiscard]] auto bytes() const -> std::span<const std::byte> { return {data_, size_}; }

 private:
  void release() {
    if (data_ != nullptr) ::munmap(const_cast<std::byte*>(data_), size_);
    data_ = nullptr;
    size_ = 0;
  }
  const std::byte* data_ = nullptr;
  std::size_t size_ = 0;
};

// Whether the pool may not yet have read everything this worker wrote to its stdout and stderr.
// Checked on copies of the pipes taken at start-up, so a task that points fd 1 or 2 elsewhere does
// not hide the pipes; when a pipe cannot be asked, the answer is yes (the pool then reads them).
class output_pipes {
 public:
  output_pipes() : out_(::fcntl(1, F_DUPFD_CLOEXEC, 3)), err_(::fcntl(2, F_DUPFD_CLOEXEC, 3)) {}
  output_pipes(const output_pipes&) = delete;
  auto operator=(const output_pipes&) -> output_pipes& = delete;
  ~output_pipes() {
    if (out_ >= 0) ::close(out_);
    if (err_ >= 0) ::close(err_);
  }

  [[nodiscard]] auto unread() const -> bool { return holds_bytes(out_) || holds_bytes(err_); }

 private:
  static auto holds_bytes(int fd) -> bool {
    int n = 0;
    return fd < 0 || ::ioctl(fd, FIONREAD, &n) != 0 || n > 0;
  }
  int out_, err_;
};

}  // namespace

void prepare_worker_code() {
  byte_buffer hello;
  encode_into(hello, protocol_version, build_id(), static_cast<std::int32_t>(::getpid()));
  std::uint32_t version = 0;
  std::string id;
  std::int32_t pid = 0;
  decode_from(hello, version, id, pid);
  std::cout.flush();
  std::cerr.flush();
  std::fflush(nullptr);
  rusage used{};
  ::getrusage(RUSAGE_SELF, &used);
}

void run_worker(int channel, const worker_setup& setup) {
  if (setup.heap_retain_bytes != 0) {
    // Every allocation from the heap (not from a mapping of its own, which free() unmaps), and
    // freed memory kept up to the retain size: a large buffer reuses warm pages next time.
    ::mallopt(M_MMAP_MAX, 0);
    ::mallopt(M_TRIM_THRESHOLD,
              static_cast<int>(std::min<std::uint64_t>(setup.heap_retain_bytes, INT_MAX)));
  }
  if (setup.initializer != 0) run_initializer(setup.initializer);
  {
    byte_buffer hello;
    encode_into(hello, protocol_version, build_id(), static_cast<std::int32_t>(::getpid()));
    write_frame(channel, frame_kind::hello, 0, hello);
  }
  channel_reader in(channel);
  const output_pipes output;
  task_region region;
  std::vector<std::uint64_t> skips;  // tasks sent ahead that the pool asked not to start
  byte_buffer payload;
  byte_buffer out;
  for (;;) {
    frame_header h;
    if (!in.read_exactly(&h, sizeof h)) leave(0);  // end of channel: the pool let us go
    if (h.magic != frame_magic) leave(2);
    std::span<const std::byte> task;
    if (h.kind == frame_kind::skip && h.size == 0) {
      // Its task came before it and has run or been skipped by now: forget it.
      std::erase(skips, h.task_id);
      continue;
    }
    if (h.kind == frame_kind::task && h.size >= sizeof(task_prefix)) {
      payload.resize(h.size);
      if (!in.read_exactly(payload.data(), payload.size())) leave(0);
      if ((h.flags & frame_flag_skippable) != 0) {
        in.note_skips(skips);
        if (std::erase(skips, h.task_id) != 0) {
          write_frame(channel, frame_kind::skipped, h.task_id, {});
          continue;
        }
      }
      task = payload;
    } else if (h.kind == frame_kind::shared_task && h.size == sizeof(shared_task)) {
      shared_task st;
      if (!in.read_exactly(&st, sizeof st)) leave(0);
      if (const int fd = in.take_descriptor(); fd >= 0) region.adopt(fd);
      if (st.size < sizeof(task_prefix) || st.size > region.size()) leave(2);
      task = region.bytes().first(st.size);
    } else {
      leave(2);
    }
    task_prefix prefix;
    std::memcpy(&prefix, task.data(), sizeof prefix);
    const std::span<const std::byte> args = task.subspan(sizeof prefix);
    out.clear();
    if (setup.cpu_seconds != 0) arm_cpu_limit(setup.cpu_seconds);
    frame_kind kind = frame_kind::result;
    progress_task_started(channel, h.task_id);
    try {
      reinterpret_cast<thunk_fn>(prefix.thunk)(prefix.function, args, out);
    } catch (...) {
      out.clear();
      try {
        encode_into(out, describe_current_exception());
      } catch (...) {
        out.clear();
        encode_into(out,
                    exception_envelope{typeid(std::bad_alloc).name(), "std::bad_alloc", 0, {}});
      }
      kind = frame_kind::exception;
    }
    progress_task_finished();  // its latest report goes before its outcome
    // Output a task printed belongs next to its result, not in a buffer that a crash would lose.
    std::cout.flush();
    std::fflush(nullptr);
    write_frame(channel, kind, h.task_id, out, output.unread() ? frame_flag_output_unread : 0);
  }
}

}  // namespace procpool::detail
