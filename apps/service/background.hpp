// procpool-service - completion handlers for work the service starts and does not wait for.
#pragma once

#include "log.hpp"

#include <cstdio>
#include <exception>
#include <utility>

namespace service {

/// A co_spawn completion handler: an exception that escaped the coroutine is written to stderr
/// as "<what>: <message>" (there is no caller to give it to), then `then()` runs either way.
template <class Then>
auto report_failure(const char* what, Then then) {
  return [what, then = std::move(then)](std::exception_ptr ep) mutable {
    if (ep) {
      try {
        std::rethrow_exception(ep);
      } catch (const std::exception& e) {
        log("%s: %s", what, e.what());
      } catch (...) {
        log("%s: unknown exception", what);
      }
    }
    then();
  };
}

}  // namespace service
