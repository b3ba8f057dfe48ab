// procpool - why a worker died (see diagnose_exit.hpp).
#include "diagnose_exit.hpp"

#include <signal.h>
#include <sys/wait.h>

#include "internal.hpp"
#include "sandbox_layers.hpp"

namespace procpool::detail {

auto diagnose_exit(const exit_facts& f) -> exit_diagnosis {
  exit_diagnosis d;
  d.signal = WIFSIGNALED(f.wait_status) ? WTERMSIG(f.wait_status) : 0;
  d.exit_code = WIFEXITED(f.wait_status) ? WEXITSTATUS(f.wait_status) : -1;
  d.reason = f.kill_reason;
  if (d.signal == SIGXCPU && f.cpu_time_limit.count() > 0 && d.reason.empty()) {
    d.reason = "exceeded pool_options::cpu_time_limit of " +
               std::to_string(f.cpu_time_limit.count()) + " s of CPU time";
  }
  if (d.signal == SIGSYS && d.reason.empty()) {
    const std::string call = forbidden_call_in(f.stderr_tail);
    d.reason = "stopped by pool_options::sandbox's system call filter (seccomp)";
    if (!call.empty()) d.reason += ": it called " + call + ", which the sandbox forbids";
  }
  // Only when our kill is what ended it; a worker that was dying anyway reports its own cause.
  if (d.signal == SIGKILL && f.hung_up_alive && d.reason.empty()) {
    d.reason = "closed its channel to the pool";
  }
  if (f.memory_verdict == zygote_memory_cgroup_oom) {
    d.out_of_memory = true;
    d.reason = "killed by the kernel's OOM killer: it exceeded pool_options::memory_max_bytes of " +
               std::to_string(f.memory_max_bytes) + " bytes";
  } else if (f.memory_verdict == zygote_memory_system_oom && d.reason.empty()) {
    d.out_of_memory = true;
    d.reason =
        "SIGKILL while the kernel's OOM killer was acting: most likely killed for lack of memory";
  }
  return d;
}

}  // namespace procpool::detail
