#include "vavae/nn/patchgan.h"

#include <algorithm>

namespace vavae::nn {

ActNormImpl::ActNormImpl(int64_t channels) {
  loc = register_parameter("loc", torch::zeros({1, channels, 1, 1}));
  scale = register_parameter("scale", torch::ones({1, channels, 1, 1}));
  initialized = register_buffer("initialized", torch::zeros({}, torch::kUInt8));
}

torch::Tensor ActNormImpl::forward(const torch::Tensor& x) {
  if (is_training() && initialized.item<uint8_t>() == 0) {
    torch::NoGradGuard no_grad;
    const torch::Tensor flat = x.transpose(0, 1).reshape({x.size(1), -1});
    loc.copy_(-flat.mean(1).view({1, -1, 1, 1}));
    scale.copy_(1.0 / (flat.std(1).view({1, -1, 1, 1}) + 1e-6));
    initialized.fill_(1);
  }
  return scale * (x + loc);
}

PatchGANImpl::PatchGANImpl(const PatchGANConfig& c) : batch_norm_group(c.batch_norm_group) {
  constexpr int64_t kernel = 4, pad = 1;
  auto conv = [&](int64_t in, int64_t out, int64_t stride, bool bias) {
    return torch::nn::Conv2d(torch::nn::Conv2dOptions(in, out, kernel).stride(stride).padding(pad).bias(bias));
  };
  auto norm = [&](int64_t channels) -> torch::nn::AnyModule {
    if (c.use_actnorm) return torch::nn::AnyModule(ActNorm(channels));
    return torch::nn::AnyModule(torch::nn::BatchNorm2d(channels));
  };
  auto lrelu = [] { return torch::nn::LeakyReLU(torch::nn::LeakyReLUOptions().negative_slope(0.2)); };
  const bool bias = c.use_actnorm;  // BatchNorm brings its own shift
  main = torch::nn::Sequential(conv(c.input_nc, c.ndf, 2, true), lrelu());
  int64_t mult = 1;
  for (int64_t n = 1; n <= c.n_layers; ++n) {
    const int64_t prev = mult;
    mult = std::min<int64_t>(int64_t{1} << n, 8);
    main->push_back(conv(c.ndf * prev, c.ndf * mult, n < c.n_layers ? 2 : 1, bias));
    main->push_back(norm(c.ndf * mult));
    main->push_back(lrelu());
  }
  main->push_back(conv(c.ndf * mult, 1, 1, true));
  register_module("main", main);
  reset_parameters_like_upstream();
}

void PatchGANImpl::reset_parameters_like_upstream() {
  torch::NoGradGuard no_grad;
  for (auto& m : main->children()) {
    if (auto* conv = m->as<torch::nn::Conv2d>()) {
      conv->weight.normal_(0.0, 0.02);
    } else if (auto* bn = m->as<torch::nn::BatchNorm2d>()) {
      bn->weight.normal_(1.0, 0.02);
      bn->bias.zero_();
    }
  }
}

torch::Tensor PatchGANImpl::forward(const torch::Tensor& x) {
  // Logits in the input's dtype (fp32 from a bf16-autocast pass).
  if (!is_training() || batch_norm_group <= 0 || x.size(0) <= batch_norm_group) return main->forward(x).to(x.scalar_type());
  std::vector<torch::Tensor> parts;
  for (const auto& group : x.split(batch_norm_group)) parts.push_back(main->forward(group));
  return torch::cat(parts).to(x.scalar_type());
}

}  // namespace vavae::nn
