#include "vavae/eval/metrics.h"

#include <cmath>
#include <limits>

#include "vavae/common/error.h"
#include "vavae/common/runtime.h"

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

// The SSIM map of [N, 1, H, W] float64 planes with an 11x11 Gaussian window (sigma 1.5, the
// 3.5-sigma truncation both libraries use) over the valid region, averaged per plane: [N].
torch::Tensor ssim_per_plane(const torch::Tensor& x, const torch::Tensor& y, double data_range, bool clamp_variances) {
  constexpr double sigma = 1.5;
  constexpr int radius = 5;  // int(3.5 * sigma + 0.5)
  if (x.size(2) < 2 * radius + 1 || x.size(3) < 2 * radius + 1) throw Error("SSIM needs images of at least 11x11 pixels");
  torch::NoGradGuard no_grad;
  torch::Tensor g = torch::arange(-radius, radius + 1, x.options());
  g = torch::exp(-0.5 * g * g / (sigma * sigma));
  g = g / g.sum();
  const torch::Tensor kernel = torch::outer(g, g).view({1, 1, 2 * radius + 1, 2 * radius + 1});
  auto filter = [&](const torch::Tensor& t) { return torch::conv2d(t, kernel); };  // valid region only
  const torch::Tensor ux = filter(x), uy = filter(y);
  torch::Tensor vx = filter(x * x) - ux * ux, vy = filter(y * y) - uy * uy;
  const torch::Tensor vxy = filter(x * y) - ux * uy;
  if (clamp_variances) vx = vx.clamp_min(0), vy = vy.clamp_min(0);
  const double c1 = std::pow(0.01 * data_range, 2), c2 = std::pow(0.03 * data_range, 2);
  const torch::Tensor map = ((2 * ux * uy + c1) * (2 * vxy + c2)) / ((ux * ux + uy * uy + c1) * (vx + vy + c2));
  return map.flatten(1).mean(1);
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
  return ssim_per_plane(to_unit_double(reference), to_unit_double(distorted), 1.0, false).mean().item<double>();
}

torch::Tensor ssim_torchmetrics(const torch::Tensor& preds, const torch::Tensor& target, double low, double high) {
  if (preds.dim() != 4 || preds.sizes() != target.sizes())
    throw Error("SSIM needs two [B, C, H, W] batches of one shape, got " + shape_string(preds.sizes()) + " and " +
                shape_string(target.sizes()));
  const auto planes = [&](const torch::Tensor& t) {
    return t.detach().to(torch::kCPU, torch::kFloat64).clamp(low, high).reshape({-1, 1, t.size(2), t.size(3)});
  };
  return ssim_per_plane(planes(preds), planes(target), high - low, true).view({preds.size(0), preds.size(1)}).mean(1);
}

}  // namespace vavae::eval
