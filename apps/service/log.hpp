// procpool-service - log lines on stderr, each tagged with the instance that wrote it, so the
// logs of many instances can be read together.
#pragma once

#include <cstdarg>
#include <cstdio>
#include <string>

namespace service {

/// The tag of every log line: the instance id, set once at start-up before any thread starts.
inline auto log_tag() -> std::string& {
  static std::string tag = "procpool-service";
  return tag;
}

/// printf-style; writes "[<instance id>] <message>\n" to stderr in one call.
[[gnu::format(printf, 1, 2)]] inline void log(const char* format, ...) {
  char text[2048];
  va_list args;
  va_start(args, format);
  std::vsnprintf(text, sizeof text, format, args);
  va_end(args);
  std::fprintf(stderr, "[%s] %s\n", log_tag().c_str(), text);
}

}  // namespace service
