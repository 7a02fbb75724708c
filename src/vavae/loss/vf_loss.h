#pragma once
#include <torch/torch.h>

// The VF (vision foundation) alignment loss of VA-VAE on the projected latent z' = W z and the
// frozen foundation features f, both [B, D, h, w].
namespace vavae::loss {

struct VFLossConfig {
  double cos_margin = 0.0;      // m1
  double distmat_margin = 0.0;  // m2
  double cos_weight = 1.0;
  double distmat_weight = 1.0;
};

struct VFLossTerms {
  torch::Tensor mcos;   // mean_{b,i,j} relu(1 - m1 - cos(z'_bij, f_bij))
  torch::Tensor mdms;   // mean_{b,i,j} relu(|G_z'[b,i,j] - G_f[b,i,j]| - m2), N x N Gram matrices per sample
  torch::Tensor total;  // distmat_weight * mdms + cos_weight * mcos
};

// Features on another grid than the latent are first resized to it with `align_features`.
VFLossTerms vf_loss(const torch::Tensor& z_proj, const torch::Tensor& features, const VFLossConfig& config);

// The marginal distance-matrix term alone, on channel-normalised [B, D, N] inputs. Where the N x N
// Gram matrices are large (B N^2 over 64 MiB, e.g. N = 4096 at 1024 px) they are formed block by
// block of rows, in the forward and again in the backward pass, so memory grows with
// rows_per_block x N, not N^2; smaller ones are formed whole (rows_per_block >= N forces that,
// 0 chooses). Gradients flow to z only.
torch::Tensor marginal_distance_matrix_loss(const torch::Tensor& z_normalized, const torch::Tensor& f_normalized,
                                            double margin, int64_t rows_per_block = 0);

// Bilinearly resizes [B, D, H, W] features to the h x w latent grid (align_corners = false,
// no antialias) when the grids differ; the original only works where they match. Grids of
// different aspect ratios are an Error: resizing would pair features with the wrong places.
torch::Tensor align_features(const torch::Tensor& features, int64_t h, int64_t w);

}  // namespace vavae::loss
