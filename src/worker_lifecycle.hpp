// procpool - the life of one worker as the pool sees it: one phase, and every transition between
// phases written here and nowhere else. Pure, tested in test/worker_lifecycle_test.cpp.
//
//   forking ──forked──▶ forked ──greeted──▶ idle ◀──finished── busy
//      └────greeted──▶ greeted ──forked──────┘ └──assigned──────▲
//   idle ──retire──▶ retiring                  (its exit is expected)
//   forking, forked ──stop──▶ failed_start     (its exit counts against starting workers)
//   greeted, idle, busy, retiring ──stop──▶ stopping
//
// The fork server's "spawned" event (forked) and the worker's hello (greeted) travel on different
// descriptors, so either may come first. "stop" is the pool deciding the process must die: it broke
// the protocol, lost its channel, or its task was cancelled, timed out or abandoned at shutdown.
// The exit event itself is not a transition: it ends the worker in whatever phase it is in.
#pragma once

#include <cstdint>

namespace procpool::detail {

enum class worker_phase : std::uint8_t {
  forking,       // asked of the fork server; neither its pid nor its hello has come
  forked,        // its pid came; its hello has not
  greeted,       // its hello came before its pid
  idle,          // ready for a task
  busy,          // running a task
  retiring,      // its channel was shut so that it exits (recycled, or the pool is closing)
  stopping,      // the pool is killing it; its exit event will end it
  failed_start,  // killed before it ever said hello
};

enum class worker_event : std::uint8_t { forked, greeted, assigned, finished, retire, stop };

/// The phase after `event`; the same phase when the event means nothing there (a hello from a
/// worker being stopped, a second stop).
constexpr auto next_phase(worker_phase p, worker_event e) -> worker_phase {
  using P = worker_phase;
  using E = worker_event;
  switch (e) {
    case E::forked:
      if (p == P::forking) return P::forked;
      if (p == P::greeted) return P::idle;
      return p;
    case E::greeted:
      if (p == P::forking) return P::greeted;
      if (p == P::forked) return P::idle;
      return p;
    case E::assigned:
      return p == P::idle ? P::busy : p;
    case E::finished:
      return p == P::busy ? P::idle : p;
    case E::retire:
      return p == P::idle ? P::retiring : p;
    case E::stop:
      if (p == P::forking || p == P::forked) return P::failed_start;
      if (p == P::failed_start) return p;
      return P::stopping;
  }
  return p;
}

/// It sent a valid hello at some point (the frame check's "greeted").
constexpr auto has_greeted(worker_phase p) -> bool {
  return p != worker_phase::forking && p != worker_phase::forked && p != worker_phase::failed_start;
}

/// It will go on serving: not leaving, not being killed.
constexpr auto will_serve(worker_phase p) -> bool {
  return p != worker_phase::retiring && p != worker_phase::stopping &&
         p != worker_phase::failed_start;
}

/// Its death, if it comes now, means a worker failed to start.
constexpr auto dies_unstarted(worker_phase p) -> bool {
  return p == worker_phase::forking || p == worker_phase::forked || p == worker_phase::failed_start;
}

}  // namespace procpool::detail
