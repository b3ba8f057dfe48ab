// procpool - a worker's stdout and stderr (see output_forwarder.hpp).
#include "output_forwarder.hpp"

#include <poll.h>
#include <unistd.h>

#include <array>
#include <cerrno>

#include "internal.hpp"

namespace procpool::detail {
namespace {

// A line longer than this is passed on in pieces, so a worker cannot make the pool buffer without
// bound by never writing a newline.
constexpr std::size_t max_line_bytes = 64 * 1024;

// Names kept by an emitter before it forgets them all (a program submits few distinct functions).
constexpr std::size_t max_cached_names = 1024;

}  // namespace

worker_output::worker_output(const boost::asio::any_io_executor& ex, unique_fd out, unique_fd err,
                             tail_policy policy)
    : out_(ex), err_(ex), policy_(policy) {
  out_.pipe.assign(out.release());
  err_.pipe.assign(err.release());
}

auto worker_output::read(output_stream s, const output_label& label,
                         std::vector<collected_line>& lines) -> bool {
  stream_state& p = at(s);
  if (!p.pipe.is_open()) return false;
  char buf[16 * 1024];
  for (;;) {
    const ssize_t n = ::read(p.pipe.native_handle(), buf, sizeof buf);
    if (n > 0) {
      p.partial.append(buf, static_cast<std::size_t>(n));
      std::size_t start = 0;
      for (std::size_t nl; (nl = p.partial.find('\n', start)) != std::string::npos;
           start = nl + 1) {
        add_line(s, label, p.partial.substr(start, nl - start), lines);
      }
      p.partial.erase(0, start);
      while (p.partial.size() >= max_line_bytes) {
        add_line(s, label, p.partial.substr(0, max_line_bytes), lines);
        p.partial.erase(0, max_line_bytes);
      }
      continue;
    }
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && errno == EAGAIN) return true;
    close_stream(s, label,
                 lines);  // end of file (or an error): the rest is a last, unfinished line
    return false;
  }
}

void worker_output::collect(const output_label& label, std::vector<collected_line>& lines,
                            bool task_over, bool pipes_may_hold_bytes) {
  // One poll for both pipes rather than a read that usually finds nothing on each.
  std::array<pollfd, 2> ready{};
  ready[0] = {out_.pipe.is_open() ? out_.pipe.native_handle() : -1, POLLIN, 0};
  ready[1] = {err_.pipe.is_open() ? err_.pipe.native_handle() : -1, POLLIN, 0};
  if (pipes_may_hold_bytes && (ready[0].fd >= 0 || ready[1].fd >= 0)) {
    ::poll(ready.data(), ready.size(), 0);
  }
  for (auto s : {output_stream::out, output_stream::err}) {
    if (ready[s == output_stream::err ? 1 : 0].revents != 0) read(s, label, lines);
    if (auto& p = at(s); task_over && !p.partial.empty()) {
      add_line(s, label, std::exchange(p.partial, {}), lines);
    }
  }
}

void worker_output::close(const output_label& label, std::vector<collected_line>& lines) {
  close_stream(output_stream::out, label, lines);
  close_stream(output_stream::err, label, lines);
}

void worker_output::close_stream(output_stream s, const output_label& label,
                                 std::vector<collected_line>& lines) {
  stream_state& p = at(s);
  if (!p.partial.empty()) add_line(s, label, std::exchange(p.partial, {}), lines);
  boost::system::error_code ignored;
  p.pipe.close(ignored);
}

void worker_output::add_line(output_stream s, const output_label& label, std::string text,
                             std::vector<collected_line>& lines) {
  if (s == output_stream::err || policy_.include_stdout) {
    tail_.push_back(text);
    while (tail_.size() > policy_.lines) tail_.pop_front();
  }
  lines.push_back({label, s, std::move(text)});
}

auto worker_output::tail() const -> std::string {
  std::string s;
  for (const auto& l : tail_) s += l + '\n';
  return s;
}

auto output_emitter::name_of(const output_label& label) -> const std::string& {
  static const std::string none;
  if (label.function == 0) return none;
  if (names_.size() >= max_cached_names) names_.clear();
  auto [it, added] = names_.try_emplace({label.function, label.callable_type});
  if (added) it->second = function_name(label.function, label.callable_type);
  return it->second;
}

void output_emitter::emit(const std::vector<collected_line>& lines) {
  for (const auto& l : lines) {
    try {
      const output_line line{l.label.worker, l.label.pid, l.stream, name_of(l.label), l.text};
      if (sink_) {
        sink_(line);
      } else {
        write_to_stderr(line);
      }
    } catch (...) {
      // A failing sink must not break the pool; the line is dropped.
    }
  }
}

}  // namespace procpool::detail
