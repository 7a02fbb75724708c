#include <gtest/gtest.h>

#include <cstdlib>
#include <string>

#include "vavae/common/runtime.h"

int main(int argc, char** argv) {
  ::testing::InitGoogleTest(&argc, argv);
  vavae::configure_threads(0);
  const char* device = std::getenv("VAVAE_TEST_DEVICE");
  if (device && std::string(device) == "cuda") {
    // The fixtures hold float32 results; TF32 (PyTorch's default for cuDNN convolutions) rounds
    // operands to 10-bit mantissas, 1e-3 relative, far outside their tolerances.
    at::globalContext().setAllowTF32CuDNN(false);
    at::globalContext().setAllowTF32CuBLAS(false);
  }
  return RUN_ALL_TESTS();
}
