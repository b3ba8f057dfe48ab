// Test support: a throwaway PostgreSQL server (15, from Debian's postgresql-15) for one test
// program.
//
// How it works: the constructor makes a private directory with mkdtemp, initdb's a cluster into
// <dir>/data (superuser "procpool", trust authentication, so tests need no passwords), and starts
// it with pg_ctl on a free loopback port, with its Unix socket and its log (<dir>/server.log) in
// the same directory. The destructor stops it with "immediate" (nothing of it needs to survive) and
// deletes the directory. Each object owns a whole server, so tests share no state with each other,
// with a developer's own PostgreSQL, or with Debian's "main" cluster (scripts/install-deps.sh keeps
// that from being created at all).
//
// Why a user switch: CI runs the tests as root, and PostgreSQL refuses to run as root (initdb and
// postgres exit with "cannot be run as root"). So when geteuid() == 0 the directory is handed to
// nobody:nogroup and every server command (initdb, pg_ctl, hence postgres) runs as that user: fork,
// drop supplementary groups, setgid, setuid, execve. That needs neither sudo nor runuser, which a
// minimal CI image may lack, and root can still read the log and delete everything afterwards.
// psql is only a client, so it runs as whoever runs the tests.
//
// Waiting: every wait is bounded (pg_ctl -w -t 60, and a hang guard on each command we run, after
// which the command is killed), and each wait ends on an event (a pidfd or a pipe becoming ready),
// never on a sleep. Every child we fork is reaped. The postmaster itself is not our child (pg_ctl
// daemonizes it), so stopping waits on a pidfd of it, to be sure it is gone and its port is free.
//
// Not thread-safe: use one pg_server from one thread at a time (psql() may run concurrently).
#pragma once

#include <arpa/inet.h>
#include <fcntl.h>
#include <grp.h>
#include <netinet/in.h>
#include <poll.h>
#include <pwd.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <optional>
#include <sstream>
#include <stdexcept>
#include <string>
#include <string_view>
#include <system_error>
#include <utility>
#include <vector>

extern char** environ;

namespace service_test {

namespace pg_detail {

using namespace std::chrono_literals;
namespace fs = std::filesystem;

/// Hang guard for one server command; pg_ctl's own -t 60 should always fire first.
inline constexpr auto command_guard = 120s;

class unique_fd {
 public:
  unique_fd() = default;
  explicit unique_fd(int fd) : fd_(fd) {}
  ~unique_fd() { reset(); }
  unique_fd(unique_fd&& other) noexcept : fd_(std::exchange(other.fd_, -1)) {}
  auto operator=(unique_fd&& other) noexcept -> unique_fd& {
    if (this != &other) {
      reset();
      fd_ = std::exchange(other.fd_, -1);
    }
    return *this;
  }
  unique_fd(const unique_fd&) = delete;
  auto operator=(const unique_fd&) -> unique_fd& = delete;

  [[nodiscard]] auto get() const -> int { return fd_; }
  explicit operator bool() const { return fd_ >= 0; }
  void reset() {
    if (fd_ >= 0) ::close(fd_);
    fd_ = -1;
  }

