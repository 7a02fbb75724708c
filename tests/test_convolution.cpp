#include "fixtures.h"
#include "vavae/common/precision.h"
#include "vavae/nn/convolution.h"

namespace vavae::nn {
namespace {

using test::ConvolutionScope;

struct Outputs {
  torch::Tensor y, dx, dw, db;
};

// y = conv(x, w, b) and the gradients of sum(y * dy); `winograd` picks the kernel, float64 inputs
// give the exact reference.
Outputs convolve(const torch::Tensor& x0, const torch::Tensor& w0, const torch::Tensor& b0, const torch::Tensor& dy, bool winograd) {
  const torch::Tensor x = x0.clone().requires_grad_(true), w = w0.clone().requires_grad_(true);
  const torch::Tensor b = b0.defined() ? b0.clone().requires_grad_(true) : torch::Tensor();
  const torch::Tensor y = winograd ? winograd_conv3x3(x, w, b) : torch::conv2d(x, w, b, 1, 1);
  (y * dy.to(y.scalar_type())).sum().backward();
  return {y.detach(), x.grad(), w.grad(), b.defined() ? b.grad() : torch::Tensor()};
}

double max_error(const torch::Tensor& a, const torch::Tensor& exact) {
  return (a.to(torch::kFloat64) - exact).abs().max().item<double>();
}

struct Case {
  int64_t n, in, out, h, w;
  bool bias;
};

// Winograd's error against the float64 convolution stays within a small multiple of the direct
// fp32 kernel's own error, for the output and all three gradients: the same function at float32
// rounding. (F(4x4, 3x3) transforms multiply by up to 8 and divide by up to 24, so its rounding is a
// few times the direct sum's: up to 5.3x measured here; 10x leaves margin, plus 1e-7 of each
// tensor's scale for outputs the direct kernel happens to get exactly.)
void expect_float32_rounding_of_the_exact_convolution(const Case& c) {
  const torch::Tensor x = torch::randn({c.n, c.in, c.h, c.w}), w = torch::randn({c.out, c.in, 3, 3}) * 0.1;
  const torch::Tensor b = c.bias ? torch::randn({c.out}) : torch::Tensor();
  const torch::Tensor dy = torch::randn({c.n, c.out, c.h, c.w});
  ASSERT_TRUE(winograd_applies(x, w));
  const Outputs exact = convolve(x.to(torch::kFloat64), w.to(torch::kFloat64), b.defined() ? b.to(torch::kFloat64) : b,
                                 dy.to(torch::kFloat64), false);
  const Outputs direct = convolve(x, w, b, dy, false), wino = convolve(x, w, b, dy, true);
  const auto check = [&](const torch::Tensor& got, const torch::Tensor& reference, const torch::Tensor& truth, const char* what) {
    ASSERT_EQ(got.sizes(), truth.sizes()) << what;
    const double bound = 10 * max_error(reference, truth) + 1e-7 * truth.abs().max().item<double>();
    EXPECT_LE(max_error(got, truth), bound) << what << " in " << c.n << "x" << c.in << "x" << c.h << "x" << c.w << " -> " << c.out
                                            << " (bands of " << winograd_band_bytes() << " bytes)";
  };
  check(wino.y, direct.y, exact.y, "output");
  check(wino.dx, direct.dx, exact.dx, "input gradient");
  check(wino.dw, direct.dw, exact.dw, "weight gradient");
  if (c.bias) check(wino.db, direct.db, exact.db, "bias gradient");
  EXPECT_FALSE(wino.db.defined() && !c.bias);
}

TEST(Convolution, WinogradMatchesTheExactConvolutionToFloat32Rounding) {
  SKIP_WITHOUT_WINOGRAD();
  torch::manual_seed(0);
  for (const Case c : {Case{2, 32, 48, 16, 24, true}, Case{1, 64, 16, 33, 17, false}, Case{3, 16, 16, 20, 20, true}})
    expect_float32_rounding_of_the_exact_convolution(c);
}

// The band size within a test, restored when it ends.
struct BandScope {
  explicit BandScope(int64_t bytes) : before(winograd_band_bytes()) { set_winograd_band_bytes(bytes); }
  ~BandScope() { set_winograd_band_bytes(before); }
  BandScope(const BandScope&) = delete;
  BandScope& operator=(const BandScope&) = delete;
  int64_t before;
};

// Large layers run in bands of rows (the smallest band, 8 rows, here): each band's halo rows and its
// zero padding only at the image's edges give the whole convolution and its gradients, the weight
// and bias gradients summed over the bands. Heights: bands of 8 with a last band of 5 rows; a
// remainder of 3 rows joined to the band before; one band.
TEST(Convolution, BandsOfRowsGiveTheWholeConvolution) {
  SKIP_WITHOUT_WINOGRAD();
  torch::manual_seed(1);
  const BandScope smallest(1);
  for (const Case c : {Case{2, 32, 16, 37, 20, true}, Case{1, 16, 48, 35, 16, true}, Case{3, 16, 16, 16, 18, false}})
    expect_float32_rounding_of_the_exact_convolution(c);
  EXPECT_THROW(set_winograd_band_bytes(0), std::exception);
}

TEST(Convolution, OnlyTheNeededGradientsAreComputed) {
  SKIP_WITHOUT_WINOGRAD();
  const torch::Tensor x = torch::randn({1, 16, 16, 16}, torch::requires_grad()), w = torch::randn({16, 16, 3, 3});
  const torch::Tensor y = winograd_conv3x3(x, w, torch::Tensor());
  y.sum().backward();
  EXPECT_TRUE(x.grad().defined());
  EXPECT_FALSE(w.grad().defined());
  EXPECT_TRUE(torch::equal(x.grad(), convolve(x.detach(), w, {}, torch::ones_like(y), true).dx));
}

// The module takes the Winograd kernel exactly where it applies and is torch::nn::Conv2d elsewhere.
TEST(Convolution, ModuleChoosesWinogradOnlyWhereItApplies) {
  SKIP_WITHOUT_WINOGRAD();
  const ConvolutionScope scope(ConvolutionAlgorithm::winograd);
  torch::NoGradGuard no_grad;
  torch::manual_seed(1);
  const auto direct = [](Conv2d& m, const torch::Tensor& x) { return m->torch::nn::Conv2dImpl::forward(x); };

  Conv2d same(torch::nn::Conv2dOptions(16, 32, 3).padding(1));
  const torch::Tensor x = torch::randn({2, 16, 16, 16});
  EXPECT_TRUE(torch::equal(same(x), winograd_conv3x3(x, same->weight, same->bias)));
  EXPECT_TRUE(torch::allclose(same(x), direct(same, x), 1e-4, 1e-5));

  const torch::Tensor small = torch::randn({2, 16, 8, 8});  // below the size where Winograd pays
  EXPECT_TRUE(torch::equal(same(small), direct(same, small)));
  Conv2d strided(torch::nn::Conv2dOptions(16, 32, 3).padding(1).stride(2));
  EXPECT_TRUE(torch::equal(strided(x), direct(strided, x)));
  Conv2d unpadded(torch::nn::Conv2dOptions(16, 32, 3));
  EXPECT_TRUE(torch::equal(unpadded(x), direct(unpadded, x)));
  Conv2d rgb(torch::nn::Conv2dOptions(3, 32, 3).padding(1));  // no Winograd kernel for 3 channels
  const torch::Tensor image = torch::randn({2, 3, 32, 32});
  EXPECT_TRUE(torch::equal(rgb(image), direct(rgb, image)));
  {
    const ConvolutionScope off(ConvolutionAlgorithm::direct);
    EXPECT_FALSE(winograd_applies(x, same->weight));
    EXPECT_TRUE(torch::equal(same(x), direct(same, x)));
  }
  if (bf16_is_native(torch::kCPU)) {
    const AutocastScope autocast(torch::kCPU, Precision::bf16);
    const torch::Tensor y = same(x);
    EXPECT_EQ(y.scalar_type(), torch::kBFloat16);  // autocast's bf16 kernel, not the fp32 Winograd one
  }
}

TEST(Convolution, WinogradRefusesWhatItCannotRun) {
  SKIP_WITHOUT_WINOGRAD();
  EXPECT_THROW(winograd_conv3x3(torch::randn({1, 3, 32, 32}), torch::randn({16, 3, 3, 3}), {}), std::exception);
  EXPECT_THROW(winograd_conv3x3(torch::randn({1, 16, 32, 32}), torch::randn({16, 16, 5, 5}), {}), std::exception);
}

// A frozen layer (no gradient for its weights, as LPIPS's VGG) on images below Winograd's size runs
// oneDNN's direct kernels with the weights laid out once: the output and the input gradient are
// LibTorch's convolution's, and a change of the weights (written in place, or a new tensor) is seen
// at the next call.
TEST(Convolution, FrozenLayersKeepTheirWeightLayoutUntilTheWeightsChange) {
  SKIP_WITHOUT_WINOGRAD();
  const ConvolutionScope scope(ConvolutionAlgorithm::winograd);
  torch::manual_seed(2);
  Conv2d frozen(torch::nn::Conv2dOptions(32, 48, 3).padding(1));
  for (auto& p : frozen->parameters()) p.set_requires_grad(false);
  const auto expect_libtorch = [&](const torch::Tensor& x0, const char* when) {
    const torch::Tensor x = x0.clone().requires_grad_(true), reference_x = x0.clone().requires_grad_(true);
    const torch::Tensor y = frozen(x), reference = frozen->torch::nn::Conv2dImpl::forward(reference_x);
    ASSERT_EQ(y.sizes(), reference.sizes()) << when;
    const double scale = reference.abs().max().item<double>();
    EXPECT_LE((y - reference).abs().max().item<double>(), 1e-6 * scale) << when;
    const torch::Tensor dy = torch::randn_like(y);
    (y * dy).sum().backward();
    (reference * dy).sum().backward();
    EXPECT_LE((x.grad() - reference_x.grad()).abs().max().item<double>(), 1e-6 * reference_x.grad().abs().max().item<double>()) << when;
    EXPECT_FALSE(frozen->weight.grad().defined()) << when;
  };
  const torch::Tensor x = torch::randn({4, 32, 8, 8});
  ASSERT_FALSE(winograd_applies(x, frozen->weight));
  expect_libtorch(x, "first call");
  expect_libtorch(torch::randn({2, 32, 4, 6}), "another image size");
  {
    torch::NoGradGuard no_grad;
    frozen->weight.mul_(-2).add_(0.5);
  }
  expect_libtorch(x, "after an in-place change of the weights");
  frozen->weight = torch::randn({48, 32, 3, 3});  // what forward reads; the old tensor stays registered
  expect_libtorch(x, "with a new weight tensor");
  {
    torch::NoGradGuard no_grad;  // inference: no autograd node, the same kernel
    EXPECT_LE((frozen(x) - frozen->torch::nn::Conv2dImpl::forward(x)).abs().max().item<double>(),
              1e-6 * frozen(x).abs().max().item<double>());
  }
  // Trainable weights stay on LibTorch's kernel.
  Conv2d trainable(torch::nn::Conv2dOptions(32, 48, 3).padding(1));
  EXPECT_TRUE(torch::equal(trainable(x), trainable->torch::nn::Conv2dImpl::forward(x)));
}

}  // namespace
}  // namespace vavae::nn
