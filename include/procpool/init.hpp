// procpool - the one call a program makes before it starts threads.
#pragma once

namespace procpool {

/// Starts procpool's fork server. Call it at the top of main(), before any thread exists (before
/// an asio::thread_pool, a logging thread, procpool::to_thread, ...). Workers are forked from this
/// server, which stays single-threaded, so forking them is safe whatever the rest of the program
/// does later. Workers see global state as it was when init() ran.
///
/// Idempotent. Throws procpool::init_required if the process already runs several threads, and
/// std::system_error if the server cannot be started. A program that never calls init() still
/// works while it is single-threaded: the first pool starts the server.
void init();

}  // namespace procpool
