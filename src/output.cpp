// procpool - the default destination of worker output.
#include "procpool/output.hpp"

#include <unistd.h>

#include <cerrno>
#include <string>

namespace procpool {

void write_to_stderr(const output_line& line) {
  std::string s = "[worker " + std::to_string(line.worker) + " pid " + std::to_string(line.pid);
  if (!line.function.empty()) {
    s += ' ';
    s += line.function;
  }
  s += "] ";
  s += line.text;
  s += '\n';
  // One write per line, so that lines from several pools or threads do not interleave.
  const char* p = s.data();
  std::size_t left = s.size();
  while (left > 0) {
    const ssize_t n = ::write(STDERR_FILENO, p, left);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return;
    p += n;
    left -= static_cast<std::size_t>(n);
  }
}

}  // namespace procpool
