#pragma once
#include <torch/torch.h>

#include <map>
#include <string>

#include "vavae/loss/vf_loss.h"
#include "vavae/nn/lpips.h"
#include "vavae/nn/patchgan.h"

// The VA-VAE training objective (upstream LPIPSWithDiscriminator with the VF loss): L1 + LPIPS
// reconstruction with the learned-scalar nll, KL, adaptive-weighted PatchGAN term and
// adaptive-weighted VF term for the generator; hinge or vanilla loss for the discriminator.
// Registered as `logvar`, `perceptual_loss.*`, `discriminator.*` so an upstream `loss.*` loads.
namespace vavae::loss {

// The upstream `lossconfig.params` keys, with upstream's constructor defaults.
struct ObjectiveConfig {
  int64_t disc_start = 0;
  double logvar_init = 0.0;
  double kl_weight = 1.0;
  double pixelloss_weight = 1.0;  // accepted and, as upstream, unused
  int64_t disc_num_layers = 3;
  int64_t disc_in_channels = 3;
  int64_t disc_ndf = 64;
  double disc_factor = 1.0;
  double disc_weight = 1.0;
  double perceptual_weight = 1.0;
  bool use_actnorm = false;
  std::string disc_loss = "hinge";  // or "vanilla"
  double vf_weight = 1e2;
  bool adaptive_vf = false;
  VFLossConfig vf;
};

// Logged values under upstream's names (without the "train/" prefix).
using LogValues = std::map<std::string, double>;

struct GeneratorInputs {
  torch::Tensor images;          // x [B, 3, H, W] in [-1, 1]
  torch::Tensor reconstructions; // x_hat, same shape
  torch::Tensor kl;              // [B] posterior KL per image
  torch::Tensor z_proj;          // linear_proj(z_sampled) [B, D, h, w]; undefined without the VF loss
  torch::Tensor features;        // frozen foundation features [B, D, h', w']
  torch::Tensor decoder_last_layer;  // decoder.conv_out.weight (for d_weight)
  torch::Tensor encoder_last_layer;  // encoder.conv_out.weight (for vf_weight)
};

struct StepResult {
  torch::Tensor loss;
  LogValues log;
};

struct VAVAEObjectiveImpl : torch::nn::Module {
  explicit VAVAEObjectiveImpl(const ObjectiveConfig& c);

  // `step` is the upstream global_step; the GAN term counts from step >= disc_start.
  StepResult generator_loss(const GeneratorInputs& in, int64_t step);
  StepResult discriminator_loss(const torch::Tensor& images, const torch::Tensor& reconstructions, int64_t step);
  // LPIPS stays in eval mode whatever the objective's mode (upstream builds it with .eval()).
  void train(bool on = true) override;

  ObjectiveConfig config;
  torch::Tensor logvar;
  nn::LPIPS perceptual_loss{nullptr};
  nn::PatchGAN discriminator{nullptr};
};
TORCH_MODULE(VAVAEObjective);

}  // namespace vavae::loss
