// Test support: functions the tests run in worker processes, including ones that misbehave.
#pragma once

#include <unistd.h>

#include <csignal>
#include <cstdlib>
#include <ctime>
#include <stdexcept>
#include <string>

namespace procpool::test {

inline auto square(int x) -> int {
  return x * x;
}

inline auto add(long a, long b) -> long {
  return a + b;
}

inline auto my_pid() -> int {
  return static_cast<int>(::getpid());
}

/// Burns about `ms` milliseconds of this process's CPU time.
inline auto burn_cpu(int ms) -> int {
  timespec start{}, now{};
  ::clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &start);
  volatile long spin = 0;
  do {
    for (int i = 0; i < 100'000; ++i) spin = spin + i;
    ::clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &now);
  } while ((now.tv_sec - start.tv_sec) * 1000 + (now.tv_nsec - start.tv_nsec) / 1'000'000 < ms);
  return ms;
}

/// Busy for a while, then answers: a task that is certainly still running when its sibling crashes.
inline auto busy_sum(int n) -> long {
  volatile long s = 0;
  for (int i = 0; i < n; ++i) s = s + i;
  return s;
}

/// Never returns; burns a core until killed.
inline auto spin_forever(int) -> int {
  volatile unsigned long n = 0;
  for (;;) n = n + 1;
}

inline auto crash_segv(int) -> int {
  std::raise(SIGSEGV);
  return 0;
}

inline auto crash_abort(int) -> int {
  std::abort();
}

inline auto crash_kill_self(int) -> int {
  std::raise(SIGKILL);
  return 0;
}

inline auto crash_exit(int code) -> int {
  ::_exit(code);
}

}  // namespace procpool::test
