// procpool - naming the function a task runs, for error messages.
#include <dlfcn.h>

#include <cstdio>
#include <string>

#include "exception_codec.hpp"
#include "internal.hpp"

namespace procpool::detail {

auto function_name(std::uintptr_t function, const std::type_info* callable_type) -> std::string {
  if (callable_type != nullptr) return demangle(callable_type->name());
  Dl_info info{};
  if (::dladdr(reinterpret_cast<void*>(function), &info) != 0) {
    if (info.dli_sname != nullptr) return demangle(info.dli_sname);
    if (info.dli_fname != nullptr && info.dli_fbase != nullptr) {
      char offset[32];
      std::snprintf(offset, sizeof offset, "+0x%zx",
                    static_cast<std::size_t>(function - reinterpret_cast<std::uintptr_t>(info.dli_fbase)));
      std::string file = info.dli_fname;
      if (auto slash = file.rfind('/'); slash != std::string::npos) file.erase(0, slash + 1);
      return "function at " + file + offset;
    }
  }
  char raw[32];
  std::snprintf(raw, sizeof raw, "0x%zx", static_cast<std::size_t>(function));
  return std::string("function at ") + raw;
}

}  // namespace procpool::detail
