// procpool - carrying a task's exception from a worker to the parent.
#pragma once

#include <sys/types.h>
#include <cstdint>
#include <exception>
#include <string>

#include "procpool/detail/codec.hpp"

namespace procpool::detail {

/// What crosses the wire for a thrown exception. Rebuilt in the parent; untrusted there.
struct exception_envelope {
  std::string type_name;  // mangled (typeid(E).name()); demangled for display
  std::string what;
  std::int32_t code = 0;  // system_error only
  std::string category;   // system_error only

  template <class Archive>
  void serialize(Archive& ar) {
    ar(type_name, what, code, category);
  }
};

/// Worker side, inside a catch(...): describes the exception in flight.
auto describe_current_exception() -> exception_envelope;

/// Parent side: the exception to deliver for an envelope.
auto rebuild_exception(const exception_envelope& e, const std::string& function, pid_t pid)
    -> std::exception_ptr;

auto demangle(const char* mangled) -> std::string;

}  // namespace procpool::detail
