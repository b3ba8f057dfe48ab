// procpool - await CPU-heavy, crash-prone or non-thread-safe work in worker processes from
// Boost.Asio. Convenience header: includes every public header.
#pragma once

#include "procpool/error.hpp"
#include "procpool/exceptions.hpp"
#include "procpool/init.hpp"
#include "procpool/output.hpp"
#include "procpool/pool_options.hpp"
#include "procpool/pool_stats.hpp"
#include "procpool/process_pool.hpp"
#include "procpool/progress.hpp"
#include "procpool/shared_bytes.hpp"
#include "procpool/task_options.hpp"
#include "procpool/to_thread.hpp"
#include "procpool/transfer.hpp"
#include "procpool/wait_for.hpp"
