#include "address_policy.hpp"

#include <algorithm>
#include <array>
#include <charconv>
#include <cstdint>
#include <optional>
#include <utility>
#include <vector>

namespace asio = boost::asio;

namespace service {

namespace {

// An address as bytes (4 or 16), to compare prefixes of either family the same way.
struct address_bytes {
  std::array<unsigned char, 16> bytes{};
  unsigned bits = 0;
};

auto to_bytes(const asio::ip::address& a) -> address_bytes {
  address_bytes out;
  if (a.is_v4()) {
    const auto b = a.to_v4().to_bytes();
    std::copy(b.begin(), b.end(), out.bytes.begin());
    out.bits = 32;
  } else {
    out.bytes = a.to_v6().to_bytes();
    out.bits = 128;
  }
  return out;
}

auto prefix_matches(const address_bytes& net, unsigned prefix, const address_bytes& a) -> bool {
  if (net.bits != a.bits || prefix > net.bits) return false;
  for (unsigned i = 0; i < prefix / 8; ++i) {
    if (net.bytes[i] != a.bytes[i]) return false;
  }
  if (const unsigned rest = prefix % 8; rest != 0) {
    const auto mask = static_cast<unsigned char>(0xff << (8 - rest));
    if ((net.bytes[prefix / 8] & mask) != (a.bytes[prefix / 8] & mask)) return false;
  }
  return true;
}

struct special_range {
  const char* network;
  std::string_view kind;
};

// First match wins, so a narrower range comes before the range that holds it. IANA's special-
// purpose registries (RFC 6890 and successors), minus the ranges that are meant to be reachable.
constexpr std::array<special_range, 17> v4_ranges = {{
    {"0.0.0.0/8", "unspecified"},  // "this network": 0.0.0.0 reaches the local host on Linux
    {"10.0.0.0/8", "private"},
    {"100.64.0.0/10", "carrier-grade NAT"},
    {"127.0.0.0/8", "loopback"},
    {"169.254.169.254/32", "cloud metadata"},
    {"169.254.0.0/16", "link-local"},
    {"172.16.0.0/12", "private"},
    {"192.0.0.0/24", "reserved"},
    {"192.0.2.0/24", "reserved"},    // documentation
    {"192.88.99.0/24", "reserved"},  // 6to4 relays, deprecated
    {"192.168.0.0/16", "private"},
    {"198.18.0.0/15", "reserved"},  // benchmarking
    {"198.51.100.0/24", "reserved"},
    {"203.0.113.0/24", "reserved"},
    {"224.0.0.0/4", "multicast"},
    {"255.255.255.255/32", "broadcast"},
    {"240.0.0.0/4", "reserved"},
}};

constexpr std::array<special_range, 10> v6_ranges = {{
    {"::/128", "unspecified"},
    {"::1/128", "loopback"},
    {"fe80::/10", "link-local"},
    {"fec0::/10", "private"},  // site-local, deprecated but routable inside a site
    {"fc00::/7", "private"},   // unique local, also AWS's fd00:ec2::254 metadata address
    {"ff00::/8", "multicast"},
    {"2001:db8::/32", "reserved"},  // documentation
    {"2001::/23", "reserved"},      // IETF protocol assignments, Teredo
    {"2002::/16", "reserved"},      // 6to4: reaches an IPv4 address through a relay
    {"3fff::/20", "reserved"},      // documentation
}};

auto parse_or_die(const char* text) -> ip_network {
  return parse_ip_network(text).value();
}

auto classify(const auto& ranges, const asio::ip::address& a) -> std::string_view {
  // Parsed once: the tables are constants.
  static const auto networks = [&] {
    std::vector<std::pair<ip_network, std::string_view>> out;
    for (const auto& r : ranges) out.emplace_back(parse_or_die(r.network), r.kind);
    return out;
  }();
  for (const auto& [net, kind] : networks) {
    if (contains(net, a)) return kind;
  }
  return {};
}

// The IPv4 address an IPv6 address reaches, for IPv4-mapped and NAT64 (well-known prefix) forms.
auto carried_v4(const asio::ip::address_v6& a) -> std::optional<asio::ip::address_v4> {
  if (a.is_v4_mapped()) return asio::ip::make_address_v4(asio::ip::v4_mapped, a);
  const auto b = a.to_bytes();
  static constexpr std::array<unsigned char, 12> nat64 = {0, 0x64, 0xff, 0x9b};
  if (std::equal(nat64.begin(), nat64.end(), b.begin())) {
    return asio::ip::address_v4({b[12], b[13], b[14], b[15]});
  }
  return std::nullopt;
}

}  // namespace

auto parse_ip_network(std::string_view text) -> std::optional<ip_network> {
  const auto slash = text.find('/');
  boost::system::error_code ec;
  const auto base = asio::ip::make_address(std::string(text.substr(0, slash)), ec);
  if (ec || (base.is_v6() && base.to_v6().scope_id() != 0)) return std::nullopt;
  ip_network net{base, base.is_v4() ? 32u : 128u};
  if (slash != std::string_view::npos) {
    const auto digits = text.substr(slash + 1);
    unsigned prefix = 0;
    const auto [end, perr] = std::from_chars(digits.data(), digits.data() + digits.size(), prefix);
    if (digits.empty() || perr != std::errc{} || end != digits.data() + digits.size() ||
        prefix > net.prefix) {
      return std::nullopt;
    }
    net.prefix = prefix;
  }
  // Host bits must be zero: every address in the network must share the base's first bits
  // and the base must be the network's first address.
  const auto bytes = to_bytes(base);
  for (unsigned bit = net.prefix; bit < bytes.bits; ++bit) {
    if ((bytes.bytes[bit / 8] >> (7 - bit % 8)) & 1) return std::nullopt;
  }
  return net;
}

auto contains(const ip_network& net, const asio::ip::address& a) -> bool {
  return prefix_matches(to_bytes(net.base), net.prefix, to_bytes(a));
}

auto non_public_kind(const asio::ip::address& a) -> std::string_view {
  if (a.is_v4()) return classify(v4_ranges, a);
  const auto v6 = a.to_v6();
  if (const auto v4 = carried_v4(v6)) {
    if (const auto kind = classify(v4_ranges, *v4); !kind.empty()) return kind;
    return {};
  }
  if (const auto kind = classify(v6_ranges, a); !kind.empty()) return kind;
  // Global unicast is 2000::/3; the rest is unassigned or special (IPv4-compatible ::a.b.c.d).
  if ((v6.to_bytes()[0] & 0xe0) != 0x20) return "reserved";
  return {};
}

auto address_policy::check(const asio::ip::address& a) const -> std::string {
  if (allow_all_) return {};
  const auto kind = non_public_kind(a);
  if (kind.empty()) return {};
  std::optional<asio::ip::address_v4> v4;
  if (a.is_v6()) v4 = carried_v4(a.to_v6());
  for (const auto& net : allowed_) {
    if (contains(net, a) || (v4 && contains(net, *v4))) return {};
  }
  const char* article = kind == "unspecified" ? "an" : "a";
  return "refused: " + a.to_string() + " is " + article + " " + std::string(kind) +
         " address; see --webhook-allow-network";
}

}  // namespace service
