// Test support: what processes and descriptors a test leaves behind, read from /proc.
#pragma once

#include <dirent.h>
#include <unistd.h>

#include <cstdlib>
#include <fstream>
#include <set>
#include <sstream>
#include <string>
#include <vector>

namespace procpool::test {

struct proc_entry {
  int pid, ppid;
  char state;
  std::string name;
};

inline auto all_processes() -> std::vector<proc_entry> {
  std::vector<proc_entry> out;
  DIR* d = ::opendir("/proc");
  while (const dirent* e = ::readdir(d)) {
    const int pid = std::atoi(e->d_name);
    if (pid <= 0) continue;
    std::ifstream in("/proc/" + std::string(e->d_name) + "/stat");
    std::string line;
    if (!std::getline(in, line)) continue;
    const auto open = line.find('('), close = line.rfind(')');
    proc_entry p{pid, 0, '?', line.substr(open + 1, close - open - 1)};
    std::istringstream rest(line.substr(close + 2));
    rest >> p.state >> p.ppid;
    out.push_back(p);
  }
  ::closedir(d);
  return out;
}

/// Our descendants other than procpool's fork server (which lives as long as the program) and the
/// one worker it keeps forked ahead of time while a pool is connected (it belongs to the server,
/// not to a pool: the server kills and reaps it when the last pool's connection closes, which a
/// shutdown() does not wait for, so it may be seen dying), and any zombie among our children or
/// the server's.
inline auto leftover_processes() -> std::vector<proc_entry> {
  auto procs = all_processes();
  std::set<int> ours{::getpid()};
  int zygote = 0;
  for (const auto& p : procs) {
    if (p.ppid == ::getpid() && p.name == "procpool-zygote") zygote = p.pid;
  }
  std::vector<proc_entry> left;
  for (bool grew = true; grew;) {
    grew = false;
    for (const auto& p : procs) {
      if (ours.count(p.ppid) != 0 && ours.insert(p.pid).second) {
        grew = true;
        // The worker the fork server forks ahead of time, also in the moment after its fork
        // and before it names itself.
        const bool forked_ahead =
            p.ppid == zygote && (p.name == "procpool-ready" || p.name == "procpool-zygote");
        if (p.pid != zygote && !forked_ahead) left.push_back(p);
      }
    }
  }
  return left;
}

inline auto open_fd_count() -> int {
  int n = 0;
  DIR* d = ::opendir("/proc/self/fd");
  while (const dirent* e = ::readdir(d)) n += e->d_name[0] != '.';
  ::closedir(d);
  return n;
}

}  // namespace procpool::test
