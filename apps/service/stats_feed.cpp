#include "stats_feed.hpp"

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/redirect_error.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/json/serialize.hpp>
#include <tuple>

#include "background.hpp"
#include "job.hpp"

namespace service {

namespace asio = boost::asio;
namespace json = boost::json;

stats_feed::stats_feed(asio::any_io_executor ex, database& db, procpool::process_pool& pool,
                       event_hub& hub, const change_feed& feed, std::string instance_id,
                       std::chrono::milliseconds interval)
    : ex_(std::move(ex)),
      db_(db),
      pool_(pool),
      hub_(hub),
      feed_(feed),
      instance_id_(std::move(instance_id)),
      interval_(interval),
      tick_(ex_) {}

auto stats_feed::snapshot() -> asio::awaitable<json::object> {
  const auto counts = co_await db_.read([](store& s) { return s.count_by_state(); });
  json::object jobs;
  for (std::size_t i = 0; i < counts.size(); ++i) {
    jobs[to_string(static_cast<job_state>(i))] = counts[i];
  }
  const auto p = pool_.stats();
  json::object pool{
      {"workers", p.workers},     {"busy", p.busy},           {"idle", p.idle},
      {"queued", p.queued},       {"completed", p.completed}, {"failed", p.failed},
      {"crashed", p.crashed},     {"cancelled", p.cancelled}, {"timed_out", p.timed_out},
      {"respawned", p.respawned}, {"recycled", p.recycled}};
  co_return json::object{{"instance", instance_id_},
                         {"at", to_json_timestamp(now_ms())},
                         {"jobs", std::move(jobs)},
                         {"pool", std::move(pool)}};
}

auto stats_feed::event() -> asio::awaitable<std::string> {
  co_return "event: stats\ndata: " + json::serialize(co_await snapshot()) + "\n\n";
}

void stats_feed::start() {
  asio::co_spawn(ex_, run(), report_failure("stats feed stopped", [] {}));
}

void stats_feed::stop() {
  stopping_ = true;
  tick_.cancel();
}

auto stats_feed::run() -> asio::awaitable<void> {
  // What the last snapshot saw: a new one is sent only when one of these moved.
  std::int64_t seen_changes = -1;
  std::size_t seen_clients = 0;
  std::tuple<std::size_t, std::size_t, std::size_t, std::uint64_t, std::uint64_t> seen_pool{};
  while (!stopping_) {
    tick_.expires_after(interval_);
    boost::system::error_code ec;
    co_await tick_.async_wait(asio::redirect_error(asio::use_awaitable, ec));
    if (stopping_) break;
    const std::size_t clients = hub_.clients();
    if (clients == 0) {
      seen_clients = 0;
      continue;
    }
    const auto p = pool_.stats();
    const auto pool_now = std::make_tuple(p.workers, p.busy, p.queued, p.crashed + p.timed_out,
                                          p.respawned + p.recycled);
    if (feed_.published_up_to() == seen_changes && clients <= seen_clients &&
        pool_now == seen_pool) {
      seen_clients = clients;
      continue;
    }
    seen_changes = feed_.published_up_to();
    seen_clients = clients;
    seen_pool = pool_now;
    try {
      hub_.publish_unsequenced(co_await event());
    } catch (const std::exception&) {
      // The database is away: the next tick tries again (the counts are a view, not a record).
      seen_changes = -1;
    }
  }
}

}  // namespace service
