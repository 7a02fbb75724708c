#include "vavae/loss/objective.h"

#include "vavae/common/error.h"
#include "vavae/common/runtime.h"

namespace vavae::loss {
namespace {

// ||d a / d W|| / (||d b / d W|| + 1e-4), clamped and detached: the ratio both adaptive weights use.
torch::Tensor gradient_norm_ratio(const torch::Tensor& a, const torch::Tensor& b, const torch::Tensor& layer, double max) {
  const torch::Tensor ga = torch::autograd::grad({a}, {layer}, {}, /*retain_graph=*/true)[0];
  const torch::Tensor gb = torch::autograd::grad({b}, {layer}, {}, /*retain_graph=*/true)[0];
  return torch::clamp(ga.norm() / (gb.norm() + 1e-4), 0.0, max).detach();
}

double scalar(const torch::Tensor& t) { return t.detach().to(torch::kFloat64).item<double>(); }

}  // namespace

VAVAEObjectiveImpl::VAVAEObjectiveImpl(const ObjectiveConfig& c) : config(c) {
  if (c.disc_loss != "hinge" && c.disc_loss != "vanilla")
    throw Error("lossconfig.params.disc_loss must be 'hinge' or 'vanilla', got '" + c.disc_loss + "'");
  logvar = register_parameter("logvar", torch::full({}, c.logvar_init));
  perceptual_loss = register_module("perceptual_loss", nn::LPIPS());
  perceptual_loss->eval();
  for (auto& p : perceptual_loss->parameters()) p.set_requires_grad(false);
  nn::PatchGANConfig d;
  d.input_nc = c.disc_in_channels;
  d.ndf = c.disc_ndf;
  d.n_layers = c.disc_num_layers;
  d.use_actnorm = c.use_actnorm;
  discriminator = register_module("discriminator", nn::PatchGAN(d));
}

void VAVAEObjectiveImpl::train(bool on) {
  torch::nn::Module::train(on);
  perceptual_loss->eval();
}

StepResult VAVAEObjectiveImpl::generator_loss(const GeneratorInputs& in, int64_t step) {
  const torch::Tensor& x = in.images;
  const torch::Tensor& x_hat = in.reconstructions;
  if (x.sizes() != x_hat.sizes())
    throw Error("objective: images " + shape_string(x.sizes()) + " and reconstructions " + shape_string(x_hat.sizes()) + " differ");
  const double batch = static_cast<double>(x.size(0));

  torch::Tensor rec = (x - x_hat).abs();
  if (config.perceptual_weight > 0) rec = rec + config.perceptual_weight * perceptual_loss->forward(x, x_hat);
  const torch::Tensor nll_loss = torch::sum(rec / torch::exp(logvar) + logvar) / batch;
  const torch::Tensor kl_loss = torch::sum(in.kl) / batch;

  const torch::Tensor g_loss = -torch::mean(discriminator->forward(x_hat));
  const bool training = is_training() && torch::GradMode::is_enabled();
  torch::Tensor d_weight = torch::zeros({}, x.options());
  if (config.disc_factor > 0 && training)
    d_weight = gradient_norm_ratio(nll_loss, g_loss, in.decoder_last_layer, 1e4) * config.disc_weight;

  torch::Tensor vf = torch::zeros({}, x.options());
  torch::Tensor vf_weight = torch::zeros({}, x.options());
  if (in.z_proj.defined()) {
    vf = vf_loss(in.z_proj, in.features, config.vf).total;
    if (!training) vf_weight = torch::zeros({}, x.options());  // upstream's validation falls back to 0
    else if (config.adaptive_vf) vf_weight = gradient_norm_ratio(nll_loss, vf, in.encoder_last_layer, 1e8) * config.vf_weight;
    else vf_weight = torch::full({}, config.vf_weight, x.options());
  }
  const double disc_factor = step < config.disc_start ? 0.0 : config.disc_factor;

  StepResult r;
  r.loss = nll_loss + config.kl_weight * kl_loss + d_weight * disc_factor * g_loss + vf_weight * vf;
  r.log = {{"total_loss", scalar(r.loss)},   {"logvar", scalar(logvar)},     {"kl_loss", scalar(kl_loss)},
           {"nll_loss", scalar(nll_loss)},   {"rec_loss", scalar(rec.mean())}, {"d_weight", scalar(d_weight)},
           {"disc_factor", disc_factor},     {"g_loss", scalar(g_loss)},     {"vf_loss", scalar(vf)},
           {"vf_weight", scalar(vf_weight)}};
  return r;
}

StepResult VAVAEObjectiveImpl::discriminator_loss(const torch::Tensor& images, const torch::Tensor& reconstructions, int64_t step) {
  const torch::Tensor logits_real = discriminator->forward(images.detach());
  const torch::Tensor logits_fake = discriminator->forward(reconstructions.detach());
  const double disc_factor = step < config.disc_start ? 0.0 : config.disc_factor;
  const torch::Tensor d_loss =
      config.disc_loss == "hinge"
          ? 0.5 * (torch::mean(torch::relu(1.0 - logits_real)) + torch::mean(torch::relu(1.0 + logits_fake)))
          : 0.5 * (torch::mean(torch::softplus(-logits_real)) + torch::mean(torch::softplus(logits_fake)));
  StepResult r;
  r.loss = disc_factor * d_loss;
  r.log = {{"disc_loss", scalar(r.loss)}, {"logits_real", scalar(logits_real.mean())}, {"logits_fake", scalar(logits_fake.mean())}};
  return r;
}

}  // namespace vavae::loss
