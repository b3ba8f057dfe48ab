// libFuzzer target: arbitrary bytes as an HTTP client could send them to procpool-service, through
// the path every request takes before it reaches the database or the pool: Beast's request parser
// with the service's limits, the router (apps/service/request_reading.cpp), and for POST /jobs the
// body's JSON and each built-in task's own input check; for GET /jobs the query. Whatever the
// bytes, the service must neither crash, hang nor allocate without bound: a request is routed, or
// refused with a 4xx reason (bad_request). Run with scripts/fuzz.sh.
#include <boost/asio/buffer.hpp>
#include <boost/beast/http/parser.hpp>
#include <boost/beast/http/string_body.hpp>
#include <cstddef>
#include <cstdint>
#include <string_view>

#include "request_reading.hpp"
#include "tasks.hpp"

namespace {

namespace http = boost::beast::http;

auto builtin_tasks() -> const service::task_registry& {
  static const service::task_registry tasks = [] {
    service::task_registry r;
    service::add_builtin_tasks(r);
    return r;
  }();
  return tasks;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  // The server's defaults (apps/service/config.hpp): 8 KiB of header, 1 MiB of body.
  http::request_parser<http::string_body> parser;
  parser.header_limit(8 * 1024);
  parser.body_limit(1 << 20);
  parser.eager(true);
  boost::system::error_code ec;
  parser.put(boost::asio::buffer(data, size), ec);
  if (ec || !parser.is_done()) return 0;  // the server answers 400, or waits for more bytes
  const auto& req = parser.get();
  const service::routed r = service::route_request(req.method(), req.target());
  try {
    if (r.to == service::endpoint::post_job) {
      const service::job j = service::read_submission(
          req.body(), builtin_tasks(), {.default_timeout_ms = 60'000, .max_timeout_ms = 3'600'000});
      // Accepted: a known task, an input its own check took, bounded numbers.
      if (builtin_tasks().find(j.task) == nullptr || j.timeout_ms < 1) __builtin_trap();
    } else if (r.to == service::endpoint::list_jobs) {
      const service::list_query q = service::read_list_query(r.query);
      if (q.limit < 1 || q.limit > 1000 || q.task.size() > 256) __builtin_trap();
    } else if (r.to == service::endpoint::method_not_allowed && r.allow == nullptr) {
      __builtin_trap();
    }
  } catch (const service::bad_request&) {
    // A 400 with a reason: what bad input must get.
  }
  return 0;
}
