#pragma once
// The schema of the model sections, shared by training configs and inference configs.
#include <string>

#include "vavae/config/schema.h"
#include "vavae/loss/objective.h"
#include "vavae/nn/autoencoder.h"

namespace vavae::config {

// ddconfig: the encoder/decoder layout (upstream names and defaults of the released f16d32).
template <typename V>
void describe_autoencoder(nn::AutoencoderConfig& a, V& v, const std::string& p) {
  v.key(p + "double_z", a.double_z, "the encoder outputs mean and log-variance (2 x z_channels)");
  v.key(p + "z_channels", a.z_channels, "channels of the encoder output before quant_conv");
  v.key(p + "resolution", a.resolution, "training image size the attention resolutions refer to");
  v.key(p + "in_channels", a.in_channels, "image channels in");
  v.key(p + "out_ch", a.out_ch, "image channels out");
  v.key(p + "ch", a.ch, "base channel width");
  v.key(p + "ch_mult", a.ch_mult, "width multiplier per level; len - 1 halvings (f16: 5 levels)");
  v.key(p + "num_res_blocks", a.num_res_blocks, "ResNet blocks per level (the decoder has one more)");
  v.key(p + "attn_resolutions", a.attn_resolutions, "feature sizes with self-attention");
  v.key(p + "dropout", a.dropout, "dropout in the ResNet blocks");
}

// lossconfig.params: upstream LPIPSWithDiscriminator's arguments, with its defaults.
template <typename V>
void describe_objective(loss::ObjectiveConfig& o, V& v, const std::string& p) {
  v.key(p + "disc_start", o.disc_start, "upstream global step (2 per batch) from which the GAN term counts", kPerStage);
  v.key(p + "logvar_init", o.logvar_init, "initial value of the learned log-variance of the nll");
  v.key(p + "kl_weight", o.kl_weight, "weight of the KL term", kPerStage);
  v.key(p + "pixelloss_weight", o.pixelloss_weight, "accepted and unused, as upstream");
  v.key(p + "disc_num_layers", o.disc_num_layers, "PatchGAN depth");
  v.key(p + "disc_in_channels", o.disc_in_channels, "PatchGAN input channels");
  v.key(p + "disc_ndf", o.disc_ndf, "PatchGAN base width");
  v.key(p + "disc_factor", o.disc_factor, "GAN factor once disc_start is reached", kPerStage);
  v.key(p + "disc_weight", o.disc_weight, "scale of the adaptive GAN weight", kPerStage);
  v.key(p + "perceptual_weight", o.perceptual_weight, "weight of LPIPS in the reconstruction loss", kPerStage);
  v.key(p + "use_actnorm", o.use_actnorm, "ActNorm instead of BatchNorm in the PatchGAN");
  v.key(p + "disc_bn_group", o.disc_bn_group,
        "PatchGAN BatchNorm statistics over groups of this many images (0: the whole batch); one process with "
        "batch N*b and group b normalises as N data-parallel ranks of batch b do");
  v.key(p + "disc_loss", o.disc_loss, "hinge or vanilla");
  v.key(p + "vf_weight", o.vf_weight, "weight of the VF loss (scales the adaptive weight when adaptive_vf)", kPerStage);
  v.key(p + "adaptive_vf", o.adaptive_vf, "scale the VF loss by the gradient-norm ratio at the encoder's last layer", kPerStage);
  v.key(p + "cos_margin", o.vf.cos_margin, "margin m1 of the marginal cosine term", kPerStage);
  v.key(p + "distmat_margin", o.vf.distmat_margin, "margin m2 of the marginal distance-matrix term", kPerStage);
  v.key(p + "cos_weight", o.vf.cos_weight, "weight of the cosine term inside the VF loss", kPerStage);
  v.key(p + "distmat_weight", o.vf.distmat_weight, "weight of the distance-matrix term inside the VF loss", kPerStage);
  v.key(p + "lpips_dropout", o.lpips_dropout,
        "upstream: LPIPS dropout active in training from the end of the first batch, as upstream's image logger leaves it "
        "(the released model trained so); off: LPIPS always in eval mode");
  v.fixed(p + "disc_conditional", false, "conditional discriminators are not supported (false, as released)");
  v.fixed(p + "pp_style", false, "upstream's alternative VF formulation is not supported (false, as released)");
}

// Checks across keys of the model sections; `where` prefixes the messages.
void validate_autoencoder(const nn::AutoencoderConfig& c, const std::string& where);
void validate_objective(const loss::ObjectiveConfig& c, const std::string& where);

}  // namespace vavae::config
