#pragma once
#include <torch/torch.h>

#include <utility>
#include <vector>

#include "vavae/nn/foundation_model.h"

// The VF head of upstream's AutoencoderKL(use_vf=...): the frozen foundation model and the 1x1
// projection `linear_proj` that brings latent and features to one width, as upstream builds them.
namespace vavae::nn {

class VFHeadImpl : public torch::nn::Module {
 public:
  // reverse_proj (the released model): linear_proj maps the latent to the feature width, without
  // bias. Otherwise it maps the features down to embed_dim, with bias. proj_fix freezes it.
  VFHeadImpl(FoundationModel foundation, int64_t embed_dim, bool reverse_proj, bool proj_fix);

  // The two sides the VF loss compares, [B, C, h, w] each: (linear_proj(z), f) or (z, linear_proj(f)),
  // f = the frozen features of the images (no gradient into the foundation model).
  std::pair<torch::Tensor, torch::Tensor> align(const torch::Tensor& z, const torch::Tensor& images);

  // What the generator's optimizer trains here: linear_proj, unless proj_fix.
  std::vector<torch::Tensor> trainable_parameters();

  FoundationModel foundation_model{nullptr};
  torch::nn::Conv2d linear_proj{nullptr};
  bool reverse_proj = true, proj_fix = false;
};
TORCH_MODULE(VFHead);

}  // namespace vavae::nn