 private:
  int fd_ = -1;
};

[[noreturn]] inline void throw_errno(const std::string& what) {
  throw std::system_error(errno, std::generic_category(), what);
}

inline auto pidfd_open(pid_t pid) -> unique_fd {
  return unique_fd(static_cast<int>(::syscall(SYS_pidfd_open, pid, 0)));
}

/// Who runs the server commands; nullopt means "as we are".
struct identity {
  uid_t uid;
  gid_t gid;
};

inline auto server_identity() -> std::optional<identity> {
  if (::geteuid() != 0) return std::nullopt;
  std::vector<char> buf(16384);
  passwd pw{};
  passwd* pw_found = nullptr;
  if (::getpwnam_r("nobody", &pw, buf.data(), buf.size(), &pw_found) != 0 || !pw_found) {
    throw std::runtime_error(
        "pg_server: running as root, but there is no user \"nobody\" to run PostgreSQL as "
        "(PostgreSQL refuses to run as root)");
  }
  identity id{pw.pw_uid, pw.pw_gid};
  // Debian's nobody has primary group nogroup already; looking it up keeps other layouts right.
  group gr{};
  group* gr_found = nullptr;
  if (::getgrnam_r("nogroup", &gr, buf.data(), buf.size(), &gr_found) == 0 && gr_found) {
    id.gid = gr.gr_gid;
  }
  return id;
}

inline auto is_executable(const fs::path& p) -> bool {
  std::error_code ec;
  return fs::is_regular_file(p, ec) && ::access(p.c_str(), X_OK) == 0;
}

inline auto has_server(const fs::path& bindir) -> bool {
  return is_executable(bindir / "initdb") && is_executable(bindir / "pg_ctl") &&
         is_executable(bindir / "postgres");
}

inline auto shell_quote(const std::string& s) -> std::string {
  std::string q = "'";
  for (char c : s) q += c == '\'' ? std::string("'\\''") : std::string(1, c);
  return q + "'";
}

inline auto command_line(const std::vector<std::string>& argv) -> std::string {
  std::string line;
  for (const auto& a : argv) {
    if (!line.empty()) line += ' ';
    const bool plain = !a.empty() && a.find_first_of(" \t\n'\"\\$`*?;&|<>()") == std::string::npos;
    line += plain ? a : shell_quote(a);
  }
  return line;
}

inline auto trim(std::string_view s) -> std::string {
  const auto first = s.find_first_not_of(" \t\r\n");
  if (first == std::string_view::npos) return {};
  return std::string(s.substr(first, s.find_last_not_of(" \t\r\n") - first + 1));
}

/// The environment for our commands: ours, minus what would make them behave differently on a
/// developer's machine than in CI.
inline auto child_environment(const std::vector<std::string>& extra) -> std::vector<std::string> {
  std::vector<std::string> env;
  for (char** e = environ; e && *e; ++e) {
    const std::string_view kv(*e);
    // PG* (PGHOST, PGOPTIONS, PGSSLMODE, ...) would retarget or reconfigure the commands. A LANG
    // or LC_* naming a locale that is not generated makes initdb fail. An LD_PRELOAD meant for the
    // test (a sanitizer runtime, say) has no business in postgres, and may fail it at exit.
    if (kv.starts_with("PG") || kv.starts_with("LC_") || kv.starts_with("LANG") ||
        kv.starts_with("LD_PRELOAD=")) {
      continue;
    }
    env.emplace_back(kv);
  }
  env.emplace_back("LC_ALL=C");  // also keeps messages in English, which start() matches on
  env.insert(env.end(), extra.begin(), extra.end());
  return env;
}

/// Between fork and execve only async-signal-safe calls are allowed (other threads may have held
/// malloc's lock at fork time), so this formats by hand and ends with _exit.
[[noreturn]] inline void child_fail(const char* what) {
  const int err = errno;
  char digits[16];
  int n = 0;
  for (int v = err; n == 0 || v > 0; v /= 10) digits[n++] = static_cast<char>('0' + v % 10);
  const char prefix[] = "pg_server: ";
  const char middle[] = " failed, errno ";
  [[maybe_unused]] ssize_t w = ::write(STDERR_FILENO, prefix, sizeof prefix - 1);
  w = ::write(STDERR_FILENO, what, std::strlen(what));
  w = ::write(STDERR_FILENO, middle, sizeof middle - 1);
  while (n > 0) w = ::write(STDERR_FILENO, &digits[--n], 1);
  w = ::write(STDERR_FILENO, "\n", 1);
  ::_exit(127);
}

struct run_result {
  int exit_code = 0;  // 128 + signal number when killed by a signal
  std::string out;
  std::string err;
};

/// Runs argv[0] (an absolute path) with stdin from /dev/null, capturing stdout and stderr, as
/// `who` when given, in `cwd` when given. Kills it and throws after `guard`.
inline auto run(const std::vector<std::string>& args, const std::optional<identity>& who,
                const std::optional<fs::path>& cwd, std::chrono::milliseconds guard,
                const std::vector<std::string>& extra_env = {}) -> run_result {
  // Everything the child needs is prepared here, since it may not allocate.
  std::vector<std::string> env = child_environment(extra_env);
  std::vector<char*> argv;
  std::vector<char*> envp;
  std::vector<std::string> args_copy = args;
  for (auto& a : args_copy) argv.push_back(a.data());
  argv.push_back(nullptr);
  for (auto& e : env) envp.push_back(e.data());
  envp.push_back(nullptr);
  const std::string dir = cwd ? cwd->string() : std::string();

  unique_fd dev_null(::open("/dev/null", O_RDONLY | O_CLOEXEC));
  if (!dev_null) throw_errno("open /dev/null");
  int out_fds[2];
  int err_fds[2];
  if (::pipe2(out_fds, O_CLOEXEC) != 0) throw_errno("pipe2");
  unique_fd out_r(out_fds[0]), out_w(out_fds[1]);
  if (::pipe2(err_fds, O_CLOEXEC) != 0) throw_errno("pipe2");
  unique_fd err_r(err_fds[0]), err_w(err_fds[1]);
  // Only our ends: a child that fills a pipe must block, not lose output.
  for (int fd : {out_r.get(), err_r.get()}) ::fcntl(fd, F_SETFL, ::fcntl(fd, F_GETFL) | O_NONBLOCK);

  const pid_t pid = ::fork();
  if (pid < 0) throw_errno("fork");
  if (pid == 0) {
    if (::dup2(dev_null.get(), STDIN_FILENO) < 0) child_fail("dup2");
    if (::dup2(out_w.get(), STDOUT_FILENO) < 0) child_fail("dup2");
    if (::dup2(err_w.get(), STDERR_FILENO) < 0) child_fail("dup2");
    // O_CLOEXEC covers our fds, not the test's: a listening socket of the service under test,
    // inherited by the daemonized postmaster, would stay open after the test closes it.
    ::close_range(3, ~0U, 0);
    // nobody cannot chdir back to a cwd under /root, and initdb wants a usable cwd.
    if (!dir.empty() && ::chdir(dir.c_str()) != 0) child_fail("chdir");
    if (who) {
      // Groups first: once uid is nobody, we may no longer change them.
      if (::setgroups(0, nullptr) != 0) child_fail("setgroups");
      if (::setgid(who->gid) != 0) child_fail("setgid");
      if (::setuid(who->uid) != 0) child_fail("setuid");
    }
    ::execve(argv[0], argv.data(), envp.data());
    child_fail("execve");
  }
  out_w.reset();
  err_w.reset();

  // Exit is signalled by the pidfd, not by EOF: a daemon (the postmaster) may inherit the pipes.
  unique_fd pidfd = pidfd_open(pid);
  if (!pidfd) {
    const int err = errno;
    ::kill(pid, SIGKILL);
    ::waitpid(pid, nullptr, 0);
    errno = err;
    throw_errno("pidfd_open");
  }
  run_result result;
  auto drain = [](unique_fd& fd, std::string& into) {
    char buf[4096];
    for (;;) {
      const ssize_t n = ::read(fd.get(), buf, sizeof buf);
      if (n > 0) {
        into.append(buf, static_cast<std::size_t>(n));
      } else if (n < 0 && errno == EINTR) {
        continue;
      } else {
        if (n == 0 || errno != EAGAIN) fd.reset();
        return;
      }
    }
  };
  const auto deadline = std::chrono::steady_clock::now() + guard;
  bool exited = false;
  while (!exited) {
    const auto left =
        std::chrono::ceil<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
    if (left <= 0ms) {
      ::kill(pid, SIGKILL);
      ::waitpid(pid, nullptr, 0);
      throw std::runtime_error("pg_server: timed out after " +
                               std::to_string(guard.count() / 1000) + " s: " + command_line(args) +
                               "\n" + result.out + result.err);
    }
    pollfd fds[3] = {{pidfd.get(), POLLIN, 0}, {out_r.get(), POLLIN, 0}, {err_r.get(), POLLIN, 0}};
    // A closed pipe stays in the array with fd -1, which poll ignores.
    if (::poll(fds, 3, static_cast<int>(left.count())) < 0) {
      if (errno == EINTR) continue;
      throw_errno("poll");
    }
    if (fds[1].revents) drain(out_r, result.out);
    if (fds[2].revents) drain(err_r, result.err);
    exited = fds[0].revents != 0;
  }
  // It has exited, so all it wrote is in the pipes now; read that and stop, whoever else holds
  // the write ends.
  if (out_r) drain(out_r, result.out);
  if (err_r) drain(err_r, result.err);
  int status = 0;
  while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  result.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  return result;
}

inline auto find_server_bindir() -> fs::path {
  const fs::path preferred = "/usr/lib/postgresql/15/bin";
  if (has_server(preferred)) return preferred;
  // Debian's layout with another major version: take the newest.
  std::optional<std::pair<int, fs::path>> best;
  std::error_code ec;
  for (const auto& entry : fs::directory_iterator("/usr/lib/postgresql", ec)) {
    const std::string name = entry.path().filename().string();
    const bool numeric =
        !name.empty() && name.size() < 6 &&
        std::all_of(name.begin(), name.end(), [](unsigned char c) { return std::isdigit(c) != 0; });
    if (!numeric) continue;
    const int version = std::stoi(name);
    if (has_server(entry.path() / "bin") && (!best || version > best->first)) {
      best.emplace(version, entry.path() / "bin");
    }
  }
  if (best) return best->second;
  // Other layouts: ask pg_config, from the PATH.
  const char* path = std::getenv("PATH");
  std::stringstream dirs(path ? path : "/usr/local/bin:/usr/bin:/bin");
  for (std::string d; std::getline(dirs, d, ':');) {
    const fs::path pg_config = fs::path(d.empty() ? "." : d) / "pg_config";
    if (!is_executable(pg_config)) continue;
    try {
      const run_result r = run({fs::absolute(pg_config).string(), "--bindir"}, std::nullopt,
                               std::nullopt, std::chrono::seconds(30));
      if (r.exit_code == 0 && has_server(trim(r.out))) return trim(r.out);
    } catch (const std::exception&) {
      // A broken pg_config is the same as none.
    }
    break;
  }
  throw std::runtime_error("PostgreSQL server binaries not found; run scripts/install-deps.sh");
}

inline auto find_psql(const fs::path& bindir) -> fs::path {
  // The one next to the server first, so client and server versions match.
  for (const fs::path& p :
       {bindir / "psql", fs::path("/usr/lib/postgresql/15/bin/psql"), fs::path("/usr/bin/psql")}) {
    if (is_executable(p)) return p;
  }
  throw std::runtime_error("psql not found; run scripts/install-deps.sh");
}

inline auto free_port() -> std::uint16_t {
  unique_fd fd(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
  if (!fd) throw_errno("socket");
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = 0;
  if (::bind(fd.get(), reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) throw_errno("bind");
  socklen_t len = sizeof addr;
  if (::getsockname(fd.get(), reinterpret_cast<sockaddr*>(&addr), &len) != 0) {
    throw_errno("getsockname");
  }
  return ntohs(addr.sin_port);
}

/// What `path` holds after byte `from`, at most its last `max` bytes.
inline auto file_tail(const fs::path& path, std::uintmax_t from = 0, std::size_t max = 4000)
    -> std::string {
  std::ifstream in(path, std::ios::binary);
  if (!in) return {};
  in.seekg(0, std::ios::end);
  const auto size = static_cast<std::uintmax_t>(in.tellg());
  if (size <= from) return {};
  const std::uintmax_t start = std::max<std::uintmax_t>(from, size > max ? size - max : 0);
  in.seekg(static_cast<std::streamoff>(start));
  return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

}  // namespace pg_detail

/// A private PostgreSQL server for the lifetime of this object. See the top of this file.
class pg_server {
 public:
  pg_server()
      : bindir_(pg_detail::find_server_bindir()),
        psql_(pg_detail::find_psql(bindir_)),
        who_(pg_detail::server_identity()) {
    namespace fs = std::filesystem;
    std::string pattern = (fs::temp_directory_path() / "procpool-pg.XXXXXX").string();
    if (::mkdtemp(pattern.data()) == nullptr) pg_detail::throw_errno("mkdtemp " + pattern);
    // Absolute, because the server commands run with it as their working directory.
    dir_ = fs::absolute(pattern);
    try {
      if (who_ && ::chown(dir_.c_str(), who_->uid, who_->gid) != 0) {
        pg_detail::throw_errno("chown " + dir_.string());
      }
      run_server_command({(bindir_ / "initdb").string(), "-D", data_dir().string(), "-U",
                          "procpool", "--auth=trust", "-E", "UTF8", "--no-locale", "--no-sync",
                          "--no-instructions"});
      std::ofstream conf(data_dir() / "postgresql.conf", std::ios::app);
      // Sized for many short-lived test connections on a shared CI machine, not for speed.
      conf << "\n# Added by test/service/pg_server.hpp\n"
              "max_connections = 200\n"
              "shared_buffers = 32MB\n"
              "huge_pages = off\n"
              "logging_collector = off\n";  // pg_ctl -l captures the log instead
      conf.close();
      if (!conf) throw std::runtime_error("pg_server: cannot write postgresql.conf");
      // The port is free when we look but not reserved; another program may take it before the
      // postmaster binds it, so a clash gets a new port rather than a failed test.
      for (int attempt = 1;; ++attempt) {
        port_ = pg_detail::free_port();
        if (launch() || attempt == 5) break;
      }
      if (!running_) throw std::runtime_error("pg_server: no free port after 5 attempts");
    } catch (...) {
      cleanup();
      throw;
    }
  }

  ~pg_server() { cleanup(); }

  pg_server(const pg_server&) = delete;
  auto operator=(const pg_server&) -> pg_server& = delete;

  /// libpq connection URI of the superuser on the default database.
  [[nodiscard]] auto url() const -> std::string {
    return "postgresql://procpool@127.0.0.1:" + std::to_string(port_) + "/postgres";
  }
  [[nodiscard]] auto port() const -> std::uint16_t { return port_; }
  [[nodiscard]] auto data_dir() const -> std::filesystem::path { return dir_ / "data"; }
  [[nodiscard]] auto log_file() const -> std::filesystem::path { return dir_ / "server.log"; }

  /// Shuts down cleanly (disconnecting clients) and returns once the postmaster has exited.
  void stop() {
    if (!running_) return;
    pg_detail::unique_fd postmaster = postmaster_pidfd();
    run_server_command({(bindir_ / "pg_ctl").string(), "stop", "-D", data_dir().string(), "-m",
                        "fast", "-w", "-t", "60"});
    running_ = false;
    await_exit(postmaster);
  }

  /// Starts again, on the same port and data; throws if the port was taken meanwhile.
  void start() {
    if (running_) return;
    if (!launch()) {
      throw std::runtime_error("pg_server: port " + std::to_string(port_) +
                               " was taken while the server was stopped\n" + log_tail());
    }
  }

  void restart() {
    stop();
    start();
  }

  /// Runs `sql` with psql as the superuser and returns its unaligned, tuples-only output, trimmed
  /// (rows separated by '\n', columns by '|'). Throws on any error, with psql's message.
  auto psql(const std::string& sql) const -> std::string {
    const std::vector<std::string> args = {psql_.string(),    "-X", "-q",  "-A", "-t", "-v",
                                           "ON_ERROR_STOP=1", "-d", url(), "-c", sql};
    const auto r = pg_detail::run(args, std::nullopt, std::nullopt, pg_detail::command_guard,
                                  {"PGCONNECT_TIMEOUT=10", "PGCLIENTENCODING=UTF8"});
    if (r.exit_code != 0) {
      throw std::runtime_error(pg_detail::command_line(args) + "\nexited with " +
                               std::to_string(r.exit_code) + ": " + r.err);
    }
    return pg_detail::trim(r.out);
  }

 private:
  auto run_server_command(const std::vector<std::string>& args) const -> pg_detail::run_result {
    auto r = pg_detail::run(args, who_, dir_, pg_detail::command_guard);
    if (r.exit_code != 0) {
      std::string message = "pg_server: " + pg_detail::command_line(args) + "\nexited with " +
                            std::to_string(r.exit_code) + ":\n" + r.out + r.err;
      if (who_)
        message += "\n(run as user nobody, who must be able to reach " + dir_.string() + ")";
      throw std::runtime_error(message + log_tail());
    }
    return r;
  }

  /// Starts the postmaster on port_. False when the port turned out to be taken.
  auto launch() -> bool {
    namespace fs = std::filesystem;
    std::error_code ec;
    const auto log_size = fs::exists(log_file(), ec) ? fs::file_size(log_file(), ec) : 0;
    const std::vector<std::string> args = {
        (bindir_ / "pg_ctl").string(), "start", "-D", data_dir().string(), "-l",
        log_file().string(), "-w", "-t", "60", "-o",
        // pg_ctl hands -o to /bin/sh, hence the quoting.
        "-p " + std::to_string(port_) + " -k " + pg_detail::shell_quote(dir_.string()) +
            " -c listen_addresses=127.0.0.1"};
    try {
      run_server_command(args);
    } catch (...) {
      // A postmaster that did not come up in time is still running; it must not outlive us.
      stop_immediately();
      const std::string log = pg_detail::file_tail(log_file(), log_size);
      if (log.find("could not bind IPv4 address") != std::string::npos &&
          log.find("Address already in use") != std::string::npos) {
        return false;
      }
      throw;
    }
    running_ = true;
    return true;
  }

  /// The postmaster, pinned by a pidfd so that waiting for its exit cannot be fooled by PID reuse.
  [[nodiscard]] auto postmaster_pidfd() const -> pg_detail::unique_fd {
    std::ifstream pid_file(data_dir() / "postmaster.pid");
    long pid = 0;
    if (!(pid_file >> pid) || pid <= 0) return {};
    return pg_detail::pidfd_open(static_cast<pid_t>(pid));
  }

  /// pg_ctl -w returns once postmaster.pid is gone, which the postmaster removes just before it
  /// exits; waiting for the exit itself makes "stopped" mean no process left.
  static void await_exit(const pg_detail::unique_fd& postmaster) {
    if (!postmaster) return;
    for (int sig : {0, SIGKILL}) {
      if (sig != 0) ::syscall(SYS_pidfd_send_signal, postmaster.get(), sig, nullptr, 0);
      pollfd fd{postmaster.get(), POLLIN, 0};
      int rc;
      while ((rc = ::poll(&fd, 1, 30'000)) < 0 && errno == EINTR) {
      }
      if (rc != 0) return;
    }
  }

  void stop_immediately() noexcept {
    try {
      pg_detail::unique_fd postmaster = postmaster_pidfd();
      if (!postmaster) return;
      try {
        run_server_command({(bindir_ / "pg_ctl").string(), "stop", "-D", data_dir().string(), "-m",
                            "immediate", "-w", "-t", "60"});
      } catch (const std::exception&) {
        // await_exit kills it if pg_ctl could not stop it.
      }
      await_exit(postmaster);
    } catch (...) {
      // Destructor path: nothing useful to do with an error here.
    }
    running_ = false;
  }

  void cleanup() noexcept {
    if (dir_.empty()) return;
    stop_immediately();
    std::error_code ec;
    std::filesystem::remove_all(dir_, ec);
  }

  [[nodiscard]] auto log_tail() const -> std::string {
    const std::string tail = pg_detail::file_tail(log_file());
    return tail.empty() ? std::string() : "\n--- tail of " + log_file().string() + " ---\n" + tail;
  }

  std::filesystem::path bindir_;
  std::filesystem::path psql_;
  std::optional<pg_detail::identity> who_;
  std::filesystem::path dir_;
  std::uint16_t port_ = 0;
  bool running_ = false;
};

}  // namespace service_test
