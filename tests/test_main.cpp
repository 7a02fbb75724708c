#include <gtest/gtest.h>

#include <ftw.h>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <iostream>
#include <string>

#include "fixtures.h"
#include "vavae/common/runtime.h"

namespace {

// Deletes a directory tree, children before parents, links not followed. Not
// std::filesystem::remove_all: PyTorch's wheels export the copy of it they link statically
// (pytorch/pytorch#133437), which a test binary linked against them calls, and which jumps to
// an address of 0.
void remove_tree(const std::string& root) {
  nftw(root.c_str(), [](const char* path, const struct stat*, int, struct FTW*) { std::remove(path); return 0; }, 16,
       FTW_DEPTH | FTW_PHYS);
}

// Removes the process's scratch root at the end: the tests write checkpoints, runs and latents
// there, and hundreds of test processes would otherwise fill the disk.
class ScratchCleanup : public ::testing::Environment {
 public:
  void TearDown() override {
    const std::string root = vavae::test::scratch_root();
    if (!std::filesystem::exists(root)) return;
    if (::testing::UnitTest::GetInstance()->failed_test_count() > 0) {
      std::cerr << "scratch files of the failed run kept in " << root << "\n";
      return;
    }
    remove_tree(root);
  }
};

}  // namespace

int main(int argc, char** argv) {
  ::testing::InitGoogleTest(&argc, argv);
  ::testing::AddGlobalTestEnvironment(new ScratchCleanup);
  vavae::configure_threads(0);
  const char* device = std::getenv("VAVAE_TEST_DEVICE");
  if (device && std::string(device) == "cuda") {
    // The fixtures hold float32 results; TF32 (PyTorch's default for cuDNN convolutions) rounds
    // operands to 10-bit mantissas, 1e-3 relative, far outside their tolerances.
    at::globalContext().setAllowTF32CuDNN(false);
    at::globalContext().setAllowTF32CuBLAS(false);
    // Runs that the tests compare (a resumed run with an uninterrupted one, two schedules' first
    // steps) must take the same convolution algorithms: cuDNN's fastest ones sum in any order.
    at::globalContext().setDeterministicCuDNN(true);
    at::globalContext().setBenchmarkCuDNN(false);
  }
  return RUN_ALL_TESTS();
}
