// procpool - the fork server ("zygote"): a single-threaded child forked before the program starts
// threads; it forks every worker, reaps them, and reports their exit status to the pool that owns
// them. See docs/design.md, "Processes and who owns them".
#include <dirent.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <system_error>
#include <vector>

#include "internal.hpp"
#include "memory_cgroup.hpp"
#include "procpool/error.hpp"
#include "sandbox_layers.hpp"
#include "socket_message.hpp"

namespace procpool::detail {
namespace {

#if defined(__SANITIZE_THREAD__)
constexpr std::size_t runtime_threads = 2;  // ThreadSanitizer's own background thread
#else
constexpr std::size_t runtime_threads = 1;
#endif

struct zygote_handle {
  std::mutex mutex;
  unique_fd root;  // to the server; carries new per-pool connections
};

// Number of threads in this process, from /proc/self/task.
auto thread_count() -> std::size_t {
  std::size_t n = 0;
  if (DIR* d = ::opendir("/proc/self/task")) {
    while (const dirent* e = ::readdir(d)) {
      if (e->d_name[0] != '.') ++n;
    }
    ::closedir(d);
  }
  return n;
}

auto handle() -> zygote_handle& {
  static zygote_handle h;
  return h;
}

void close_all_fds_except(std::vector<int> keep) {
  std::sort(keep.begin(), keep.end());
  unsigned next = 0;
  for (int fd : keep) {
    if (static_cast<unsigned>(fd) > next) ::close_range(next, static_cast<unsigned>(fd) - 1, 0);
    next = static_cast<unsigned>(fd) + 1;
  }
  ::close_range(next, ~0U, 0);
}

// ---- inside the fork server ----

struct child {
  int conn = -1;                   // the connection that asked for it
  std::uint64_t oom_at_start = 0;  // the kernel's OOM-kill count when it started
  bool own_cgroup = false;         // it runs in a memory cgroup of its own
};

struct server {
  int root;
  int signals;
  pid_t self;
  std::string memory_base;  // our memory cgroup, parent of the workers' own
  std::vector<int> connections;
  std::map<pid_t, child> owner;            // live workers
  std::vector<std::string> stale_cgroups;  // workers' cgroups that still held processes
  // One worker forked ahead of time, waiting on `handoff` for its setup and descriptors: a spawn
  // request costs a message instead of a fork, and the next one is forked after the reply.
  struct ready_child {
    pid_t pid = 0;  // 0: none
    unique_fd handoff;
    unique_fd pidfd;
  } ready;
  // When to fork the next one: a moment after a spawn, so that the fork does not compete for the
  // CPUs with the worker that is starting and the task it is about to run.
  std::optional<std::chrono::steady_clock::time_point> fork_ahead_at;
  // One spawn request or hand-off: its fixed part and the sandbox's readable paths.
  std::vector<char> message = std::vector<char>(sizeof(zygote_request) + max_readable_paths_bytes);

  void send_event(int conn, const zygote_event& e, int fd = -1) {
    // A pool that has gone away simply misses the event; its workers are killed below.
    if (fd >= 0) {
      (void)send_message(conn, &e, sizeof e, std::span<const int>(&fd, 1));
    } else {
      (void)send_message(conn, &e, sizeof e);
    }
  }

  // fds: the worker's channel, stdout and stderr.
  // readable_paths: the request's trailing bytes (worker_setup::readable_paths_bytes).
  void spawn(int conn, const zygote_request& req, std::string_view readable_paths,
             const std::array<int, 3>& fds) {
    zygote_event e{};
    e.spawn_id = req.spawn_id;
    unique_fd pidfd;
    pid_t pid = hand_off(req.setup, readable_paths, fds, pidfd);
    if (pid == 0) {
      pid = ::fork();
      if (pid == 0) become_worker(fds, req.setup, readable_paths);
      if (pid > 0) pidfd.reset(static_cast<int>(::syscall(SYS_pidfd_open, pid, 0)));
    }
    if (pid < 0) {
      e.kind = zygote_event_kind::spawn_failed;
      e.status = errno;
      send_event(conn, e);
    } else {
      e.kind = zygote_event_kind::spawned;
      e.pid = pid;
      send_event(conn, e, pidfd.get());
      // Read after the pool has heard of the worker, off its start-up path.
      owner[pid] = child{conn, system_oom_kills(), req.setup.memory_max_bytes != 0};
      if (!fork_ahead_at) {
        fork_ahead_at = std::chrono::steady_clock::now() + std::chrono::milliseconds(5);
      }
    }
    for (int fd : fds) ::close(fd);
  }

