// A task's exception comes back with its type.
#include "procpool/exceptions.hpp"

#include <future>
#include <ios>
#include <new>
#include <stdexcept>
#include <system_error>
#include <typeinfo>

#include "procpool/process_pool.hpp"
#include "support/pool_fixture.hpp"

namespace procpool::test {

struct quota_exceeded : std::runtime_error {
  using std::runtime_error::runtime_error;
};
struct weird_error : std::exception {
  [[nodiscard]] auto what() const noexcept -> const char* override { return "something weird"; }
};

}  // namespace procpool::test

PROCPOOL_REGISTER_EXCEPTION(procpool::test::quota_exceeded);

namespace procpool::test {
namespace {

auto throw_std(int which) -> int {
  switch (which) {
    case 0:
      throw std::logic_error("logic");
    case 1:
      throw std::invalid_argument("bad argument");
    case 2:
      throw std::domain_error("domain");
    case 3:
      throw std::length_error("length");
    case 4:
      throw std::out_of_range("index 7 out of range");
    case 5:
      throw std::runtime_error("runtime");
    case 6:
      throw std::range_error("range");
    case 7:
      throw std::overflow_error("overflow");
    case 8:
      throw std::underflow_error("underflow");
    default:
      return which;
  }
}

using RemoteException = PoolTest;

TEST_F(RemoteException, OutOfRangeIsCaughtAsOutOfRange) {
  process_pool pool{io_.get_executor(), {.workers = 1}};
  try {
    run([&]() -> asio::awaitable<int> { co_return co_await pool.submit(throw_std, 4); });
    FAIL() << "expected std::out_of_range";
  } catch (const std::out_of_range& e) {
    EXPECT_STREQ(e.what(), "index 7 out of range");
  }
}

TEST_F(RemoteException, EveryStandardLogicAndRuntimeErrorKeepsItsExactTypeAndText) {
  process_pool pool{io_.get_executor(), {.workers = 2}};
  const std::type_info* expected[] = {
      &typeid(std::logic_error),  &typeid(std::invalid_argument), &typeid(std::domain_error),
      &typeid(std::length_error), &typeid(std::out_of_range),     &typeid(std::runtime_error),
      &typeid(std::range_error),  &typeid(std::overflow_error),   &typeid(std::underflow_error)};
  const char* texts[] = {"logic",   "bad argument", "domain",   "length",   "index 7 out of range",
                         "runtime", "range",        "overflow", "underflow"};
  for (int i = 0; i < 9; ++i) {
    auto f = pool.async_submit(throw_std, i, asio::use_future);
    try {
      get(f);
      ADD_FAILURE() << "case " << i << " did not throw";
    } catch (const std::exception& e) {
      EXPECT_EQ(typeid(e), *expected[i]) << "case " << i;
      EXPECT_STREQ(e.what(), texts[i]);
    }
  }
}

auto throw_bad_alloc(int) -> int {
  throw std::bad_alloc();
}

TEST_F(RemoteException, BadAllocIsRethrownAsBadAlloc) {
  process_pool pool{io_.get_executor(), {.workers = 1}};
  EXPECT_THROW(get(pool.async_submit(throw_bad_alloc, 0, asio::use_future)), std::bad_alloc);
}

auto throw_system_error(int code) -> int {
  throw std::system_error(code, std::generic_category(), "opening /data/input");
}
auto throw_system_error_plain(int code) -> int {
  throw std::system_error(std::error_code(code, std::system_category()));
}

TEST_F(RemoteException, SystemErrorKeepsItsCodeCategoryAndText) {
  process_pool pool{io_.get_executor(), {.workers = 1}};
  try {
    get(pool.async_submit(throw_system_error, EACCES, asio::use_future));
    FAIL() << "expected std::system_error";
  } catch (const std::system_error& e) {
    EXPECT_EQ(e.code(), std::error_code(EACCES, std::generic_category()));
    EXPECT_EQ(e.code(), std::errc::permission_denied);
    EXPECT_EQ(std::string(e.what()),
              std::system_error(EACCES, std::generic_category(), "opening /data/input").what());
  }
  try {
    get(pool.async_submit(throw_system_error_plain, ENOENT, asio::use_future));
    FAIL() << "expected std::system_error";
  } catch (const std::system_error& e) {
    EXPECT_EQ(e.code(), std::error_code(ENOENT, std::system_category()));
  }
}

auto throw_quota(int) -> int {
  throw quota_exceeded("quota of 10 jobs exceeded");
}

TEST_F(RemoteException, RegisteredUserExceptionComesBackAsItself) {
  process_pool pool{io_.get_executor(), {.workers = 1}};
  try {
    get(pool.async_submit(throw_quota, 0, asio::use_future));
    FAIL() << "expected quota_exceeded";
  } catch (const quota_exceeded& e) {
    EXPECT_STREQ(e.what(), "quota of 10 jobs exceeded");
  }
}

auto throw_weird(int) -> int {
  throw weird_error();
}
auto throw_int(int) -> int {
  throw 42;
}

TEST_F(RemoteException, UnknownTypeBecomesRemoteErrorWithTypeTextFunctionAndPid) {
  process_pool pool{io_.get_executor(), {.workers = 1}};
  const int pid =
      get(pool.async_submit([]() { return static_cast<int>(::getpid()); }, asio::use_future));
  try {
    get(pool.async_submit(throw_weird, 0, asio::use_future));
    FAIL() << "expected remote_error";
  } catch (const remote_error& e) {
    EXPECT_EQ(e.type_name(), "procpool::test::weird_error");
    EXPECT_EQ(e.message(), "something weird");
    EXPECT_NE(e.function().find("throw_weird"), std::string::npos) << e.function();
    EXPECT_EQ(e.pid(), pid);
    EXPECT_EQ(e.advice(), advice::do_not_retry);
  }
  try {
    get(pool.async_submit(throw_int, 0, asio::use_future));
    FAIL() << "expected remote_error";
  } catch (const remote_error& e) {
    EXPECT_EQ(e.type_name(), "int");
  }
}

TEST_F(RemoteException, AThrowingTaskLeavesTheWorkerServing) {
  process_pool pool{io_.get_executor(), {.workers = 1}};
  const int before =
      get(pool.async_submit([]() { return static_cast<int>(::getpid()); }, asio::use_future));
  EXPECT_THROW(get(pool.async_submit(throw_std, 1, asio::use_future)), std::invalid_argument);
  const int after =
      get(pool.async_submit([]() { return static_cast<int>(::getpid()); }, asio::use_future));
  EXPECT_EQ(before, after);
  EXPECT_EQ(pool.stats().failed, 1U);
}

}  // namespace
}  // namespace procpool::test
