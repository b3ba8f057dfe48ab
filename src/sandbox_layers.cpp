// procpool - the worker sandbox's layers (see sandbox_layers.hpp).
#include "sandbox_layers.hpp"

#include <fcntl.h>
#include <grp.h>
#include <linux/landlock.h>
#include <sched.h>
#include <seccomp.h>
#include <sys/ioctl.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cerrno>
#include <csignal>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <initializer_list>

namespace procpool::detail {

namespace {

auto failed(const char* step, int error) -> std::string {
  return std::string(step) + ": " + std::strerror(error);
}

auto write_file(const char* path, const std::string& text) -> bool {
  const int fd = ::open(path, O_WRONLY | O_CLOEXEC);
  if (fd < 0) return false;
  const bool ok = ::write(fd, text.data(), text.size()) == static_cast<ssize_t>(text.size());
  ::close(fd);
  return ok;
}

// Calls every normal C++ program makes, whatever it computes.
constexpr std::initializer_list<int> computation_calls = {
    // memory
    SCMP_SYS(brk), SCMP_SYS(mmap), SCMP_SYS(munmap), SCMP_SYS(mremap), SCMP_SYS(madvise),
    SCMP_SYS(mprotect),
    // threads and synchronisation (clone is allowed below for threads only)
    SCMP_SYS(futex), SCMP_SYS(set_robust_list), SCMP_SYS(get_robust_list), SCMP_SYS(rseq),
    SCMP_SYS(set_tid_address), SCMP_SYS(exit), SCMP_SYS(exit_group), SCMP_SYS(gettid),
    SCMP_SYS(sched_yield), SCMP_SYS(sched_getaffinity), SCMP_SYS(membarrier), SCMP_SYS(getcpu),
    // time (the vDSO serves most; these are its fallbacks and the CPU-time clocks)
    SCMP_SYS(clock_gettime), SCMP_SYS(clock_getres), SCMP_SYS(gettimeofday), SCMP_SYS(time),
    SCMP_SYS(clock_nanosleep), SCMP_SYS(nanosleep),
    // signals to itself (rt_sigaction and kill are restricted below)
    SCMP_SYS(rt_sigreturn), SCMP_SYS(restart_syscall), SCMP_SYS(rt_sigprocmask),
    SCMP_SYS(sigaltstack),
    // waiting for a signal or a while (a task may park a thread, or wait to be killed)
    SCMP_SYS(pause), SCMP_SYS(rt_sigsuspend), SCMP_SYS(rt_sigtimedwait), SCMP_SYS(rt_sigpending),
    // I/O on descriptors it already has: its channel to the pool, its stdout and stderr
    SCMP_SYS(read), SCMP_SYS(readv), SCMP_SYS(write), SCMP_SYS(writev), SCMP_SYS(pread64),
    SCMP_SYS(pwrite64), SCMP_SYS(lseek), SCMP_SYS(close), SCMP_SYS(poll), SCMP_SYS(ppoll),
    SCMP_SYS(recvmsg), SCMP_SYS(sendmsg), SCMP_SYS(recvfrom), SCMP_SYS(sendto), SCMP_SYS(pipe2),
    SCMP_SYS(dup), SCMP_SYS(dup3), SCMP_SYS(fstat),
    // about itself
    SCMP_SYS(getpid), SCMP_SYS(getppid), SCMP_SYS(getuid), SCMP_SYS(geteuid), SCMP_SYS(getgid),
    SCMP_SYS(getegid), SCMP_SYS(getrusage), SCMP_SYS(getrandom), SCMP_SYS(uname)};

// With a read-only filesystem view (Landlock decides which paths).
constexpr std::initializer_list<int> read_only_file_calls = {
    SCMP_SYS(newfstatat), SCMP_SYS(statx),     SCMP_SYS(getdents64), SCMP_SYS(readlink),
    SCMP_SYS(readlinkat), SCMP_SYS(faccessat), SCMP_SYS(faccessat2), SCMP_SYS(access),
    SCMP_SYS(fadvise64),  SCMP_SYS(getcwd)};

// The line a worker writes to stderr as the filter stops it; the pool names the call from it.
constexpr char trap_line_prefix[] = "procpool: seccomp refused system call ";

// SIGSYS from the filter (SECCOMP_RET_TRAP): the call was not made. Says which one on stderr,
// then dies by SIGSYS, as a kill would have (SA_RESETHAND made the action the default again, and
// SA_NODEFER lets the signal through at once). Only async-signal-safe calls, all allowed by the
// filter: write to stderr, getpid, gettid, tgkill to itself. A task cannot replace this handler
// (rt_sigaction on SIGSYS is refused); one that rewrote its code would only skip the dying: the
// call itself is never made either way.
void on_forbidden_call(int, siginfo_t* info, void*) {
  char line[sizeof trap_line_prefix + 16];
  std::memcpy(line, trap_line_prefix, sizeof trap_line_prefix - 1);
  std::size_t n = sizeof trap_line_prefix - 1;
  char digits[12];
  std::size_t d = 0;
  auto call = static_cast<unsigned>(info->si_syscall);
  do {
    digits[d++] = static_cast<char>('0' + call % 10);
    call /= 10;
  } while (call != 0 && d < sizeof digits);
  while (d > 0) line[n++] = digits[--d];
  line[n++] = '\n';
  (void)!::write(2, line, n);
  ::syscall(SYS_tgkill, ::getpid(), ::syscall(SYS_gettid), SIGSYS);
}

}  // namespace

auto forbidden_call_in(std::string_view stderr_tail) -> std::string {
  const auto at = stderr_tail.rfind(trap_line_prefix);
  if (at == std::string_view::npos) return {};
  std::string_view rest = stderr_tail.substr(at + sizeof trap_line_prefix - 1);
  int number = 0;
  std::size_t digits = 0;
  // Whatever a worker wrote is only text: at most four digits are read as a number.
  while (digits < rest.size() && digits < 4 && rest[digits] >= '0' && rest[digits] <= '9') {
    number = number * 10 + (rest[digits] - '0');
    ++digits;
  }
  if (digits == 0) return {};
  char* name = ::seccomp_syscall_resolve_num_arch(SCMP_ARCH_NATIVE, number);
  std::string named = name != nullptr ? std::string(name) + " (" + std::to_string(number) + ")"
                                      : "number " + std::to_string(number);
  std::free(name);
  return named;
}

auto set_no_new_privs() -> std::string {
  if (::prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0) return failed("PR_SET_NO_NEW_PRIVS", errno);
  return {};
}

auto load_compute_filter(seccomp_violation on_violation, bool read_only_open) -> std::string {
  const bool kill = on_violation == seccomp_violation::kill_process;
  if (kill) {
    struct sigaction trap {};
    trap.sa_sigaction = on_forbidden_call;
    trap.sa_flags = SA_SIGINFO | SA_NODEFER | SA_RESETHAND;
    if (::sigaction(SIGSYS, &trap, nullptr) != 0) return failed("sigaction(SIGSYS)", errno);
  }
  scmp_filter_ctx ctx = ::seccomp_init(kill ? SCMP_ACT_TRAP : SCMP_ACT_ERRNO(EPERM));
  if (ctx == nullptr) return "seccomp_init: failed";
  struct release {
    scmp_filter_ctx c;
    ~release() { ::seccomp_release(c); }
  } guard{ctx};
  // Every thread of the worker, not only this one: one started by a sanitizer's runtime, or any
  // other, would otherwise run unfiltered (and glibc's setuid, which changes every thread's ids,
  // would find them disagreeing and abort).
  int rc = ::seccomp_attr_set(ctx, SCMP_FLTATR_CTL_TSYNC, 1);
  auto add = [&](std::uint32_t action, int call, unsigned count,
                 const scmp_arg_cmp* args = nullptr) {
    if (rc == 0) rc = ::seccomp_rule_add_array(ctx, action, call, count, args);
  };
  for (int call : computation_calls) add(SCMP_ACT_ALLOW, call, 0);
  // Threads, not processes: clone must carry CLONE_THREAD. glibc tries clone3 first, whose flags
  // live in memory a filter cannot read: "not implemented" makes it fall back to clone.
  const scmp_arg_cmp thread_only[] = {SCMP_A0(SCMP_CMP_MASKED_EQ, CLONE_THREAD, CLONE_THREAD)};
  add(SCMP_ACT_ALLOW, SCMP_SYS(clone), 1, thread_only);
  add(SCMP_ACT_ERRNO(ENOSYS), SCMP_SYS(clone3), 0);
  // Signals to itself only (abort and raise use tgkill on their own pid).
  const auto self = static_cast<scmp_datum_t>(::getpid());
  const scmp_arg_cmp own_pid[] = {SCMP_A0(SCMP_CMP_EQ, self)};
  add(SCMP_ACT_ALLOW, SCMP_SYS(tgkill), 1, own_pid);
  add(SCMP_ACT_ALLOW, SCMP_SYS(kill), 1, own_pid);
  // Any handler but one for SIGSYS: a task may not hide the filter's verdicts from itself.
  const scmp_arg_cmp not_sigsys[] = {SCMP_A0(SCMP_CMP_NE, SIGSYS)};
  add(SCMP_ACT_ALLOW, SCMP_SYS(rt_sigaction), 1, not_sigsys);
  for (scmp_datum_t command : {F_GETFD, F_SETFD, F_GETFL, F_SETFL, F_DUPFD_CLOEXEC}) {
    const scmp_arg_cmp fcntl_command[] = {SCMP_A1(SCMP_CMP_EQ, command)};
    add(SCMP_ACT_ALLOW, SCMP_SYS(fcntl), 1, fcntl_command);
  }
  const scmp_arg_cmp fionread[] = {SCMP_A1(SCMP_CMP_EQ, FIONREAD)};
  add(SCMP_ACT_ALLOW, SCMP_SYS(ioctl), 1, fionread);
  const scmp_arg_cmp own_limits[] = {SCMP_A0(SCMP_CMP_EQ, 0)};
  add(SCMP_ACT_ALLOW, SCMP_SYS(prlimit64), 1, own_limits);
  for (scmp_datum_t option : {PR_SET_NAME, PR_GET_NAME}) {
    const scmp_arg_cmp prctl_option[] = {SCMP_A0(SCMP_CMP_EQ, option)};
    add(SCMP_ACT_ALLOW, SCMP_SYS(prctl), 1, prctl_option);
  }
  if (read_only_open) {
    for (int call : read_only_file_calls) add(SCMP_ACT_ALLOW, call, 0);
    const scmp_arg_cmp read_only[] = {SCMP_A2(
        SCMP_CMP_MASKED_EQ, O_WRONLY | O_RDWR | O_CREAT | O_TRUNC | O_APPEND | O_TMPFILE, 0)};
    add(SCMP_ACT_ALLOW, SCMP_SYS(openat), 1, read_only);
  } else {
    // fstat through newfstatat(fd, "", AT_EMPTY_PATH), as glibc 2.36 makes it; no path lookups.
    const scmp_arg_cmp empty_path[] = {SCMP_A3(SCMP_CMP_EQ, AT_EMPTY_PATH)};
    add(SCMP_ACT_ALLOW, SCMP_SYS(newfstatat), 1, empty_path);
  }
  if (rc != 0) return failed("seccomp_rule_add", -rc);
  if (rc = ::seccomp_load(ctx); rc != 0) return failed("seccomp_load", -rc);
  return {};
}

auto unshare_network() -> std::string {
  if (::geteuid() == 0) {
    if (::unshare(CLONE_NEWNET) != 0) return failed("unshare(CLONE_NEWNET)", errno);
    return {};
  }
  const uid_t uid = ::geteuid();
  const gid_t gid = ::getegid();
  if (::unshare(CLONE_NEWUSER | CLONE_NEWNET) != 0) {
    return failed("unshare(CLONE_NEWUSER | CLONE_NEWNET)", errno);
  }
  // The same ids inside as outside; setgroups must be denied before an unprivileged gid_map.
  const std::string u = std::to_string(uid), g = std::to_string(gid);
  if (!write_file("/proc/self/uid_map", u + " " + u + " 1\n")) return failed("uid_map", errno);
  if (!write_file("/proc/self/setgroups", "deny")) return failed("setgroups", errno);
  if (!write_file("/proc/self/gid_map", g + " " + g + " 1\n")) return failed("gid_map", errno);
  return {};
}

auto drop_privileges(uid_t uid, gid_t gid) -> std::string {
  if (::geteuid() != 0) return {};
  if (::setgroups(0, nullptr) != 0) return failed("setgroups", errno);
  if (::setresgid(gid, gid, gid) != 0) return failed("setresgid", errno);
  if (::setresuid(uid, uid, uid) != 0) return failed("setresuid", errno);
  uid_t r = 0, e = 0, s = 0;
  if (::getresuid(&r, &e, &s) != 0 || r != uid || e != uid || s != uid) {
    return "setresuid: the ids did not change";
  }
  return {};
}

auto landlock_abi() -> int {
  const long abi =
      ::syscall(SYS_landlock_create_ruleset, nullptr, 0, LANDLOCK_CREATE_RULESET_VERSION);
  return abi < 0 ? 0 : static_cast<int>(abi);
}

auto restrict_filesystem(const std::vector<std::string>& readable) -> std::string {
  const int abi = landlock_abi();
  if (abi == 0) return "landlock: not available on this kernel";
  // Every access right the kernel knows is handled (so denied unless a rule grants it).
  std::uint64_t handled = (LANDLOCK_ACCESS_FS_MAKE_SYM << 1) - 1;  // ABI 1: bits 0..12
  if (abi >= 2) handled |= std::uint64_t{1} << 13;                 // REFER
  if (abi >= 3) handled |= std::uint64_t{1} << 14;                 // TRUNCATE
  const landlock_ruleset_attr attr{handled};
  const int ruleset =
      static_cast<int>(::syscall(SYS_landlock_create_ruleset, &attr, sizeof attr, 0));
  if (ruleset < 0) return failed("landlock_create_ruleset", errno);
  struct closer {
    int fd;
    ~closer() { ::close(fd); }
  } ruleset_guard{ruleset};
  for (const auto& path : readable) {
    const int fd = ::open(path.c_str(), O_PATH | O_CLOEXEC);
    if (fd < 0) return failed(("landlock: open " + path).c_str(), errno);
    const closer path_guard{fd};
    struct stat st {};
    if (::fstat(fd, &st) != 0) return failed(("landlock: stat " + path).c_str(), errno);
    // Directory rights on a file are refused by the kernel.
    const std::uint64_t rights = S_ISDIR(st.st_mode)
                                     ? LANDLOCK_ACCESS_FS_READ_FILE | LANDLOCK_ACCESS_FS_READ_DIR
                                     : LANDLOCK_ACCESS_FS_READ_FILE;
    const landlock_path_beneath_attr rule{rights, fd};
    if (::syscall(SYS_landlock_add_rule, ruleset, LANDLOCK_RULE_PATH_BENEATH, &rule, 0) != 0) {
      return failed(("landlock_add_rule " + path).c_str(), errno);
    }
  }
  if (::syscall(SYS_landlock_restrict_self, ruleset, 0) != 0) {
    return failed("landlock_restrict_self", errno);
  }
  return {};
}

}  // namespace procpool::detail