  // Gives a spawn request to the worker forked ahead of time; its pid, or 0 when there is none (or
  // it died waiting).
  auto hand_off(const worker_setup& setup, std::string_view readable_paths,
                const std::array<int, 3>& fds, unique_fd& pidfd) -> pid_t {
    if (ready.pid == 0) return 0;
    const pid_t pid = std::exchange(ready.pid, 0);
    const unique_fd handoff = std::move(ready.handoff);
    pidfd = std::move(ready.pidfd);
    std::memcpy(message.data(), &setup, sizeof setup);
    std::memcpy(message.data() + sizeof setup, readable_paths.data(), readable_paths.size());
    if (send_message(handoff.get(), message.data(), sizeof setup + readable_paths.size(), fds)) {
      return pid;
    }
    ::kill(pid, SIGKILL);  // reaped by report_exits, which knows it belongs to nobody
    pidfd.reset();
    return 0;
  }

  // Forks the next worker ahead of time, when none is waiting and a pool is connected. A failed
  // fork is not an error here: the next spawn request forks, and reports the failure to its pool.
  void fork_ahead() {
    if (ready.pid != 0 || connections.empty()) return;
    int pair[2];
    if (::socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, pair) != 0) return;
    unique_fd ours(pair[0]), theirs(pair[1]);
    const pid_t pid = ::fork();
    if (pid == 0) wait_for_hand_off(theirs.get());
    if (pid < 0) return;
    ready.pid = pid;
    ready.handoff = std::move(ours);
    ready.pidfd.reset(static_cast<int>(::syscall(SYS_pidfd_open, pid, 0)));
  }

  // Takes the copy-on-write faults a starting worker would take (its stack, the heap its channel
  // buffer comes from) while it waits, not after it is handed a request.
  static void warm_up_worker_memory() {
    prepare_worker_code();
    volatile std::byte stack[128 * 1024];
    for (std::size_t i = 0; i < sizeof stack; i += 4096) stack[i] = std::byte{0};
    auto heap = std::make_unique<std::byte[]>(96 * 1024);
    for (std::size_t i = 0; i < 96 * 1024; i += 4096) heap[i] = std::byte{1};
  }

  // In the child forked ahead of time: holds nothing of the server's (a pool's connection held
  // here would keep the pool from seeing the server hang up), then waits to become a worker.
  [[noreturn]] void wait_for_hand_off(int handoff) {
    ::prctl(PR_SET_NAME, "procpool-ready");
    close_all_fds_except({0, 1, 2, handoff});
    ::prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (::getppid() != self) ::_exit(1);
    warm_up_worker_memory();
    worker_setup setup;
    std::array<int, 3> fds{};
    const long n =
        receive_message(handoff, message.data(), message.size(), fds, receive_mode::wait);
    if (n < static_cast<long>(sizeof setup) ||
        std::any_of(fds.begin(), fds.end(), [](int fd) { return fd < 0; })) {
      ::_exit(1);  // the server is gone, or dropped this child
    }
    std::memcpy(&setup, message.data(), sizeof setup);
    if (static_cast<std::size_t>(n) - sizeof setup != setup.readable_paths_bytes) ::_exit(1);
    become_worker(fds, setup,
                  std::string_view(message.data() + sizeof setup, setup.readable_paths_bytes));
  }

  // What the kernel can tell about memory as the cause of `pid`'s death; removes its cgroup.
  auto memory_verdict(pid_t pid, const child& c, int status) -> std::uint32_t {
    std::uint32_t verdict = zygote_memory_unknown;
    if (c.own_cgroup) {
      const std::string dir = worker_cgroup_path(memory_base, pid);
      if (cgroup_oom_kills(dir) > 0) verdict = zygote_memory_cgroup_oom;
      if (::rmdir(dir.c_str()) != 0 && errno == EBUSY) stale_cgroups.push_back(dir);
    }
    if (verdict == zygote_memory_unknown && WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL &&
        system_oom_kills() > c.oom_at_start) {
      verdict = zygote_memory_system_oom;
    }
    return verdict;
  }

