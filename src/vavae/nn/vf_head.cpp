#include "vavae/nn/vf_head.h"

namespace vavae::nn {

VFHeadImpl::VFHeadImpl(FoundationModel foundation, int64_t embed_dim, bool reverse, bool fix)
    : reverse_proj(reverse), proj_fix(fix) {
  foundation_model = register_module("foundation_model", std::move(foundation));
  for (auto& p : foundation_model->parameters()) p.set_requires_grad(false);
  const int64_t width = foundation_model->config.vit.embed_dim;
  linear_proj = register_module(
      "linear_proj", torch::nn::Conv2d(reverse_proj ? torch::nn::Conv2dOptions(embed_dim, width, 1).bias(false)
                                                    : torch::nn::Conv2dOptions(width, embed_dim, 1).bias(true)));
  if (proj_fix)
    for (auto& p : linear_proj->parameters()) p.set_requires_grad(false);
}

std::pair<torch::Tensor, torch::Tensor> VFHeadImpl::align(const torch::Tensor& z, const torch::Tensor& images) {
  torch::Tensor features;
  {
    torch::NoGradGuard no_grad;
    features = foundation_model->features(images);
  }
  if (reverse_proj) return {linear_proj(z).to(z.scalar_type()), features};
  return {z, linear_proj(features).to(features.scalar_type())};
}

std::vector<torch::Tensor> VFHeadImpl::trainable_parameters() {
  if (proj_fix) return {};
  return linear_proj->parameters();
}

}  // namespace vavae::nn
