#include "events.hpp"

#include <algorithm>
#include <boost/json/serialize.hpp>

namespace service {

auto event_hub::subscribe(const boost::asio::any_io_executor& ex)
    -> std::shared_ptr<event_subscriber> {
  auto s = std::make_shared<event_subscriber>(ex);
  subscribers_.push_back(s);
  return s;
}

void event_hub::unsubscribe(const std::shared_ptr<event_subscriber>& s) {
  std::erase(subscribers_, s);
}

auto format_event(const job_change& c) -> std::string {
  return "id: " + std::to_string(c.seq) +
         "\nevent: job\ndata: " + boost::json::serialize(to_json(c.after)) + "\n\n";
}

void event_hub::publish(const job_change& c) {
  if (subscribers_.empty()) return;
  queue(c.seq, format_event(c));
}

void event_hub::publish_unsequenced(const std::string& text) {
  queue(-1, text);
}

void event_hub::queue(std::int64_t seq, const std::string& text) {
  for (auto& s : subscribers_) {
    if (s->overflowed) continue;
    if (s->pending.size() >= max_backlog_) {
      s->overflowed = true;
      s->pending.clear();
    } else {
      s->pending.emplace_back(seq, text);
    }
    s->wake.cancel();
  }
}

void event_hub::close_all() {
  for (auto& s : subscribers_) {
    s->closed = true;
    s->wake.cancel();
  }
  subscribers_.clear();
}

}  // namespace service
