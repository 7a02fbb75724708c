#pragma once
#include <torch/torch.h>

// The PatchGAN discriminator of taming-transformers (NLayerDiscriminator), registered as
// `main.<i>` so an upstream `loss.discriminator.*` state dict loads by name.
namespace vavae::nn {

struct PatchGANConfig {
  int64_t input_nc = 3;
  int64_t ndf = 64;
  int64_t n_layers = 3;
  bool use_actnorm = false;  // ActNorm instead of BatchNorm
  // In training, each group of this many images passes alone, so BatchNorm normalises with that
  // group's statistics, as on a data-parallel rank with this batch (0: the whole batch at once).
  int64_t batch_norm_group = 0;
};

// Activation normalisation (Glow), initialised from the first training batch: per channel
// loc = -mean, scale = 1 / (std + 1e-6). Upstream names: loc, scale, initialized.
struct ActNormImpl : torch::nn::Module {
  explicit ActNormImpl(int64_t channels);
  torch::Tensor forward(const torch::Tensor& x);
  torch::Tensor loc, scale, initialized;
};
TORCH_MODULE(ActNorm);

struct PatchGANImpl : torch::nn::Module {
  explicit PatchGANImpl(const PatchGANConfig& c);
  torch::Tensor forward(const torch::Tensor& x);  // [B, 3, H, W] -> [B, 1, h, w] patch logits
  // Upstream weights_init: conv weights ~ N(0, 0.02); norm weights ~ N(1, 0.02), biases 0.
  void reset_parameters_like_upstream();
  torch::nn::Sequential main;
  int64_t batch_norm_group = 0;
};
TORCH_MODULE(PatchGAN);

}  // namespace vavae::nn