  void remove_stale_cgroups() {
    std::erase_if(stale_cgroups, [](const std::string& dir) {
      return ::rmdir(dir.c_str()) == 0 || errno != EBUSY;
    });
  }

  // The sandbox's layers, in the order that works: the environment first (nothing after reads
  // it); the network namespace while it may still be created; no-new-privs, which an
  // unprivileged Landlock ruleset needs; Landlock while the paths may still be opened as the
  // pool's user; the uid (which clears the parent-death signal, so it is set again); then the
  // system call filter, last, as nothing after it may need more.
  auto enter_sandbox(const worker_setup& setup, std::string_view readable_paths) -> std::string {
    const std::uint32_t layers = setup.sandbox_layers;
    if ((layers & sandbox_clear_environment) != 0) {
      for (char** e = environ; e != nullptr && *e != nullptr; ++e) {
        std::memset(*e, 0, std::strlen(*e));
      }
      ::clearenv();
      const int null = ::open("/dev/null", O_RDONLY | O_CLOEXEC);
      if (null < 0 || ::dup2(null, 0) < 0) return std::string("stdin: ") + std::strerror(errno);
      ::close(null);
    }
    if ((layers & sandbox_no_network) != 0) {
      if (auto why = unshare_network(); !why.empty()) return why;
    }
    if ((layers & sandbox_no_new_privileges) != 0) {
      if (auto why = set_no_new_privs(); !why.empty()) return why;
    }
    // Another process of the same uid (a sibling worker) may not ptrace it or read its memory
    // through /proc, even where the filter is off; it also writes no core dump.
    ::prctl(PR_SET_DUMPABLE, 0);
    if (!readable_paths.empty()) {
      std::vector<std::string> paths;
      for (std::size_t at = 0; at < readable_paths.size();) {
        const std::size_t end = readable_paths.find('\0', at);
        paths.emplace_back(readable_paths.substr(at, end - at));
        at = end + 1;
      }
      if (landlock_abi() > 0 || (layers & sandbox_allow_weaker_filesystem) == 0) {
        if (auto why = restrict_filesystem(paths); !why.empty()) return why;
      }
    }
    if ((layers & sandbox_drop_privileges) != 0) {
      if (auto why = drop_privileges(setup.sandbox_uid, setup.sandbox_gid); !why.empty()) {
        return why;
      }
      ::prctl(PR_SET_PDEATHSIG, SIGKILL);
      if (::getppid() != self) ::_exit(1);
      ::prctl(PR_SET_DUMPABLE, 0);  // a uid change makes it dumpable again
    }
    if ((layers & sandbox_system_call_filter) != 0) {
      const auto action = (layers & sandbox_fail_forbidden_calls) != 0
                              ? seccomp_violation::fail_call
                              : seccomp_violation::kill_process;
      if (auto why = load_compute_filter(action, !readable_paths.empty()); !why.empty()) {
        return why;
      }
    }
    return {};
  }

  [[noreturn]] void become_worker(const std::array<int, 3>& fds, const worker_setup& setup,
                                  std::string_view readable_paths) {
    sigset_t none;
    sigemptyset(&none);
    ::sigprocmask(SIG_SETMASK, &none, nullptr);
    ::signal(SIGCHLD, SIG_DFL);
    ::signal(SIGPIPE, SIG_DFL);
    ::signal(SIGINT, SIG_IGN);  // Ctrl-C reaches the whole process group; the parent decides.
    ::prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (::getppid() != self) ::_exit(1);
    // Its own process group, so that killing the group also kills what a task started.
    ::setpgid(0, 0);
    ::prctl(PR_SET_NAME, "procpool-worker");
    // Move the channel to 3 and the output pipes to 1 and 2; the fds arrived above 3 because the
    // server holds 0-2, its root socket and its signalfd.
    if (::dup2(fds[1], 1) < 0 || ::dup2(fds[2], 2) < 0 || ::dup2(fds[0], 3) < 0) ::_exit(1);
    ::fcntl(3, F_SETFD, FD_CLOEXEC);
    ::close_range(4, ~0U, 0);
    if (setup.memory_max_bytes != 0) {
      if (auto why = join_memory_cgroup(memory_base, setup.memory_max_bytes); !why.empty()) {
        const std::string line =
            "procpool: cannot apply pool_options::memory_max_bytes: " + why + "\n";
        (void)!::write(2, line.data(), line.size());
        ::_exit(1);
      }
    }
    if (setup.memory_limit_bytes != 0) {
      const rlimit limit{setup.memory_limit_bytes, setup.memory_limit_bytes};
      ::setrlimit(RLIMIT_AS, &limit);
    }
    if (setup.sandbox_layers != 0) {
      if (auto why = enter_sandbox(setup, readable_paths); !why.empty()) {
        const std::string line = "procpool: cannot apply pool_options::sandbox: " + why + "\n";
        (void)!::write(2, line.data(), line.size());
        ::_exit(1);
      }
    }
    run_worker(3, setup);
  }

