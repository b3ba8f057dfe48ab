// process_pool::map: a unary function over a range, chunked into tasks, results in order.
#include <csignal>
#include <cstdlib>
#include <list>
#include <stdexcept>
#include <string>
#include <vector>

#include "procpool/process_pool.hpp"
#include "support/pool_fixture.hpp"
#include "support/tasks.hpp"

namespace procpool::test {
namespace {

using Map = PoolTest;

auto fails_on_5000(int x) -> long {
  if (x == 5000) throw std::invalid_argument("item 5000 is bad");
  return static_cast<long>(x) * 2;
}

auto crashes_on_7(int x) -> int {
  if (x == 7) std::abort();
  return x;
}

auto shout(const std::string& s) -> std::string {
  return s + "!";
}

TEST_F(Map, ResultsComeBackInOrderAcrossChunks) {
  process_pool pool{io_.get_executor(), {.workers = 2}};
  std::vector<int> items(10'000);
  for (int i = 0; i < 10'000; ++i) items[static_cast<std::size_t>(i)] = i;
  const auto squares = run(pool.map(square, items, 128));
  ASSERT_EQ(squares.size(), items.size());
  for (int i = 0; i < 10'000; ++i) EXPECT_EQ(squares[static_cast<std::size_t>(i)], i * i);
  EXPECT_EQ(pool.stats().completed, (10'000U + 127) / 128) << "one task per chunk";
}

TEST_F(Map, AnyForwardRangeAndAnyTransferableItemType) {
  process_pool pool{io_.get_executor(), {.workers = 2}};
  const std::list<std::string> words{"a", "bb", "ccc"};
  EXPECT_EQ(run(pool.map(shout, words, 2)), (std::vector<std::string>{"a!", "bb!", "ccc!"}));
  EXPECT_TRUE(run(pool.map(shout, std::vector<std::string>{}, 2)).empty());
  EXPECT_EQ(run(pool.map(square, std::vector<int>{3}, 0)), std::vector<int>{9}) << "chunk 0 is 1";
}

TEST_F(Map, AThrowingItemFailsTheMapWithItsOwnException) {
  process_pool pool{io_.get_executor(), {.workers = 2}};
  std::vector<int> items(10'000);
  for (int i = 0; i < 10'000; ++i) items[static_cast<std::size_t>(i)] = i;
  try {
    run(pool.map(fails_on_5000, items, 100));
    FAIL() << "expected std::invalid_argument";
  } catch (const std::invalid_argument& e) {
    EXPECT_STREQ(e.what(), "item 5000 is bad");
  }
  EXPECT_EQ(get(pool.async_submit(square, 4, asio::use_future)), 16);
}

TEST_F(Map, ACrashFailsItsChunkAndThePoolGoesOn) {
  process_pool pool{io_.get_executor(), {.workers = 2, .output = [](const output_line&) {}}};
  std::vector<int> items(20);
  for (int i = 0; i < 20; ++i) items[static_cast<std::size_t>(i)] = i;
  try {
    run(pool.map(crashes_on_7, items, 5));
    FAIL() << "expected worker_crashed";
  } catch (const worker_crashed& e) {
    EXPECT_EQ(e.signal(), SIGABRT);
  }
  EXPECT_EQ(run(pool.map(square, std::vector<int>{1, 2, 3}, 1)), (std::vector<int>{1, 4, 9}));
}

}  // namespace
}  // namespace procpool::test
