// Which values cross the process boundary, and that they arrive intact.
#include "procpool/transfer.hpp"

#include <sys/mman.h>
#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <fstream>
#include <map>
#include <optional>
#include <string>
#include <tuple>
#include <unordered_map>
#include <vector>

#include "procpool/detail/codec.hpp"
#include "procpool/detail/wire.hpp"
#include "procpool/process_pool.hpp"
#include "procpool/shared_bytes.hpp"
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

// A checksum that notices any byte out of place.
auto checksum(const std::vector<std::byte>& data) -> std::pair<std::uint64_t, std::uint64_t> {
  std::uint64_t sum = 0;
  for (std::size_t i = 0; i < data.size(); ++i)
    sum = sum * 31 + static_cast<std::uint64_t>(data[i]) + i;
  return {data.size(), sum};
}

auto patterned(std::size_t size, unsigned seed) -> std::vector<std::byte> {
  std::vector<std::byte> v(size);
  for (std::size_t i = 0; i < size; ++i) v[i] = static_cast<std::byte>((i * seed) >> 3);
  return v;
}

TEST_F(Transfer, LargeArgumentsArriveIntactThroughTheWorkersSharedRegion) {
  process_pool pool{io_.get_executor(), {.workers = 1}};
  // Growing, shrinking and growing again: the region is replaced when too small, reused otherwise.
  for (std::size_t mib : {3, 1, 9, 2, 9}) {
    const auto data = patterned(mib << 20, static_cast<unsigned>(mib) * 7 + 1);
    EXPECT_EQ(get(pool.async_submit(checksum, data, asio::use_future)), checksum(data)) << mib;
  }
  const auto small = patterned(1000, 3);
  EXPECT_EQ(get(pool.async_submit(checksum, small, asio::use_future)), checksum(small));
}

// From inside a task with a large argument: finds the worker's shared region in /proc/self/maps
// and tries to make it writable. Returns 1 when the region was found and stayed read-only.
auto try_to_write_the_region(const std::vector<std::byte>&) -> int {
  std::ifstream maps("/proc/self/maps");
  for (std::string line; std::getline(maps, line);) {
    if (line.find("procpool-task-region") == std::string::npos) continue;
    unsigned long begin = 0, end = 0;
    if (std::sscanf(line.c_str(), "%lx-%lx", &begin, &end) != 2) return -1;
    void* p = reinterpret_cast<void*>(begin);
    if (::mprotect(p, end - begin, PROT_READ | PROT_WRITE) == 0) return 2;
    if (::mmap(p, end - begin, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_FIXED_NOREPLACE, -1, 0) !=
        MAP_FAILED)
      return 3;
    return 1;
  }
  return 0;
}

TEST_F(Transfer, AWorkerCannotMakeItsSharedRegionWritable) {
  process_pool pool{io_.get_executor(), {.workers = 1}};
  EXPECT_EQ(get(pool.async_submit(try_to_write_the_region, std::vector<std::byte>(2 << 20),
                                  asio::use_future)),
            1);
}

// A shared_bytes parameter: its checksum, and where its bytes are (1: in the read-only shared
// region, 2: elsewhere, i.e. the channel's receive buffer; 0: not found).
auto inspect_view(shared_bytes b, int tag) -> std::tuple<std::uint64_t, std::uint64_t, int, int> {
  std::uint64_t sum = 0;
  for (std::size_t i = 0; i < b.size(); ++i) sum = sum * 31 + static_cast<std::uint64_t>(b[i]) + i;
  int where = 0;
  const auto address = reinterpret_cast<unsigned long>(b.data());
  std::ifstream maps("/proc/self/maps");
  for (std::string line; std::getline(maps, line);) {
    unsigned long begin = 0, end = 0;
    if (std::sscanf(line.c_str(), "%lx-%lx", &begin, &end) != 2) continue;
    if (address < begin || address >= end) continue;
    where = line.find("procpool-task-region") != std::string::npos ? 1 : 2;
  }
  return {b.size(), sum, where, tag};
}

static_assert(transferable<shared_bytes>);
static_assert(
    !std::is_trivially_copyable_v<shared_bytes>);  // a struct holding one is not raw bytes

