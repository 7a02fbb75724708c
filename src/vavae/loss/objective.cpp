#include "vavae/loss/objective.h"

#include "vavae/common/error.h"
#include "vavae/common/runtime.h"

namespace vavae::loss {
namespace {

using GradientReduction = std::function<torch::Tensor(const torch::Tensor&)>;

// ||ga|| / (||gb|| + 1e-4), clamped and detached, of two last-layer gradients (each reduced across
// ranks first when data-parallel training asks for it): the ratio both adaptive weights use.
torch::Tensor norm_ratio(torch::Tensor ga, torch::Tensor gb, double max, const GradientReduction& reduce) {
  if (reduce) ga = reduce(ga), gb = reduce(gb);
  return torch::clamp(ga.norm() / (gb.norm() + 1e-4), 0.0, max).detach();
}

// The same ratio for d a / d W and d b / d W.
torch::Tensor gradient_norm_ratio(const torch::Tensor& a, const torch::Tensor& b, const torch::Tensor& layer, double max,
                                  const GradientReduction& reduce) {
  const torch::Tensor ga = torch::autograd::grad({a}, {layer}, {}, /*retain_graph=*/true)[0];
  const torch::Tensor gb = torch::autograd::grad({b}, {layer}, {}, /*retain_graph=*/true)[0];
  return norm_ratio(ga, gb, max, reduce);
}

double scalar(const torch::Tensor& t) { return t.detach().to(torch::kFloat64).item<double>(); }

void accumulate(const torch::Tensor& parameter, const torch::Tensor& g) {
  if (!g.defined()) return;
  auto& slot = parameter.mutable_grad();
  slot = slot.defined() ? slot + g : g.detach().clone();
}

}  // namespace

VAVAEObjectiveImpl::VAVAEObjectiveImpl(const ObjectiveConfig& c) : config_(c) {
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
  d.batch_norm_group = c.disc_bn_group;
  discriminator = register_module("discriminator", nn::PatchGAN(d));
}

void VAVAEObjectiveImpl::set_config(const ObjectiveConfig& c) {
  if (c.disc_num_layers != config_.disc_num_layers || c.disc_ndf != config_.disc_ndf || c.disc_in_channels != config_.disc_in_channels ||
      c.use_actnorm != config_.use_actnorm || c.logvar_init != config_.logvar_init)
    throw Error("a new loss configuration cannot change the discriminator's shape or logvar_init");
  if (c.disc_loss != "hinge" && c.disc_loss != "vanilla")
    throw Error("lossconfig.params.disc_loss must be 'hinge' or 'vanilla', got '" + c.disc_loss + "'");
  config_ = c;
  if (config_.lpips_dropout != "upstream") set_lpips_dropout(false);
}

void VAVAEObjectiveImpl::set_lpips_dropout(bool active) {
  lpips_dropout_ = active && config_.lpips_dropout == "upstream";
  perceptual_loss->train(lpips_dropout_ && is_training());
}

void VAVAEObjectiveImpl::train(bool on) {
  torch::nn::Module::train(on);
  perceptual_loss->train(on && lpips_dropout_);
}

void VAVAEObjectiveImpl::check(const GeneratorInputs& in) const {
  if (in.images.sizes() != in.reconstructions.sizes())
    throw Error("objective: images " + shape_string(in.images.sizes()) + " and reconstructions " +
                shape_string(in.reconstructions.sizes()) + " differ");
  if (in.kl.dim() != 1 || in.kl.size(0) != in.images.size(0))
    throw Error("objective: kl " + shape_string(in.kl.sizes()) + " does not hold one value per image of " +
                shape_string(in.images.sizes()));
}

torch::Tensor VAVAEObjectiveImpl::reconstruction_loss(const GeneratorInputs& in, torch::Tensor* rec_mean) {
  torch::Tensor rec = (in.images - in.reconstructions).abs();
  if (config_.perceptual_weight > 0) {
    const AutocastScope autocast(in.images.device(), precision);
    rec = rec + config_.perceptual_weight * perceptual_loss->forward(in.images, in.reconstructions);
  }
  *rec_mean = rec.mean().detach();
  return torch::sum(rec / torch::exp(logvar) + logvar) / static_cast<double>(in.images.size(0));
}

torch::Tensor VAVAEObjectiveImpl::discriminate(const torch::Tensor& x) {
  const AutocastScope autocast(x.device(), precision);
  return discriminator->forward(x);
}

double VAVAEObjectiveImpl::disc_factor_at(int64_t step) const { return step < config_.disc_start ? 0.0 : config_.disc_factor; }

StepResult VAVAEObjectiveImpl::finish(const Terms& t, int64_t step) const {
  const double disc_factor = disc_factor_at(step);
  StepResult r;
  r.loss = t.nll + config_.kl_weight * t.kl;
  if (t.g.defined()) r.loss = r.loss + t.d_weight * disc_factor * t.g;
  if (t.vf.defined()) r.loss = r.loss + t.vf_weight * t.vf;
  r.log = {{"total_loss", scalar(r.loss)}, {"logvar", scalar(logvar)},     {"kl_loss", scalar(t.kl)},
           {"nll_loss", scalar(t.nll)},    {"rec_loss", scalar(t.rec_mean)}, {"disc_factor", disc_factor}};
  if (t.g.defined()) {
    r.log["d_weight"] = scalar(t.d_weight);
    r.log["g_loss"] = scalar(t.g);
  }
  if (t.vf.defined()) {
    r.log["vf_loss"] = scalar(t.vf);
    r.log["vf_weight"] = scalar(t.vf_weight);
  }
  return r;
}

StepResult VAVAEObjectiveImpl::generator_loss(const GeneratorInputs& in, int64_t step) {
  check(in);
  const bool training = is_training() && torch::GradMode::is_enabled();
  const auto zero = torch::zeros({}, in.images.options());
  Terms t;
  t.nll = reconstruction_loss(in, &t.rec_mean);
  t.kl = torch::sum(in.kl) / static_cast<double>(in.images.size(0));
  t.g = -torch::mean(discriminate(in.reconstructions));
  t.d_weight = config_.disc_factor > 0 && training
                   ? gradient_norm_ratio(t.nll, t.g, in.decoder_last_layer, 1e4, reduce_last_layer_gradient) * config_.disc_weight
                   : zero;
  if (in.z_proj.defined()) {
    t.vf = vf_loss(in.z_proj, in.features, config_.vf).total;
    if (!config_.adaptive_vf) t.vf_weight = torch::full({}, config_.vf_weight, in.images.options());
    else if (training) t.vf_weight = gradient_norm_ratio(t.nll, t.vf, in.encoder_last_layer, 1e8, reduce_last_layer_gradient) * config_.vf_weight;
    else t.vf_weight = zero;  // upstream's validation: the gradient probe fails without autograd and falls back to 0
  }
  return finish(t, step);
}

StepResult VAVAEObjectiveImpl::generator_backward(const GeneratorInputs& in, int64_t step) {
  check(in);
  if (!in.z.defined() || in.decoder_parameters.empty())
    throw Error("objective: generator_backward needs the sampled z and the decoder parameters");
  using torch::autograd::grad;
  const torch::Tensor& x_hat = in.reconstructions;
  const double disc_factor = disc_factor_at(step);
  const bool gan = disc_factor > 0 || (log_gan_before_start && config_.disc_factor > 0);
  Terms t;
  t.nll = reconstruction_loss(in, &t.rec_mean);
  t.kl = torch::sum(in.kl) / static_cast<double>(in.images.size(0));

  // 1. Through LPIPS once: d nll / d x_hat (and d nll / d logvar when it is trained).
  const bool train_logvar = logvar.requires_grad();
  const auto nll_grads = train_logvar ? grad({t.nll}, {x_hat, logvar}) : grad({t.nll}, {x_hat});
  const torch::Tensor dnll_dx = nll_grads[0];
  // 2. Through the discriminator once, and only when the GAN term is on.
  torch::Tensor dx_total = dnll_dx;
  if (gan) {
    t.g = -torch::mean(discriminate(x_hat));
    const torch::Tensor dg_dx = grad({t.g}, {x_hat})[0];
    auto last_layer = [&](const torch::Tensor& upstream) { return grad({x_hat}, {in.decoder_last_layer}, {upstream}, true)[0]; };
    t.d_weight = norm_ratio(last_layer(dnll_dx), last_layer(dg_dx), 1e4, reduce_last_layer_gradient) * config_.disc_weight;
    if (disc_factor > 0) dx_total = dnll_dx + t.d_weight * disc_factor * dg_dx;
  }
  // 3. Through the decoder once with the combined gradient: decoder weights and d/dz.
  std::vector<torch::Tensor> targets{in.z};
  targets.insert(targets.end(), in.decoder_parameters.begin(), in.decoder_parameters.end());
  const bool need_pure_nll = in.z_proj.defined() && config_.adaptive_vf && !dx_total.is_same(dnll_dx);
  const auto dec_grads = grad({x_hat}, targets, {dx_total}, /*retain_graph=*/need_pure_nll);
  // 4. vf_weight from d nll / d Wenc: the decoder's d/dz already is d nll / dz unless the GAN term
  //    joined it, then one more decoder pass without weight gradients.
  torch::Tensor dz_dec = dec_grads[0];
  std::vector<torch::Tensor> roots{in.z}, root_grads{dz_dec};
  torch::Tensor encoder_side = config_.kl_weight * t.kl;
  if (in.z_proj.defined()) {
    t.vf = vf_loss(in.z_proj, in.features, config_.vf).total;
    if (config_.adaptive_vf) {
      const torch::Tensor dnll_dz = need_pure_nll ? grad({x_hat}, {in.z}, {dnll_dx})[0] : dz_dec;
      const torch::Tensor a = grad({in.z}, {in.encoder_last_layer}, {dnll_dz}, true)[0];
      const torch::Tensor b = grad({t.vf}, {in.encoder_last_layer}, {}, true)[0];
      t.vf_weight = norm_ratio(a, b, 1e8, reduce_last_layer_gradient) * config_.vf_weight;
    } else {
      t.vf_weight = torch::full({}, config_.vf_weight, in.images.options());
    }
    encoder_side = encoder_side + t.vf_weight.detach() * t.vf;
  }
  // The decoder's gradients are final here: data-parallel training starts reducing them while
  // the encoder's backward pass runs.
  for (size_t i = 0; i < in.decoder_parameters.size(); ++i) accumulate(in.decoder_parameters[i], dec_grads[i + 1]);
  if (decoder_gradients_ready) decoder_gradients_ready(in.decoder_parameters);
  // 5. Through the encoder once: the decoder's d/dz plus the KL and VF terms.
  roots.push_back(encoder_side);
  root_grads.push_back(torch::ones_like(encoder_side));
  torch::autograd::backward(roots, root_grads);
  if (train_logvar) accumulate(logvar, nll_grads[1]);
  StepResult r = finish(t, step);
  r.loss = r.loss.detach();
  return r;
}

StepResult VAVAEObjectiveImpl::discriminator_loss(const torch::Tensor& images, const torch::Tensor& reconstructions, int64_t step) {
  const torch::Tensor logits_real = discriminate(images.detach());
  const torch::Tensor logits_fake = discriminate(reconstructions.detach());
  const double disc_factor = disc_factor_at(step);
  const torch::Tensor d_loss =
      config_.disc_loss == "hinge"
          ? 0.5 * (torch::mean(torch::relu(1.0 - logits_real)) + torch::mean(torch::relu(1.0 + logits_fake)))
          : 0.5 * (torch::mean(torch::softplus(-logits_real)) + torch::mean(torch::softplus(logits_fake)));
  StepResult r;
  r.loss = disc_factor * d_loss;
  r.log = {{"disc_loss", scalar(r.loss)}, {"logits_real", scalar(logits_real.mean())}, {"logits_fake", scalar(logits_fake.mean())}};
  return r;
}

}  // namespace vavae::loss
