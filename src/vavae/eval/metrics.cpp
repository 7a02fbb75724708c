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

// [N, 3, H, W] in [0, 1], float64.
torch::Tensor to_unit_double(const std::vector<io::Image>& images) {
  std::vector<torch::Tensor> planes;
  planes.reserve(images.size());
  for (const io::Image& img : images) {
    check_same_size(images.front(), img);
    planes.push_back(torch::from_blob(const_cast<uint8_t*>(img.rgb.data()), {img.height, img.width, 3}, torch::kUInt8).permute({2, 0, 1}));
  }
  return torch::stack(planes).to(torch::kFloat64) / 255.0;
}

void check_pairs(const std::vector<io::Image>& reference, const std::vector<io::Image>& distorted) {
  if (reference.size() != distorted.size())
    throw Error("metric needs as many distorted images as references, got " + std::to_string(distorted.size()) + " and " +
                std::to_string(reference.size()));
  if (reference.empty()) throw Error("metric needs at least one image");
  check_same_size(reference.front(), distorted.front());
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

torch::Tensor psnr_each(const std::vector<io::Image>& reference, const std::vector<io::Image>& distorted) {
  check_pairs(reference, distorted);
  const torch::Tensor mse = (to_unit_double(reference) - to_unit_double(distorted)).pow(2).flatten(1).mean(1);
  return 10.0 * torch::log10(1.0 / mse);  // 1 / 0 = +infinity for identical images
}

torch::Tensor ssim_each(const std::vector<io::Image>& reference, const std::vector<io::Image>& distorted) {
  check_pairs(reference, distorted);
  const torch::Tensor x = to_unit_double(reference), y = to_unit_double(distorted);
  const auto planes = [](const torch::Tensor& t) { return t.reshape({-1, 1, t.size(2), t.size(3)}); };
  return ssim_per_plane(planes(x), planes(y), 1.0, false).view({x.size(0), x.size(1)}).mean(1);
}

double psnr(const io::Image& reference, const io::Image& distorted) { return psnr_each({reference}, {distorted}).item<double>(); }

double ssim(const io::Image& reference, const io::Image& distorted) { return ssim_each({reference}, {distorted}).item<double>(); }

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
