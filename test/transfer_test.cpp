// Which values cross the process boundary, and that they arrive intact.
#include "procpool/transfer.hpp"

#include <map>
#include <optional>
#include <string>
#include <tuple>
#include <unordered_map>
#include <vector>

#include "procpool/process_pool.hpp"
#include "support/pool_fixture.hpp"

namespace procpool::test {
namespace {

struct point {  // trivially copyable: crosses as its bytes, no code needed
  double x, y;
  int tag;
};

struct order {  // opts in through cereal's customization point
  std::string customer;
  std::vector<int> items;
  std::optional<std::string> note;
  template <class Archive>
  void serialize(Archive& ar) {
    ar(customer, items, note);
  }
};

enum class color { red, green, blue };

static_assert(transferable<int>);
static_assert(transferable<point>);
static_assert(transferable<order>);
static_assert(
    transferable<std::map<std::string, std::vector<std::optional<std::pair<int, double>>>>>);
static_assert(!transferable<int*>);
static_assert(!transferable<const char*>);

using Nested = std::map<std::string, std::vector<std::optional<std::pair<int, double>>>>;

auto echo_nested(const Nested& n) -> Nested {
  return n;
}
auto echo_tuple(std::tuple<int, std::string, std::unordered_map<int, std::string>> t) {
  return t;
}
auto move_point(point p, double dx) -> point {
  p.x += dx;
  return p;
}
auto summarize(const order& o) -> order {
  order r = o;
  r.items.push_back(static_cast<int>(o.items.size()));
  r.note = "seen " + o.customer;
  return r;
}
auto next_color(color c) -> color {
  return c == color::blue ? color::red : static_cast<color>(static_cast<int>(c) + 1);
}
auto greet(const std::string& name) -> std::string {
  return "hello, " + name;
}

using Transfer = PoolTest;

TEST_F(Transfer, NestedStandardContainersRoundTrip) {
  process_pool pool{io_.get_executor(), {.workers = 1}};
  Nested n{{"a", {std::nullopt, std::pair{1, 2.5}}}, {"", {}}, {"b", {std::pair{-3, 1e300}}}};
  EXPECT_EQ(get(pool.async_submit(echo_nested, n, asio::use_future)), n);
  std::tuple<int, std::string, std::unordered_map<int, std::string>> t{
      7, "seven", {{1, "one"}, {2, ""}}};
  EXPECT_EQ(get(pool.async_submit(echo_tuple, t, asio::use_future)), t);
}

TEST_F(Transfer, TriviallyCopyableStructsNeedNoCode) {
  process_pool pool{io_.get_executor(), {.workers = 1}};
  point p = get(pool.async_submit(move_point, point{1.0, 2.0, 9}, 0.5, asio::use_future));
  EXPECT_EQ(p.x, 1.5);
  EXPECT_EQ(p.y, 2.0);
  EXPECT_EQ(p.tag, 9);
}

TEST_F(Transfer, UserTypesOptInWithASerializeMember) {
  process_pool pool{io_.get_executor(), {.workers = 1}};
  order o = get(pool.async_submit(summarize, order{"ada", {3, 4}, std::nullopt}, asio::use_future));
  EXPECT_EQ(o.customer, "ada");
  EXPECT_EQ(o.items, (std::vector<int>{3, 4, 2}));
  EXPECT_EQ(o.note, "seen ada");
}

TEST_F(Transfer, EnumsAndConvertedArgumentsWork) {
  process_pool pool{io_.get_executor(), {.workers = 1}};
  EXPECT_EQ(get(pool.async_submit(next_color, color::green, asio::use_future)), color::blue);
  // A string literal is converted to the std::string the function takes, before submit returns.
  EXPECT_EQ(get(pool.async_submit(greet, "world", asio::use_future)), "hello, world");
}

TEST_F(Transfer, ArgumentsMayBeTemporariesThatDieBeforeTheTaskRuns) {
  process_pool pool{io_.get_executor(), {.workers = 1}};
  std::future<std::string> f;
  {
    std::string name(1000, 'x');
    f = pool.async_submit(greet, name, asio::use_future);
    name.assign(1000, 'y');
  }
  EXPECT_EQ(get(f), "hello, " + std::string(1000, 'x'));
}

TEST_F(Transfer, OversizedArgumentsAreRefusedWithSerializationError) {
  process_pool pool{io_.get_executor(), {.workers = 1, .max_message_bytes = 1024}};
  EXPECT_THROW(get(pool.async_submit(greet, std::string(4096, 'z'), asio::use_future)),
               serialization_error);
  EXPECT_EQ(get(pool.async_submit(greet, "ok", asio::use_future)), "hello, ok");
}

auto long_text(int n) -> std::string {
  return std::string(static_cast<std::size_t>(n), 'r');
}

TEST_F(Transfer, AnOversizedResultIsTreatedAsThatWorkersFault) {
  process_pool pool{io_.get_executor(), {.workers = 1, .max_message_bytes = 1024}};
  try {
    get(pool.async_submit(long_text, 4096, asio::use_future));
    FAIL() << "expected worker_crashed";
  } catch (const worker_crashed& e) {
    EXPECT_NE(e.detail().find("max_message_bytes"), std::string::npos) << e.what();
    EXPECT_TRUE(process_gone(e.pid()));
  }
  EXPECT_EQ(get(pool.async_submit(long_text, 10, asio::use_future)), "rrrrrrrrrr");
}

}  // namespace
}  // namespace procpool::test
