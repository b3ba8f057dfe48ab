// procpool - how a pool that is destroyed stops its workers, as data (as reproc's stop actions):
// each step acts, then waits up to its time for every worker to be reaped before the next one.
#pragma once

#include <array>
#include <chrono>

namespace procpool::detail {

enum class stop_action {
  // Tasks not started fail with pool_closed; running ones get SIGTERM; every channel is closed, so
  // idle workers read end-of-file and exit at once.
  terminate,
  kill,  // SIGKILL to every worker left
  // Close our side of the fork-server connection: the server kills and reaps whatever of ours is
  // still alive, then closes its side (end-of-stream means every worker is reaped).
  hang_up_fork_server,
};

struct stop_step {
  stop_action action;
  std::chrono::milliseconds wait;
};

/// destroy's escalation: terminate, pool_options::stop_grace, kill, 5 s, hang up, 5 s. Bounded: a
/// destructor never blocks indefinitely, even if the fork server itself hangs.
constexpr auto stop_sequence(std::chrono::milliseconds grace) -> std::array<stop_step, 3> {
  using namespace std::chrono_literals;
  return {{{stop_action::terminate, grace},
           {stop_action::kill, 5000ms},
           {stop_action::hang_up_fork_server, 5000ms}}};
}

}  // namespace procpool::detail
