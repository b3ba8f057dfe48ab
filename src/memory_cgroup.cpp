// procpool - per-worker memory cgroups (see memory_cgroup.hpp).
#include "memory_cgroup.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <charconv>
#include <cstring>
#include <fstream>
#include <sstream>
#include <string_view>

namespace procpool::detail {
namespace {

auto exists(const std::string& path) -> bool {
  return ::access(path.c_str(), F_OK) == 0;
}

auto write_file(const std::string& path, const std::string& text) -> std::string {
  const int fd = ::open(path.c_str(), O_WRONLY | O_CLOEXEC);
  if (fd < 0) return "open " + path + ": " + std::strerror(errno);
  const ssize_t n = ::write(fd, text.data(), text.size());
  const int err = errno;
  ::close(fd);
  if (n != static_cast<ssize_t>(text.size())) return "write " + path + ": " + std::strerror(err);
  return {};
}

// The value after `key ` in a "key value" per line file. Read with a small stack buffer and no
// allocation: the fork server calls it for every worker, and each heap page it wrote would be a
// copy-on-write fault in the fork server after the next fork.
auto counter(const char* path, std::string_view key) -> std::uint64_t {
  const int fd = ::open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) return 0;
  char buf[2048];
  std::size_t have = 0;
  std::uint64_t value = 0;
  for (;;) {
    const ssize_t n = ::read(fd, buf + have, sizeof buf - have);
    if (n <= 0) break;
    have += static_cast<std::size_t>(n);
    std::size_t line = 0;
    for (std::size_t i = 0; i < have; ++i) {
      if (buf[i] != '\n') continue;
      const std::string_view text(buf + line, i - line);
      if (text.size() > key.size() && text.substr(0, key.size()) == key &&
          text[key.size()] == ' ') {
        const auto digits = text.substr(key.size() + 1);
        std::from_chars(digits.data(), digits.data() + digits.size(), value);
      }
      line = i + 1;
    }
    std::memmove(buf, buf + line, have - line);  // keep the unfinished last line
    have -= line;
    if (have == sizeof buf) have = 0;  // a line longer than the buffer is not ours
  }
  ::close(fd);
  return value;
}

auto is_v2(const std::string& dir) -> bool {
  return exists(dir + "/memory.max");
}

}  // namespace

auto own_memory_cgroup() -> std::string {
  std::ifstream in("/proc/self/cgroup");
  std::string line, v1, v2;
  while (std::getline(in, line)) {
    // "hierarchy-id:controllers:path"
    const auto a = line.find(':');
    const auto b = line.find(':', a + 1);
    if (a == std::string::npos || b == std::string::npos) continue;
    const std::string controllers = line.substr(a + 1, b - a - 1);
    const std::string path = line.substr(b + 1);
    if (controllers.empty() && line.compare(0, a, "0") == 0) v2 = path;
    std::stringstream list(controllers);
    for (std::string c; std::getline(list, c, ',');) {
      if (c == "memory") v1 = path;
    }
  }
  if (!v1.empty() && exists("/sys/fs/cgroup/memory" + v1 + "/memory.limit_in_bytes")) {
    return "/sys/fs/cgroup/memory" + (v1 == "/" ? std::string() : v1);
  }
  if (!v2.empty()) {
    const std::string dir = "/sys/fs/cgroup" + (v2 == "/" ? std::string() : v2);
    std::ifstream controllers("/sys/fs/cgroup/cgroup.controllers");
    std::string all((std::istreambuf_iterator<char>(controllers)), {});
    if (all.find("memory") != std::string::npos) return dir;
  }
  return {};
}

auto worker_cgroup_path(const std::string& base, pid_t pid) -> std::string {
  return base + "/procpool-worker-" + std::to_string(pid);
}

auto join_memory_cgroup(const std::string& base, std::uint64_t limit_bytes) -> std::string {
  if (base.empty()) return "this process is in no memory cgroup procpool can find";
  const std::string dir = worker_cgroup_path(base, ::getpid());
  if (::mkdir(dir.c_str(), 0755) != 0 && errno != EEXIST) {
    return "mkdir " + dir + ": " + std::strerror(errno) +
           " (a memory limit through cgroups needs root or a delegated cgroup)";
  }
  const std::string limit_file = is_v2(dir) ? "/memory.max" : "/memory.limit_in_bytes";
  if (auto e = write_file(dir + limit_file, std::to_string(limit_bytes)); !e.empty()) return e;
  // v1 counts swap separately; without this a limited worker would swap instead of dying.
  if (exists(dir + "/memory.memsw.limit_in_bytes")) {
    (void)write_file(dir + "/memory.memsw.limit_in_bytes", std::to_string(limit_bytes));
  } else if (exists(dir + "/memory.swap.max")) {
    (void)write_file(dir + "/memory.swap.max", "0");
  }
  return write_file(dir + "/cgroup.procs", std::to_string(::getpid()));
}

auto cgroup_oom_kills(const std::string& dir) -> std::uint64_t {
  return is_v2(dir) ? counter((dir + "/memory.events").c_str(), "oom_kill")
                    : counter((dir + "/memory.oom_control").c_str(), "oom_kill");
}

auto system_oom_kills() -> std::uint64_t {
  return counter("/proc/vmstat", "oom_kill");
}

}  // namespace procpool::detail
