// procpool - why a worker died, in words its task's caller can act on. Pure (no I/O, no pool
// state), so every combination is tested directly (test/diagnose_exit_test.cpp).
#pragma once

#include <chrono>
#include <cstdint>
#include <string>

namespace procpool::detail {

/// What the pool knows when a worker's exit is reported.
struct exit_facts {
  int wait_status = 0;               // from waitpid, as the fork server reported it
  std::uint32_t memory_verdict = 0;  // one of the zygote_memory_* values (internal.hpp)
  std::string kill_reason;           // why the pool killed it (a protocol violation...), if it did
  bool hung_up_alive = false;        // its channel ended while the process still ran
  std::chrono::seconds cpu_time_limit{0};  // pool_options::cpu_time_limit
  std::uint64_t memory_max_bytes = 0;      // pool_options::memory_max_bytes
  std::string stderr_tail;                 // its last stderr lines (names a filtered call)
};

struct exit_diagnosis {
  int signal = 0;      // the signal that ended it; 0 if it exited
  int exit_code = -1;  // its exit status; -1 if a signal ended it
  std::string reason;  // for worker_crashed's message; empty when the status says it all
  bool out_of_memory = false;
};

auto diagnose_exit(const exit_facts& facts) -> exit_diagnosis;

}  // namespace procpool::detail
