#pragma once
#include <torch/torch.h>

#include "vavae/nn/vit.h"

// Masked-autoencoder pre-training (He et al. 2022) of a ViT: the encoder sees a random 25% of the
// patches, a light decoder fills in the rest, and the loss is the MSE of the per-patch normalised
// pixels on the masked patches. The encoder is then a foundation model for the VF loss.
namespace vavae::train {

struct MAEConfig {
  nn::ViTConfig encoder;
  int64_t decoder_dim = 64, decoder_depth = 1, decoder_heads = 4;
  double mask_ratio = 0.75;
  bool norm_pix_loss = true;
};

struct MAEImpl : torch::nn::Module {
  explicit MAEImpl(const MAEConfig& c);
  // Mean squared error on the masked patches of images in [-1, 1].
  torch::Tensor loss(const torch::Tensor& images, c10::optional<torch::Generator> generator = c10::nullopt);
  torch::Tensor patchify(const torch::Tensor& images) const;  // [B, 3, H, W] -> [B, N, p*p*3]

  MAEConfig config;
  nn::ViT encoder{nullptr};
  torch::nn::Linear decoder_embed{nullptr}, decoder_pred{nullptr};
  torch::Tensor mask_token, decoder_pos_embed;
  torch::nn::ModuleList decoder_blocks;
  torch::nn::LayerNorm decoder_norm{nullptr};
};
TORCH_MODULE(MAE);

}  // namespace vavae::train
