#pragma once
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>
#include <torch/torch.h>

#include <cstdlib>
#include <fstream>
#include <filesystem>
#include <string>
#include <unistd.h>

#include "test_paths.h"

#include "vavae/common/error.h"
#include "vavae/common/runtime.h"
#include "vavae/io/safetensors.h"
#include "vavae/nn/convolution.h"

namespace vavae::test {

// The fixture folder: $VAVAE_FIXTURES, else ../shared/fixtures beside the checkout.
inline std::string fixtures_dir() {
  const char* env = std::getenv("VAVAE_FIXTURES");
  return env && *env ? env : VAVAE_DEFAULT_FIXTURES;
}
inline std::string fixture(const std::string& relative) { return fixtures_dir() + "/" + relative; }

// Where the fixture-driven model tests run: $VAVAE_TEST_DEVICE (cpu | cuda), cpu when unset. A CUDA
// run compares against the same fixtures; test_main turns TF32 off so float32 tolerances hold.
inline std::string test_device_name() {
  const char* env = std::getenv("VAVAE_TEST_DEVICE");
  return env && *env ? env : "cpu";
}
inline torch::Device test_device() { return resolve_device(test_device_name()); }

// Whether bf16 convolutions and matmuls run on the test device (oneDNN's CPU bf16 kernels need
// AVX-512; every CUDA card we build for has them). The bf16 tests skip, saying why, where not.
inline bool bf16_runs_on_test_device() {
  try {
    const auto options = torch::TensorOptions().device(test_device()).dtype(torch::kBFloat16);
    torch::conv2d(torch::ones({1, 2, 4, 4}, options), torch::ones({2, 2, 3, 3}, options));
    torch::matmul(torch::ones({4, 4}, options), torch::ones({4, 4}, options));
    return true;
  } catch (const std::exception&) {
    return false;
  }
}
#define SKIP_WITHOUT_BF16() \
  if (!bf16_runs_on_test_device()) GTEST_SKIP() << "no bf16 convolutions on " << test_device_name() << " here"

#define SKIP_WITHOUT_WINOGRAD() \
  if (!nn::winograd_available()) GTEST_SKIP() << "this build or CPU has no oneDNN Winograd kernels"

// The convolution kernels within a test, restored when it ends.
struct ConvolutionScope {
  explicit ConvolutionScope(nn::ConvolutionAlgorithm a) : before(nn::convolution_algorithm()) { nn::set_convolution_algorithm(a); }
  ~ConvolutionScope() { nn::set_convolution_algorithm(before); }
  ConvolutionScope(const ConvolutionScope&) = delete;
  ConvolutionScope& operator=(const ConvolutionScope&) = delete;
  nn::ConvolutionAlgorithm before;
};

inline nlohmann::json read_json(const std::string& relative) {
  std::ifstream in(fixture(relative));
  if (!in) throw std::runtime_error("missing fixture " + fixture(relative));
  return nlohmann::json::parse(in);
}

// A whole file as bytes ("" when it cannot be opened).
inline std::string read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

// Every scratch directory of one test process lies under this root, which test_main.cpp removes
// when the tests end (and keeps, naming it, when one failed).
inline std::string scratch_root() {
  return ::testing::TempDir() + "vavae_tests_" + std::to_string(::getpid());
}

inline std::string scratch_dir(const std::string& name) {
  std::string dir = scratch_root() + "/" + name;
  std::filesystem::create_directories(dir);
  return dir;
}

// Runs `fn`, expecting a vavae::Error whose one-line message contains every `needle`.
template <typename Fn>
void expect_error(Fn&& fn, std::initializer_list<std::string> needles) {
  try {
    fn();
    ADD_FAILURE() << "no error thrown";
  } catch (const Error& e) {
    const std::string msg = e.what();
    EXPECT_EQ(msg.find('\n'), std::string::npos) << msg;
    for (const auto& n : needles) EXPECT_NE(msg.find(n), std::string::npos) << "'" << n << "' not in: " << msg;
  }
}

struct Tolerance {
  double atol = 0, rtol = 0;
};

// The tolerance a fixture's meta.json suggests for one stored tensor (10x its float32-vs-float64 gap).
inline Tolerance tolerance_from(const nlohmann::json& meta, const std::string& name) {
  const auto& t = meta.at("tolerances").at(name);
  return {t.at("suggested_atol").get<double>(), t.at("suggested_rtol").get<double>()};
}

// |actual - expected| <= atol + rtol * |expected| everywhere, with the worst element reported.
inline ::testing::AssertionResult all_close(const torch::Tensor& actual, const torch::Tensor& expected, Tolerance tol) {
  if (actual.sizes() != expected.sizes())
    return ::testing::AssertionFailure() << "shape " << shape_string(actual.sizes()) << " vs expected "
                                         << shape_string(expected.sizes());
  const torch::Tensor a = actual.detach().to(torch::kCPU, torch::kFloat64);
  const torch::Tensor e = expected.detach().to(torch::kCPU, torch::kFloat64);
  const torch::Tensor excess = (a - e).abs() - (tol.atol + tol.rtol * e.abs());
  if (a.numel() == 0 || excess.max().item<double>() <= 0) return ::testing::AssertionSuccess();
  const int64_t worst = excess.flatten().argmax().item<int64_t>();
  return ::testing::AssertionFailure() << "element " << worst << ": " << a.flatten()[worst].item<double>() << " vs expected "
                                       << e.flatten()[worst].item<double>() << " (atol " << tol.atol << ", rtol " << tol.rtol
                                       << ", max |diff| " << (a - e).abs().max().item<double>() << ")";
}

}  // namespace vavae::test
