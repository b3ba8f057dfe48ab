// procpool - the worker loop: read a task frame, run it, write its result or exception.
#include <sys/resource.h>
#include <sys/uio.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <iostream>

#include "exception_codec.hpp"
#include "internal.hpp"
#include "procpool/detail/invoke.hpp"
#include "procpool/detail/wire.hpp"

namespace procpool::detail {
namespace {

[[noreturn]] void leave(int status) {
  std::cout.flush();
  std::cerr.flush();
  std::fflush(nullptr);
  // _exit, not exit: the parent's atexit handlers and static destructors belong to the parent.
  ::_exit(status);
}

auto read_exactly(int fd, void* data, std::size_t size) -> bool {
  auto* p = static_cast<char*>(data);
  while (size > 0) {
    const ssize_t n = ::read(fd, p, size);
    if (n > 0) {
      p += n;
      size -= static_cast<std::size_t>(n);
    } else if (n < 0 && errno == EINTR) {
      continue;
    } else {
      return false;
    }
  }
  return true;
}

void write_frame(int fd, frame_kind kind, std::uint64_t task_id, const byte_buffer& payload) {
  frame_header h;
  h.kind = kind;
  h.task_id = task_id;
  h.size = payload.size();
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
  const auto so_far = static_cast<rlim_t>(used.ru_utime.tv_sec + used.ru_stime.tv_sec);
  const rlimit limit{so_far + seconds, so_far + seconds + 1};
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

}  // namespace

void run_worker(int channel, const worker_setup& setup) {
  if (setup.initializer != 0) run_initializer(setup.initializer);
  {
    byte_buffer hello;
    encode_into(hello, protocol_version, build_id(), static_cast<std::int32_t>(::getpid()));
    write_frame(channel, frame_kind::hello, 0, hello);
  }
  byte_buffer payload;
  byte_buffer out;
  for (;;) {
    frame_header h;
    if (!read_exactly(channel, &h, sizeof h)) leave(0);  // end of channel: the pool let us go
    if (h.magic != frame_magic || h.kind != frame_kind::task || h.size < sizeof(task_prefix))
      leave(2);
    payload.resize(h.size);
    if (!read_exactly(channel, payload.data(), payload.size())) leave(0);
    task_prefix prefix;
    std::memcpy(&prefix, payload.data(), sizeof prefix);
    const std::span<const std::byte> args(payload.data() + sizeof prefix,
                                          payload.size() - sizeof prefix);
    out.clear();
    if (setup.cpu_seconds != 0) arm_cpu_limit(setup.cpu_seconds);
    frame_kind kind = frame_kind::result;
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
    // Output a task printed belongs next to its result, not in a buffer that a crash would lose.
    std::cout.flush();
    std::fflush(nullptr);
    write_frame(channel, kind, h.task_id, out);
  }
}

}  // namespace procpool::detail
