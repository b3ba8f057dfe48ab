// procpool - error types.
#include "procpool/error.hpp"

#include <csignal>
#include <cstring>
#include <string>

namespace procpool {
namespace {

auto describe_remote(const std::string& type, const std::string& message,
                     const std::string& function, pid_t pid) -> std::string {
  std::string s = "remote exception " + type;
  if (!message.empty()) s += ": " + message;
  s += " (in " + function + ", worker pid " + std::to_string(pid) + ")";
  return s;
}

auto describe_crash(pid_t pid, int sig, int code, const std::string& function,
                    const std::string& detail, const std::string& tail) -> std::string {
  std::string s = "worker pid " + std::to_string(pid);
  if (sig != 0) {
    const char* name = sigabbrev_np(sig);
    s += " killed by signal " + std::to_string(sig) +
         (name ? std::string(" (SIG") + name + ")" : "");
  } else {
    s += " exited with status " + std::to_string(code);
  }
  s += " while running " + function;
  if (!detail.empty()) s += ": " + detail;
  if (!tail.empty()) {
    // The last few lines are usually the explanation (an assertion, a sanitizer report's summary).
    constexpr int shown = 10;
    std::size_t start = tail.size() - 1;  // skip the final newline
    int lines = 0;
    while (start > 0 && !(tail[start - 1] == '\n' && ++lines == shown)) --start;
    s += "; last output:\n" + tail.substr(start);
    if (s.back() == '\n') s.pop_back();
  }
  return s;
}

}  // namespace

remote_error::remote_error(std::string type_name, std::string message, std::string function,
                           pid_t pid)
    : error(describe_remote(type_name, message, function, pid), advice::do_not_retry),
      type_name_(std::move(type_name)),
      message_(std::move(message)),
      function_(std::move(function)),
      pid_(pid) {}

worker_crashed::worker_crashed(pid_t pid, int sig, int exit_code, std::string function,
                               std::string detail, std::string output_tail, bool out_of_memory)
    : error(describe_crash(pid, sig, exit_code, function, detail, output_tail),
            advice::retry_if_idempotent),
      pid_(pid),
      signal_(sig),
      exit_code_(exit_code),
      function_(std::move(function)),
      detail_(std::move(detail)),
      output_tail_(std::move(output_tail)),
      out_of_memory_(out_of_memory) {}

}  // namespace procpool
