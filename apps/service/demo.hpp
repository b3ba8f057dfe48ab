// procpool-service - `--demo`: drives the running service through its own HTTP API.
#pragma once

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/awaitable.hpp>
#include <cstdint>

namespace service {

/// Submits a mix of jobs (real work, a thrown exception, a crash, a timeout, a cancellation) to
/// the service at 127.0.0.1:`port` with webhooks to a receiver of its own, prints each
/// notification as it arrives, then the job list and a few metrics. Returns true if every job
/// ended as expected and every notification arrived.
auto run_demo(boost::asio::any_io_executor ex, std::uint16_t port) -> boost::asio::awaitable<bool>;

}  // namespace service