  void report_exits() {
    signalfd_siginfo info;
    while (::read(signals, &info, sizeof info) == sizeof info) {
    }
    int status = 0;
    pid_t pid;
    while ((pid = ::waitpid(-1, &status, WNOHANG)) > 0) {
      ::kill(-pid, SIGKILL);  // whatever the task started dies with it
      if (pid == ready.pid) ready = {};
      auto it = owner.find(pid);
      if (it == owner.end()) continue;
      zygote_event e{};
      e.kind = zygote_event_kind::exited;
      e.pid = pid;
      e.status = status;
      e.memory = memory_verdict(pid, it->second, status);
      send_event(it->second.conn, e);
      owner.erase(it);
    }
    remove_stale_cgroups();
  }

  // A pool closed its connection (destroyed, or its process died): none of its workers may outlive
  // it. Kill and reap them, then close our end so the pool knows they are gone.
  void drop_connection(int conn) {
    for (auto it = owner.begin(); it != owner.end();) {
      if (it->second.conn != conn) {
        ++it;
        continue;
      }
      ::kill(-it->first, SIGKILL);
      ::kill(it->first, SIGKILL);
      int status = 0;
      ::waitpid(it->first, &status, 0);
      (void)memory_verdict(it->first, it->second, status);
      it = owner.erase(it);
    }
    connections.erase(std::remove(connections.begin(), connections.end(), conn), connections.end());
    // With no pool left, nothing of procpool's but the server runs: the child forked ahead goes too
    // (before the close below tells the pool its workers are gone).
    if (connections.empty()) drop_ready_child();
    remove_stale_cgroups();
    ::close(conn);
  }

  void drop_ready_child() {
    if (ready.pid == 0) return;
    ::kill(ready.pid, SIGKILL);
    int status = 0;
    ::waitpid(ready.pid, &status, 0);
    ready = {};
  }

  [[noreturn]] void stop() {
    drop_ready_child();
    for (auto& [pid, c] : owner) {
      ::kill(-pid, SIGKILL);
      ::kill(pid, SIGKILL);
    }
    for (auto& [pid, c] : owner) {
      int status = 0;
      ::waitpid(pid, &status, 0);
      (void)memory_verdict(pid, c, status);
    }
    remove_stale_cgroups();
    ::_exit(0);
  }

