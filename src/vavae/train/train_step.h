#pragma once
#include <torch/torch.h>

#include <functional>
#include <memory>

#include "vavae/loss/objective.h"
#include "vavae/nn/autoencoder.h"
#include "vavae/nn/vf_head.h"
#include "vavae/train/adam_state.h"

// One VA-VAE training iteration, as upstream's manual-optimisation training_step: the generator
// step (autoencoder + projection, objective with both adaptive weights, Adam) and then the
// discriminator step on the same reconstructions (Adam). The gradients of both steps are ready
// at one point each (`after_backward`), where data-parallel training reduces them. Both optimizers
// step only once both gradients are known to be finite (the discriminator's inputs are detached
// reconstructions, so the order changes no number).
namespace vavae::train {

struct OptimizerConfig {
  double learning_rate = 1e-4;
  double beta1 = 0.5, beta2 = 0.9;
};

struct IterationLog {
  loss::LogValues generator, discriminator;
  // A loss or gradient was NaN/Inf: neither optimizer stepped, parameters and moments are as before.
  bool skipped = false;
};

class TrainStep {
 public:
  // `vf_head` empty: no VF loss.
  TrainStep(nn::AutoencoderKL autoencoder, loss::VAVAEObjective objective, nn::VFHead vf_head, const OptimizerConfig& optimizer);

  // `generator_step` / `discriminator_step` are upstream's global_step values of the two branches.
  // `log_every_key`: also compute what upstream logs but this step does not need (before
  // disc_start: g_loss, d_weight, logits_real, logits_fake), leaving the update unchanged.
  IterationLog run(const torch::Tensor& images, int64_t generator_step, int64_t discriminator_step,
                   c10::optional<torch::Generator> noise = c10::nullopt, bool log_every_key = false);

  // The generator's forward pass as upstream's AutoencoderKL.forward: encode, a posterior sample,
  // decode, and the VF head's two sides; with what the objective needs to weigh the terms.
  loss::GeneratorInputs forward(const torch::Tensor& images, c10::optional<torch::Generator> noise = c10::nullopt);

  // Called with the parameters whose gradients are complete, before each optimizer step.
  std::function<void(const std::vector<torch::Tensor>&)> after_backward;
  // Data parallelism. Whether every rank's loss and gradients are finite, given this rank's (so all
  // ranks skip a step together); identity on one process.
  std::function<bool(bool)> all_ranks_finite;
  // This rank's share of the posterior noise: each rank draws the noise of the whole global batch
  // (`noise_ranks` times its own) from the shared generator and keeps slice `noise_rank`, so N
  // ranks of batch b sample exactly what one process of batch N*b samples.
  int noise_rank = 0, noise_ranks = 1;
  // Before disc_start: only advance the discriminator's Adam step counts (exactly Adam on zero
  // gradients and zero moments) instead of its full update; false runs the full update.
  bool skip_idle_discriminator_update = true;
  // Of the autoencoder's and the foundation model's forward passes (the objective's own setting
  // covers LPIPS and the discriminator); backward passes run outside autocast, as PyTorch advises.
  Precision precision = Precision::fp32;

  nn::AutoencoderKL autoencoder;
  loss::VAVAEObjective objective;
  nn::VFHead vf_head{nullptr};
  std::unique_ptr<torch::optim::Adam> generator_optimizer, discriminator_optimizer;
  std::vector<torch::Tensor> generator_parameters;  // autoencoder + linear_proj unless proj_fix (upstream: not loss.logvar)

 private:
  IdleAdam idle_discriminator_;
};

}  // namespace vavae::train
