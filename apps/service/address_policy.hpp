// procpool-service - which addresses a webhook may connect to (SSRF protection).
#pragma once

#include <boost/asio/ip/address.hpp>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace service {

/// An IP network in CIDR form (`10.1.0.0/16`, `fd00::/8`, `192.0.2.7` as a /32).
struct ip_network {
  boost::asio::ip::address base;
  unsigned prefix = 0;
};

/// The network, or nullopt if `text` is not an address with an optional /prefix. Host bits set
/// below the prefix (`10.1.2.3/8`) are refused: they usually mean a typo.
[[nodiscard]] auto parse_ip_network(std::string_view text) -> std::optional<ip_network>;
[[nodiscard]] auto contains(const ip_network& net, const boost::asio::ip::address& a) -> bool;

/// Why `a` is not a public unicast address — "loopback", "private", "link-local", "cloud
/// metadata", "carrier-grade NAT", "unspecified", "multicast", "broadcast", "reserved" — or ""
/// if it is one. IPv4-mapped (::ffff:a.b.c.d) and NAT64 (64:ff9b::a.b.c.d) IPv6 addresses are
/// judged by the IPv4 address they carry: they reach it.
[[nodiscard]] auto non_public_kind(const boost::asio::ip::address& a) -> std::string_view;

/// Where webhooks may go. By default only public unicast addresses: a notify_url is chosen by
/// whoever submits a job, and must not make the service reach into its own network (the
/// database, a cloud metadata endpoint, admin ports on localhost).
class address_policy {
 public:
  address_policy() = default;
  address_policy(bool allow_all, std::vector<ip_network> allowed)
      : allow_all_(allow_all), allowed_(std::move(allowed)) {}

  /// "" if a webhook may connect to `a`, else why not, for the job's notification_error:
  /// "refused: 127.0.0.1 is a loopback address; see --webhook-allow-network".
  [[nodiscard]] auto check(const boost::asio::ip::address& a) const -> std::string;

 private:
  bool allow_all_ = false;
  std::vector<ip_network> allowed_;
};

}  // namespace service
