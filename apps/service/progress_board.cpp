#include "progress_board.hpp"

#include <boost/json/object.hpp>
#include <boost/json/serialize.hpp>

#include "job.hpp"

namespace service {

namespace json = boost::json;

namespace {

// Replaces every byte sequence that is not UTF-8 with U+FFFD, so the JSON text stays valid.
auto valid_utf8(std::string_view in) -> std::string {
  std::string out;
  out.reserve(in.size());
  for (std::size_t i = 0; i < in.size();) {
    const auto c = static_cast<unsigned char>(in[i]);
    std::size_t n = c < 0x80 ? 1 : (c >> 5) == 6 ? 2 : (c >> 4) == 14 ? 3 : (c >> 3) == 30 ? 4 : 0;
    bool ok = n != 0 && i + n <= in.size() && !(n == 2 && c < 0xC2);
    for (std::size_t k = 1; ok && k < n; ++k) {
      ok = (static_cast<unsigned char>(in[i + k]) & 0xC0) == 0x80;
    }
    if (ok && n == 3) {
      const auto c1 = static_cast<unsigned char>(in[i + 1]);
      ok = !(c == 0xE0 && c1 < 0xA0) && !(c == 0xED && c1 >= 0xA0);  // overlong, surrogates
    }
    if (ok && n == 4) {
      const auto c1 = static_cast<unsigned char>(in[i + 1]);
      ok = c <= 0xF4 && !(c == 0xF0 && c1 < 0x90) && !(c == 0xF4 && c1 >= 0x90);
    }
    if (ok) {
      out.append(in.substr(i, n));
      i += n;
    } else {
      out += "\xEF\xBF\xBD";
      ++i;
    }
  }
  return out;
}

}  // namespace

auto to_json(const job_progress& p) -> json::value {
  return json::object{{"done", p.done},
                      {"total", p.total},
                      {"message", valid_utf8(p.message)},
                      {"updated_at", to_json_timestamp(p.updated_ms)}};
}

progress_board::progress_board(const boost::asio::any_io_executor& ex, event_hub& hub,
                               std::chrono::milliseconds interval)
    : hub_(hub), interval_(interval), flush_(ex) {}

void progress_board::report(std::int64_t id, const procpool::progress& p) {
  entry& e = jobs_[id];
  e.latest = {p.done, p.total, p.message, now_ms()};
  const auto now = std::chrono::steady_clock::now();
  if (now - e.published >= interval_) {
    publish(id, e, now);
  } else {
    e.unpublished = true;
    flush_later();
  }
}

void progress_board::forget(std::int64_t id) {
  jobs_.erase(id);
}

auto progress_board::latest(std::int64_t id) const -> const job_progress* {
  const auto it = jobs_.find(id);
  return it == jobs_.end() ? nullptr : &it->second.latest;
}

void progress_board::publish(std::int64_t id, entry& e, std::chrono::steady_clock::time_point now) {
  e.published = now;
  e.unpublished = false;
  if (hub_.clients() == 0) return;
  json::object data = to_json(e.latest).as_object();
  data.emplace("id", id);
  hub_.publish_unsequenced("event: progress\ndata: " + json::serialize(data) + "\n\n");
}

void progress_board::flush_later() {
  if (flush_pending_) return;
  flush_pending_ = true;
  flush_.expires_after(interval_);
  flush_.async_wait([this](boost::system::error_code ec) {
    flush_pending_ = false;
    if (ec) return;
    const auto now = std::chrono::steady_clock::now();
    bool waiting = false;
    for (auto& [id, e] : jobs_) {
      if (!e.unpublished) continue;
      if (now - e.published >= interval_) {
        publish(id, e, now);
      } else {
        waiting = true;
      }
    }
    if (waiting) flush_later();
  });
}

}  // namespace service
