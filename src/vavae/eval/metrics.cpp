#include "vavae/eval/metrics.h"

#include <cmath>
#include <limits>

#include "vavae/common/error.h"

namespace vavae::eval {
namespace {

void check_same_size(const io::Image& a, const io::Image& b) {
  if (a.height != b.height || a.width != b.width)
    throw Error("metric needs images of one size, got " + std::to_string(a.height) + "x" + std::to_string(a.width) +
                " and " + std::to_string(b.height) + "x" + std::to_string(b.width));
}

torch::Tensor to_unit_double(const io::Image& img) {  // [3, 1, H, W] in [0, 1]
  return torch::from_blob(const_cast<uint8_t*>(img.rgb.data()), {img.height, img.width, 3}, torch::kUInt8)
      .permute({2, 0, 1})
      .unsqueeze(1)
      .to(torch::kFloat64) /
      255.0;
}

}  // namespace

double psnr(const io::Image& reference, const io::Image& distorted) {
  check_same_size(reference, distorted);
  const double mse = (to_unit_double(reference) - to_unit_double(distorted)).pow(2).mean().item<double>();
  if (mse == 0.0) return std::numeric_limits<double>::infinity();
  return 10.0 * std::log10(1.0 / mse);
}

double ssim(const io::Image& reference, const io::Image& distorted) {
  check_same_size(reference, distorted);
  constexpr double sigma = 1.5;
  constexpr int radius = 5;  // int(3.5 * sigma + 0.5)
  if (reference.height < 2 * radius + 1 || reference.width < 2 * radius + 1)
    throw Error("SSIM needs images of at least 11x11 pixels");
  torch::NoGradGuard no_grad;
  torch::Tensor g = torch::arange(-radius, radius + 1, torch::kFloat64);
  g = torch::exp(-0.5 * g * g / (sigma * sigma));
  g = g / g.sum();
  const torch::Tensor kernel = torch::outer(g, g).view({1, 1, 2 * radius + 1, 2 * radius + 1});
  auto filter = [&](const torch::Tensor& t) { return torch::conv2d(t, kernel); };  // valid region only

  const torch::Tensor x = to_unit_double(reference), y = to_unit_double(distorted);
  const torch::Tensor ux = filter(x), uy = filter(y);
  const torch::Tensor vx = filter(x * x) - ux * ux, vy = filter(y * y) - uy * uy, vxy = filter(x * y) - ux * uy;
  constexpr double c1 = 0.01 * 0.01, c2 = 0.03 * 0.03;
  const torch::Tensor map = ((2 * ux * uy + c1) * (2 * vxy + c2)) / ((ux * ux + uy * uy + c1) * (vx + vy + c2));
  return map.mean({1, 2, 3}).mean().item<double>();
}

}  // namespace vavae::eval
