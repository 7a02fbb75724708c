#pragma once
#include <torch/torch.h>

#include <string>

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

// `vavae train-fm`: MAE pre-training with AdamW, linear warm-up and cosine decay (the MAE recipe,
// lr scaled by batch / 256), random crops and flips.
struct MAETrainingOptions {
  std::string data = "fashion-mnist:train";
  std::string output = "runs/fm";
  int64_t resolution = 32, pad = 2, patch = 4, dim = 128, depth = 4, heads = 4, batch_size = 256;
  double epochs = 2, lr = 1e-3, weight_decay = 0.05, warmup_epochs = 0.25;
  int64_t max_steps = 0;  // caps the epochs (0: no cap)
  uint64_t seed = 0;
  std::string mixed_precision = "no";  // no, bf16 or auto: the forward pass under bf16 autocast, loss and AdamW in fp32
};

struct MAETrainingResult {
  std::string path;  // output/fm.safetensors: the encoder, loadable as use_vf
  int64_t steps = 0;
  double first_loss = 0, last_loss = 0, seconds = 0;
  MAE mae{nullptr};
};

// Trains, shows progress and writes the encoder with the metadata that makes it a foundation model.
MAETrainingResult train_mae(const MAETrainingOptions& o, torch::Device device);

}  // namespace vavae::train
