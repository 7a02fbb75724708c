#include <gtest/gtest.h>

#include "vavae/common/runtime.h"

int main(int argc, char** argv) {
  ::testing::InitGoogleTest(&argc, argv);
  vavae::configure_threads(0);
  return RUN_ALL_TESTS();
}
