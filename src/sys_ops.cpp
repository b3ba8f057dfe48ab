// procpool - the system calls the pool makes about a worker (see sys_ops.hpp).
#include "sys_ops.hpp"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <utility>

namespace procpool::detail {
namespace {

// Reads a small /proc file whole; empty when it cannot.
auto read_proc(pid_t pid, const char* file, char* buf, std::size_t size) -> bool {
  char path[64];
  std::snprintf(path, sizeof path, "/proc/%d/%s", static_cast<int>(pid), file);
  unique_fd fd(::open(path, O_RDONLY | O_CLOEXEC));
  if (!fd) return false;
  const ssize_t n = ::read(fd.get(), buf, size - 1);
  if (n <= 0) return false;
  buf[n] = '\0';
  return true;
}

}  // namespace

auto process_is_exiting(pid_t pid) -> bool {
  constexpr unsigned long pf_exiting = 0x4;
  char buf[512];
  if (!read_proc(pid, "stat", buf, sizeof buf)) return true;
  // The command name may hold anything, spaces and parentheses included: parse after its last ')'.
  const char* p = std::strrchr(buf, ')');
  unsigned long flags = 0;
  char state = 0;
  int ppid = 0, pgrp = 0, session = 0, tty = 0, tpgid = 0;
  if (p == nullptr || std::sscanf(p + 1, " %c %d %d %d %d %d %lu", &state, &ppid, &pgrp, &session,
                                  &tty, &tpgid, &flags) != 7) {
    return true;
  }
  return (flags & pf_exiting) != 0 || state == 'Z' || state == 'X';
}

auto resident_bytes(pid_t pid) -> std::size_t {
  char buf[128];
  if (!read_proc(pid, "statm", buf, sizeof buf)) return 0;
  unsigned long size = 0, resident = 0;
  if (std::sscanf(buf, "%lu %lu", &size, &resident) != 2) return 0;
  return resident * static_cast<std::size_t>(::sysconf(_SC_PAGESIZE));
}

auto make_worker_descriptors(std::string& error) -> std::optional<worker_descriptors> {
  worker_descriptors d;
  int pair[2];
  if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, pair) != 0) {
    error = std::string("procpool: socketpair: ") + std::strerror(errno);
    return std::nullopt;
  }
  d.channel.reset(pair[0]);
  d.worker_channel.reset(pair[1]);
  for (auto [ours, theirs] : {std::pair{&d.out, &d.worker_out}, std::pair{&d.err, &d.worker_err}}) {
    if (::pipe2(pair, O_CLOEXEC) != 0) {
      error = std::string("procpool: pipe: ") + std::strerror(errno);
      return std::nullopt;
    }
    ours->reset(pair[0]);
    theirs->reset(pair[1]);
    ::fcntl(ours->get(), F_SETFL, O_NONBLOCK);
  }
  return d;
}

void send_signal(const unique_fd& pidfd, int signal) {
  ::syscall(SYS_pidfd_send_signal, pidfd.get(), signal, nullptr, 0);
}

sealed_region::sealed_region(sealed_region&& o) noexcept
    : data_(std::exchange(o.data_, nullptr)),
      size_(std::exchange(o.size_, 0)),
      fd_(std::move(o.fd_)) {}

auto sealed_region::operator=(sealed_region&& o) noexcept -> sealed_region& {
  if (this != &o) {
    if (data_ != nullptr) ::munmap(data_, size_);
    data_ = std::exchange(o.data_, nullptr);
    size_ = std::exchange(o.size_, 0);
    fd_ = std::move(o.fd_);
  }
  return *this;
}

sealed_region::~sealed_region() {
  if (data_ != nullptr) ::munmap(data_, size_);
}

auto sealed_region::create(std::size_t bytes) -> sealed_region {
  constexpr std::size_t granule = std::size_t{1} << 20;
  const std::size_t size = (bytes + granule - 1) / granule * granule;
  unique_fd fd(::memfd_create("procpool-task-region", MFD_CLOEXEC | MFD_ALLOW_SEALING));
  if (!fd || ::ftruncate(fd.get(), static_cast<off_t>(size)) != 0) return {};
  void* p = ::mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd.get(), 0);
  if (p == MAP_FAILED) return {};
  // F_SEAL_FUTURE_WRITE keeps our writable mapping and refuses any later writable one.
  if (::fcntl(fd.get(), F_ADD_SEALS,
              F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_FUTURE_WRITE | F_SEAL_SEAL) != 0) {
    ::munmap(p, size);
    return {};
  }
  sealed_region r;
  r.data_ = static_cast<std::byte*>(p);
  r.size_ = size;
  r.fd_ = std::move(fd);
  return r;
}

}  // namespace procpool::detail