TEST_F(Transfer, ASharedBytesParameterReadsALargeTaskInPlaceInTheSharedRegion) {
  process_pool pool{io_.get_executor(), {.workers = 1}};
  for (std::size_t size : {std::size_t{3} << 20, std::size_t{1000}, std::size_t{0}}) {
    const auto data = patterned(size, 5);
    const auto [n, sum, where, tag] =
        get(pool.async_submit(inspect_view, data, 7, asio::use_future));
    EXPECT_EQ(n, size);
    EXPECT_EQ(sum, checksum(data).second);
    EXPECT_EQ(tag, 7);  // what follows the view decodes too
    if (size >= (std::size_t{1} << 20)) {
      EXPECT_EQ(where, 1) << "not read in place";
    }
  }
  // Any contiguous range of bytes or characters converts; it must live only until submit returns.
  std::string text = "seen in place";
  auto from_string = pool.async_submit(inspect_view, text, 1, asio::use_future);
  text.assign(text.size(), 'x');
  EXPECT_EQ(std::get<0>(get(from_string)), 13U);
  const std::vector<std::byte> as_vector(text.size(), std::byte{'x'});
  EXPECT_EQ(
      std::get<1>(get(pool.async_submit(inspect_view, shared_bytes(text), 2, asio::use_future))),
      checksum(as_vector).second);
}

auto views_in_a_result(shared_bytes b) -> std::vector<shared_bytes> {
  return {b, b};
}

TEST_F(Transfer, ASharedBytesInsideAResultIsRefusedNotADanglingView) {
  process_pool pool{io_.get_executor(), {.workers = 1}};
  const std::string text = "abc";
  EXPECT_THROW(get(pool.async_submit(views_in_a_result, text, asio::use_future)),
               serialization_error);
  EXPECT_EQ(shared_bytes("abc").size(), 3U);  // text without its terminating NUL
}

TEST(Decoding, ASharedBytesLengthClaimingMoreThanTheBytesLeftIsRefused) {
  detail::byte_buffer forged;
  detail::encode_into(forged, std::uint64_t{1} << 40);
  forged.resize(forged.size() + 3, std::byte{'a'});
  shared_bytes b;
  EXPECT_THROW(detail::decode_from(forged, b), serialization_error);
}

TEST(Decoding, ALengthClaimingMoreThanTheBytesLeftIsRefusedBeforeAllocating) {
  detail::byte_buffer forged;
  detail::encode_into(forged, std::uint64_t{1} << 40);  // "a string of 1 TiB follows"
  forged.resize(forged.size() + 3, std::byte{'a'});
  std::string s;
  try {
    detail::decode_from(forged, s);
    FAIL() << "expected serialization_error";
  } catch (const serialization_error& e) {
    EXPECT_NE(std::string(e.what()).find("a length of 1099511627776 with only 3 bytes left"),
              std::string::npos)
        << e.what();
  }
  std::vector<std::vector<int>> nested;
  EXPECT_THROW(detail::decode_from(forged, nested), serialization_error);
}

TEST(Decoding, AByteThatIsNeitherZeroNorOneIsRefusedAsABool) {
  const detail::byte_buffer forged{std::byte{17}};
  std::optional<int> value;  // an optional starts with a bool
  EXPECT_THROW(detail::decode_from(forged, value), serialization_error);
  bool flag = false;
  EXPECT_THROW(detail::decode_from(forged, flag), serialization_error);
}

// Writes, instead of returning, a well-formed result frame for the task it runs whose payload
// claims a 1 GiB string but holds 8 bytes; then exits once the pool closes its channel.
auto forge_huge_string_result(std::uint64_t task_id) -> std::string {
  detail::byte_buffer payload;
  detail::encode_into(payload, std::uint64_t{1} << 30);
  payload.resize(payload.size() + 8, std::byte{'x'});
  const detail::frame_header h =
      detail::make_frame_header(detail::frame_kind::result, task_id, payload.size());
  (void)!::write(3, &h, sizeof h);
  (void)!::write(3, payload.data(), payload.size());
  for (char c; ::read(3, &c, 1) > 0;) {
  }
  ::_exit(0);
}

TEST_F(Transfer, AResultClaimingMoreThanItHoldsFailsOnlyThatTaskWithSerializationError) {
  // Recycling after one task retires the forging worker before the next task can reach it.
  process_pool pool{io_.get_executor(), {.workers = 1, .max_tasks_per_worker = 1}};
  // Task ids start at 1 in a new pool; the forging task is the pool's first.
  try {
    get(pool.async_submit(forge_huge_string_result, std::uint64_t{1}, asio::use_future));
    FAIL() << "expected serialization_error";
  } catch (const serialization_error& e) {
    EXPECT_NE(std::string(e.what()).find("1073741824"), std::string::npos) << e.what();
  }
  EXPECT_EQ(get(pool.async_submit(long_text, 3, asio::use_future)), "rrr");
}

}  // namespace
}  // namespace procpool::test
