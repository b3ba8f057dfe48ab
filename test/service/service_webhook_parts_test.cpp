// The webhook's defences piece by piece, in-process: the address classifier and policy (every
// special range, its edges, IPv4-mapped IPv6), the signature, and the URL parser.
#include <gtest/gtest.h>

#include <string>

#include "address_policy.hpp"
#include "http_client.hpp"
#include "webhook_signature.hpp"

namespace {

using boost::asio::ip::make_address;
using service::non_public_kind;

auto kind(const char* address) -> std::string {
  return std::string(non_public_kind(make_address(address)));
}

TEST(WebhookAddresses, EveryNonPublicIpv4RangeIsNamedAndItsNeighboursArePublic) {
  const std::vector<std::pair<const char*, const char*>> cases = {
      {"0.0.0.0", "unspecified"},
      {"0.255.255.255", "unspecified"},
      {"1.0.0.0", ""},
      {"9.255.255.255", ""},
      {"10.0.0.0", "private"},
      {"10.255.255.255", "private"},
      {"11.0.0.0", ""},
      {"100.63.255.255", ""},
      {"100.64.0.0", "carrier-grade NAT"},
      {"100.127.255.255", "carrier-grade NAT"},
      {"100.128.0.0", ""},
      {"126.255.255.255", ""},
      {"127.0.0.1", "loopback"},
      {"127.255.255.254", "loopback"},
      {"128.0.0.0", ""},
      {"169.253.255.255", ""},
      {"169.254.0.1", "link-local"},
      {"169.254.169.254", "cloud metadata"},
      {"169.254.255.255", "link-local"},
      {"169.255.0.0", ""},
      {"172.15.255.255", ""},
      {"172.16.0.0", "private"},
      {"172.31.255.255", "private"},
      {"172.32.0.0", ""},
      {"192.0.0.1", "reserved"},
      {"192.0.2.1", "reserved"},
      {"192.88.99.1", "reserved"},
      {"192.167.255.255", ""},
      {"192.168.0.0", "private"},
      {"192.168.255.255", "private"},
      {"192.169.0.0", ""},
      {"198.18.0.1", "reserved"},
      {"198.19.255.255", "reserved"},
      {"198.20.0.0", ""},
      {"198.51.100.1", "reserved"},
      {"203.0.113.1", "reserved"},
      {"223.255.255.255", ""},
      {"224.0.0.1", "multicast"},
      {"239.255.255.255", "multicast"},
      {"240.0.0.1", "reserved"},
      {"255.255.255.254", "reserved"},
      {"255.255.255.255", "broadcast"},
      {"8.8.8.8", ""},
      {"93.184.216.34", ""},
  };
  for (const auto& [address, expected] : cases) EXPECT_EQ(kind(address), expected) << address;
}

TEST(WebhookAddresses, Ipv6RangesAndIpv4InsideIpv6) {
  const std::vector<std::pair<const char*, const char*>> cases = {
      {"::", "unspecified"},
      {"::1", "loopback"},
      {"fe80::1", "link-local"},
      {"febf:ffff::1", "link-local"},
      {"fec0::1", "private"},
      {"fc00::1", "private"},
      {"fdff:ffff::1", "private"},
      {"fd00:ec2::254", "private"},  // AWS's IPv6 metadata address
      {"ff02::1", "multicast"},
      {"2001:db8::1", "reserved"},
      {"2002:7f00:1::1", "reserved"},
      {"::7f00:1", "reserved"},  // IPv4-compatible, deprecated
      {"100::1", "reserved"},
      {"2606:4700::1111", ""},
      {"2a00:1450:4001::1", ""},
      // IPv4-mapped and NAT64 forms reach the IPv4 address: judged as it.
      {"::ffff:127.0.0.1", "loopback"},
      {"::ffff:10.1.2.3", "private"},
      {"::ffff:169.254.169.254", "cloud metadata"},
      {"::ffff:172.15.255.255", ""},
      {"::ffff:172.16.0.0", "private"},
      {"::ffff:8.8.8.8", ""},
      {"64:ff9b::127.0.0.1", "loopback"},
      {"64:ff9b::8.8.8.8", ""},
  };
  for (const auto& [address, expected] : cases) EXPECT_EQ(kind(address), expected) << address;
}

TEST(WebhookAddresses, NetworksParseOnlyInCidrFormWithoutHostBits) {
  EXPECT_TRUE(service::parse_ip_network("10.1.0.0/16"));
  EXPECT_TRUE(service::parse_ip_network("127.0.0.1"));  // a /32
  EXPECT_TRUE(service::parse_ip_network("fd00::/8"));
  EXPECT_TRUE(service::parse_ip_network("0.0.0.0/0"));
  EXPECT_FALSE(service::parse_ip_network("10.1.2.3/8"));  // host bits: a typo, most likely
  EXPECT_FALSE(service::parse_ip_network("10.0.0.0/33"));
  EXPECT_FALSE(service::parse_ip_network("10.0.0.0/"));
  EXPECT_FALSE(service::parse_ip_network("10.0.0.0/8x"));
  EXPECT_FALSE(service::parse_ip_network("example.com/8"));
  EXPECT_FALSE(service::parse_ip_network(""));
  const auto net = service::parse_ip_network("172.16.0.0/12").value();
  EXPECT_TRUE(contains(net, make_address("172.31.255.255")));
  EXPECT_FALSE(contains(net, make_address("172.32.0.0")));
  EXPECT_FALSE(contains(net, make_address("::ffff:172.16.0.1")));  // the policy unmaps
}

TEST(WebhookAddresses, ThePolicyRefusesWithAReasonUnlessAllowed) {
  const service::address_policy strict;
  EXPECT_EQ(strict.check(make_address("127.0.0.1")),
            "refused: 127.0.0.1 is a loopback address; see --webhook-allow-network");
  EXPECT_EQ(strict.check(make_address("0.0.0.0")),
            "refused: 0.0.0.0 is an unspecified address; see --webhook-allow-network");
  EXPECT_EQ(strict.check(make_address("8.8.8.8")), "");
  const service::address_policy some(false, {service::parse_ip_network("10.1.0.0/16").value(),
                                             service::parse_ip_network("127.0.0.2").value()});
  EXPECT_EQ(some.check(make_address("10.1.200.3")), "");
  EXPECT_EQ(some.check(make_address("::ffff:10.1.200.3")), "");  // the same address
  EXPECT_NE(some.check(make_address("10.2.0.1")), "");
  EXPECT_EQ(some.check(make_address("127.0.0.2")), "");
  EXPECT_NE(some.check(make_address("127.0.0.1")), "");
  EXPECT_EQ(some.check(make_address("8.8.8.8")), "");
  const service::address_policy allow_all(true, {});
  EXPECT_EQ(allow_all.check(make_address("169.254.169.254")), "");
}

TEST(WebhookSignature, IsHmacSha256OverTimeDotBody) {
  // RFC 4231, test case 2.
  EXPECT_EQ(service::hmac_sha256_hex("Jefe", "what do ya want for nothing?"),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843");
  EXPECT_EQ(service::webhook_signature("Jefe", 1700000000, R"({"id":1})"),
            "t=1700000000,v1=" + service::hmac_sha256_hex("Jefe", R"(1700000000.{"id":1})"));
}

TEST(WebhookUrls, HttpAndHttpsWithNamesIpv4AndBracketedIpv6) {
  const auto https = service::parse_http_url("https://hooks.example.com/in?x=1").value();
  EXPECT_TRUE(https.tls);
  EXPECT_EQ(https.host, "hooks.example.com");
  EXPECT_EQ(https.port, "443");
  EXPECT_EQ(https.target, "/in?x=1");
  const auto v6 = service::parse_http_url("http://[2001:db8::1]:8080").value();
  EXPECT_FALSE(v6.tls);
  EXPECT_EQ(v6.host, "2001:db8::1");
  EXPECT_EQ(v6.port, "8080");
  EXPECT_EQ(v6.target, "/");
  EXPECT_FALSE(service::parse_http_url("ftp://example.com/"));
  EXPECT_FALSE(service::parse_http_url("http://user@example.com/"));
  EXPECT_FALSE(service::parse_http_url("http://[::1/"));
  EXPECT_FALSE(service::parse_http_url("http://[fe80::1%eth0]/"));
  EXPECT_FALSE(service::parse_http_url("http://[::1]x/"));
  EXPECT_FALSE(service::parse_http_url("http://example.com:99999/"));
  EXPECT_FALSE(service::parse_http_url("https://"));
}

}  // namespace
