#pragma once
#include <torch/torch.h>

#include <functional>

#include <map>
#include <string>

#include "vavae/common/precision.h"
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
  int64_t disc_bn_group = 0;  // BatchNorm statistics per group of this many images (0: whole batch)
  std::string disc_loss = "hinge";  // or "vanilla"
  double vf_weight = 1e2;
  bool adaptive_vf = false;
  VFLossConfig vf;
  // upstream: LPIPS's dropout layers are active in training once the trainer says so (upstream's
  // image logger puts the whole module in train mode after the first batch); off: LPIPS is always
  // evaluated in eval mode, as it was built.
  std::string lpips_dropout = "upstream";
};

// Logged values under upstream's names (without the "train/" prefix).
using LogValues = std::map<std::string, double>;

struct GeneratorInputs {
  torch::Tensor images;          // x [B, 3, H, W] in [-1, 1]
  torch::Tensor reconstructions; // x_hat = decode(z), same shape
  torch::Tensor z;               // the sampled latent the decoder saw [B, E, h, w] (generator_backward only)
  torch::Tensor kl;              // [B] posterior KL per image
  torch::Tensor z_proj;          // linear_proj(z) [B, D, h, w]; undefined without the VF loss
  torch::Tensor features;        // frozen foundation features [B, D, h', w']
  torch::Tensor decoder_last_layer;  // decoder.conv_out.weight (for d_weight)
  torch::Tensor encoder_last_layer;  // encoder.conv_out.weight (for vf_weight)
  std::vector<torch::Tensor> decoder_parameters;  // every parameter between z and x_hat (generator_backward only)
};

struct StepResult {
  torch::Tensor loss;
  LogValues log;
};

struct VAVAEObjectiveImpl : torch::nn::Module {
  explicit VAVAEObjectiveImpl(const ObjectiveConfig& c);

  // `step` is the upstream global_step; the GAN term counts from step >= disc_start.
  // The objective as upstream computes it: the adaptive weights from four partial backward passes
  // (through LPIPS twice, the discriminator, and LPIPS + the whole decoder for vf_weight); the caller
  // then runs the main backward. Also the validation loss (no grad: both weights fall back to 0).
  StepResult generator_loss(const GeneratorInputs& in, int64_t step);

  // The same losses and parameter gradients (accumulated into .grad) with less work:
  //   LPIPS backward once (upstream: 3), discriminator forward/backward only from disc_start
  //   (upstream: every step, backward twice), decoder backward once before disc_start and twice
  //   after it when vf_weight is adaptive, the second without weight gradients (upstream: twice),
  //   encoder backward once; the four last-layer gradients are single-convolution contractions.
  // Before disc_start the GAN term is not computed, so d_weight and g_loss are not logged unless
  // log_gan_before_start asks for upstream's (otherwise unused) values.
  StepResult generator_backward(const GeneratorInputs& in, int64_t step);
  bool log_gan_before_start = false;
  // Data parallelism. Applied to each last-layer gradient before its norm enters an adaptive
  // weight (identity: each rank's own gradients, as upstream's DDP; an all-reduce mean: the
  // gradients of the global batch). Called with the decoder parameters as soon as their
  // gradients are final, while the encoder's backward pass is still to come.
  std::function<torch::Tensor(const torch::Tensor&)> reduce_last_layer_gradient;
  std::function<void(const std::vector<torch::Tensor>&)> decoder_gradients_ready;
  StepResult discriminator_loss(const torch::Tensor& images, const torch::Tensor& reconstructions, int64_t step);
  // LPIPS is built in eval mode (as upstream) and follows the objective's mode only once
  // set_lpips_dropout(true) was called.
  void train(bool on = true) override;
  void set_lpips_dropout(bool active);

  const ObjectiveConfig& config() const { return config_; }
  // Switches the loss settings (a new training stage). The keys that shape modules
  // (disc_num_layers, disc_ndf, disc_in_channels, use_actnorm, logvar_init) must not change.
  void set_config(const ObjectiveConfig& c);

  // Of the LPIPS and discriminator forward passes (bf16: autocast for them; the loss arithmetic and
  // the adaptive weights stay in fp32).
  Precision precision = Precision::fp32;

  torch::Tensor logvar;
  nn::LPIPS perceptual_loss{nullptr};
  nn::PatchGAN discriminator{nullptr};

 private:
  ObjectiveConfig config_;
  bool lpips_dropout_ = false;
  struct Terms {
    torch::Tensor nll, kl, rec_mean, g, d_weight, vf, vf_weight;
  };
  void check(const GeneratorInputs& in) const;
  torch::Tensor reconstruction_loss(const GeneratorInputs& in, torch::Tensor* rec_mean);  // nll
  torch::Tensor discriminate(const torch::Tensor& x);  // logits
  double disc_factor_at(int64_t step) const;
  StepResult finish(const Terms& t, int64_t step) const;
};
TORCH_MODULE(VAVAEObjective);

}  // namespace vavae::loss