  [[noreturn]] void run() {
    std::vector<pollfd> fds;
    for (;;) {
      fds.clear();
      fds.push_back({root, POLLIN, 0});
      fds.push_back({signals, POLLIN, 0});
      for (int c : connections) fds.push_back({c, POLLIN, 0});
      int timeout = -1;
      if (fork_ahead_at) {
        const auto left = std::chrono::ceil<std::chrono::milliseconds>(
            *fork_ahead_at - std::chrono::steady_clock::now());
        timeout = static_cast<int>(std::max<std::chrono::milliseconds::rep>(left.count(), 0));
      }
      if (::poll(fds.data(), fds.size(), timeout) < 0) {
        if (errno == EINTR) continue;
        stop();
      }
      if (fds[1].revents != 0) report_exits();
      if (fds[0].revents != 0) {
        char byte = 0;
        int conn = -1;
        const long n = receive_message(root, &byte, 1, std::span<int>(&conn, 1));
        if (n == 0 || (n < 0 && errno != EAGAIN && errno != EINTR)) stop();  // the program is gone
        if (conn >= 0) connections.push_back(conn);
      }
      for (std::size_t i = 2; i < fds.size(); ++i) {
        if (fds[i].revents == 0) continue;
        const int conn = fds[i].fd;
        zygote_request req;
        std::array<int, 3> passed{};
        const long n = receive_message(conn, message.data(), message.size(), passed);
        const bool complete =
            std::all_of(passed.begin(), passed.end(), [](int fd) { return fd >= 0; });
        if (n >= static_cast<long>(sizeof req)) std::memcpy(&req, message.data(), sizeof req);
        if (n >= static_cast<long>(sizeof req) && req.kind == 1 && complete &&
            static_cast<std::size_t>(n) - sizeof req == req.setup.readable_paths_bytes) {
          // Copied out: spawn reuses the buffer to hand the request on.
          const std::string paths(message.data() + sizeof req, req.setup.readable_paths_bytes);
          spawn(conn, req, paths, passed);
          continue;
        }
        for (int fd : passed) {
          if (fd >= 0) ::close(fd);
        }
        if (n < 0 && (errno == EAGAIN || errno == EINTR)) continue;
        drop_connection(conn);
      }
      if (fork_ahead_at && std::chrono::steady_clock::now() >= *fork_ahead_at) {
        fork_ahead_at.reset();
        fork_ahead();
      }
    }
  }
};

[[noreturn]] void zygote_main(int root, pid_t parent) {
  ::prctl(PR_SET_PDEATHSIG, SIGKILL);
  if (::getppid() != parent) ::_exit(0);
  ::prctl(PR_SET_NAME, "procpool-zygote");
  // Processes a task started and left behind are re-parented here, so they are reaped here.
  ::prctl(PR_SET_CHILD_SUBREAPER, 1);
  ::signal(SIGINT, SIG_IGN);
  ::signal(SIGPIPE, SIG_IGN);
  sigset_t chld;
  sigemptyset(&chld);
  sigaddset(&chld, SIGCHLD);
  ::sigprocmask(SIG_BLOCK, &chld, nullptr);
  const int signals = ::signalfd(-1, &chld, SFD_CLOEXEC | SFD_NONBLOCK);
  if (signals < 0) ::_exit(1);
  close_all_fds_except({0, 1, 2, root, signals});
  prepare_worker_code();
  server s{root, signals, ::getpid(), own_memory_cgroup(), {}, {}, {}, {}, {}};
  s.run();
}

}  // namespace

void start_zygote() {
  auto& h = handle();
  std::lock_guard lock(h.mutex);
  if (h.root) return;
  if (thread_count() > runtime_threads) {
    throw init_required(
        "procpool: this process already runs several threads, so forking workers from it is "
        "unsafe. "
        "Call procpool::init() at the top of main(), before any thread is started.");
  }
  int sv[2];
  if (::socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) != 0) {
    throw std::system_error(errno, std::generic_category(),
                            "procpool: socketpair for the fork server");
  }
  const pid_t parent = ::getpid();
  const pid_t pid = ::fork();
  if (pid < 0) {
    const int err = errno;
    ::close(sv[0]);
    ::close(sv[1]);
    throw std::system_error(err, std::generic_category(), "procpool: fork of the fork server");
  }
  if (pid == 0) {
    ::close(sv[0]);
    zygote_main(sv[1], parent);
  }
  ::close(sv[1]);
  h.root.reset(sv[0]);
}

auto connect_zygote() -> unique_fd {
  start_zygote();
  auto& h = handle();
  std::lock_guard lock(h.mutex);
  int sv[2];
  if (::socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) != 0) {
    throw worker_start_failed(std::string("procpool: socketpair: ") + std::strerror(errno));
  }
  unique_fd ours(sv[0]);
  unique_fd theirs(sv[1]);
  const char byte = 'c';
  const int fd = theirs.get();
  if (!send_message(h.root.get(), &byte, 1, std::span<const int>(&fd, 1))) {
    throw worker_start_failed(std::string("procpool: the fork server is gone: ") +
                              std::strerror(errno));
  }
  return ours;
}

}  // namespace procpool::detail
