// Test entry point: start procpool's fork server before GoogleTest (or any test) starts a thread.
#include <gtest/gtest.h>

#include "procpool/init.hpp"

int main(int argc, char** argv) {
  procpool::init();
  ::testing::InitGoogleTest(&argc, argv);
  return RUN_ALL_TESTS();
}
