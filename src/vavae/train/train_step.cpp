#include "vavae/train/train_step.h"

#include <cmath>
#include <tuple>

#include "vavae/train/optimizer_step.h"

namespace vavae::train {
namespace {

// Every logged value and every gradient is finite (one pass over CPU gradients; elsewhere one
// float64 reduction and one device sync).
bool all_finite(const loss::LogValues& log, const std::vector<torch::Tensor>& parameters) {
  for (const auto& [name, value] : log)
    if (!std::isfinite(value)) return false;
  return gradients_finite(parameters);
}

}  // namespace

TrainStep::TrainStep(nn::AutoencoderKL ae, loss::VAVAEObjective obj, nn::VFHead head, const OptimizerConfig& o)
    : autoencoder(std::move(ae)), objective(std::move(obj)), vf_head(std::move(head)) {
  generator_parameters = autoencoder->parameters();
  if (vf_head)
    for (const auto& p : vf_head->trainable_parameters()) generator_parameters.push_back(p);
  const auto adam = torch::optim::AdamOptions(o.learning_rate).betas({o.beta1, o.beta2});
  generator_optimizer = std::make_unique<torch::optim::Adam>(generator_parameters, adam);
  discriminator_optimizer = std::make_unique<torch::optim::Adam>(objective->discriminator->parameters(), adam);
  // loss.logvar is a parameter upstream but in no optimizer: it stays at logvar_init.
  objective->logvar.set_requires_grad(false);
}

loss::GeneratorInputs TrainStep::forward(const torch::Tensor& images, c10::optional<torch::Generator> noise) {
  const AutocastScope autocast(images.device(), precision);
  const nn::DiagonalGaussian posterior = autoencoder->encode(images);
  loss::GeneratorInputs in;
  in.images = images;
  if (noise_ranks == 1) {
    in.z = posterior.sample(noise);
  } else {
    std::vector<int64_t> shape = posterior.mean.sizes().vec();
    const int64_t b = shape[0];
    shape[0] *= noise_ranks;
    const torch::Tensor all = at::randn(shape, noise, torch::TensorOptions().dtype(posterior.mean.dtype()));
    in.z = posterior.sample_with(all.slice(0, noise_rank * b, (noise_rank + 1) * b).to(posterior.mean.device()));
  }
  in.reconstructions = autoencoder->decode(in.z);
  in.kl = posterior.kl();
  if (vf_head) std::tie(in.z_proj, in.features) = vf_head->align(in.z, images);
  in.decoder_last_layer = autoencoder->decoder->conv_out->weight;
  in.encoder_last_layer = autoencoder->encoder->conv_out->weight;
  in.decoder_parameters = autoencoder->decoder->parameters();
  for (const auto& p : autoencoder->post_quant_conv->parameters()) in.decoder_parameters.push_back(p);
  return in;
}

IterationLog TrainStep::run(const torch::Tensor& images, int64_t generator_step, int64_t discriminator_step,
                            c10::optional<torch::Generator> noise, bool log_every_key) {
  IterationLog log;
  // The discriminator's BatchNorm statistics move in every forward pass (generator and
  // discriminator branch alike); kept to be restored if the step is skipped. A few small tensors.
  std::vector<torch::Tensor> buffers_before;
  for (const auto& b : objective->discriminator->buffers()) buffers_before.push_back(b.detach().clone());
  objective->log_gan_before_start = log_every_key;
  // Generator: the discriminator is frozen for this step (Lightning's toggle_optimizer).
  for (auto& p : objective->discriminator->parameters()) p.set_requires_grad(false);
  for (auto& p : generator_parameters) p.mutable_grad() = torch::Tensor();
  const loss::GeneratorInputs in = forward(images, noise);
  log.generator = objective->generator_backward(in, generator_step).log;
  if (after_backward) after_backward(generator_parameters);
  for (auto& p : objective->discriminator->parameters()) p.set_requires_grad(true);

  // Discriminator, on the detached reconstructions of the same forward pass. Before disc_start
  // upstream's loss is multiplied by 0: its gradients are zeros, so we skip the passes and step
  // Adam on zero gradients, which keeps Adam's step count (bias correction) as upstream's. Only the
  // BatchNorm running statistics, used in eval mode alone, do not move during that phase.
  const auto disc_parameters = objective->discriminator->parameters();
  auto restore_buffers = [&] {
    torch::NoGradGuard no_grad;
    const auto buffers = objective->discriminator->buffers();
    for (size_t i = 0; i < buffers_before.size(); ++i) buffers[i].copy_(buffers_before[i]);
  };
  if (discriminator_step < objective->config().disc_start) {
    for (auto& p : disc_parameters) p.mutable_grad() = torch::zeros_like(p);
    if (log_every_key) {
      // Upstream's logits, from the same train-mode passes; the statistics those passes moved are
      // put back, so logging changes nothing.
      torch::NoGradGuard no_grad;
      log.discriminator = objective->discriminator_loss(images, in.reconstructions.detach(), discriminator_step).log;
      restore_buffers();
    } else {
      log.discriminator = {{"disc_loss", 0.0}};
    }
  } else {
    for (auto& p : disc_parameters) p.mutable_grad() = torch::Tensor();
    const loss::StepResult d = objective->discriminator_loss(images, in.reconstructions.detach(), discriminator_step);
    log.discriminator = d.log;
    d.loss.backward();
  }
  // Before disc_start every rank's discriminator gradients are the same zeros: nothing to reduce.
  if (after_backward && discriminator_step >= objective->config().disc_start) after_backward(disc_parameters);
  bool finite = all_finite(log.generator, generator_parameters) && all_finite(log.discriminator, disc_parameters);
  if (all_ranks_finite) finite = all_ranks_finite(finite);
  if (!finite) {
    log.skipped = true;
    for (auto& p : generator_parameters) p.mutable_grad() = torch::Tensor();
    for (auto& p : disc_parameters) p.mutable_grad() = torch::Tensor();
    restore_buffers();
    return log;
  }
  adam_step(*generator_optimizer);
  // Before disc_start upstream steps the discriminator's Adam on zero gradients: the step count
  // moves, nothing else; IdleAdam does just that when it can prove it.
  if (discriminator_step < objective->config().disc_start && skip_idle_discriminator_update) {
    idle_discriminator_.step(*discriminator_optimizer);
  } else {
    adam_step(*discriminator_optimizer);
    idle_discriminator_.forget();
  }
  return log;
}

}  // namespace vavae::train
