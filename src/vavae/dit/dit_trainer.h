#pragma once
#include <functional>
#include <string>

#include "vavae/common/precision.h"
#include "vavae/config/dit_config.h"
#include "vavae/data/latent_folder.h"
#include "vavae/dit/lightningdit.h"
#include "vavae/io/image.h"
#include "vavae/io/weights.h"
#include "vavae/nn/autoencoder.h"

// LightningDiT training as upstream's train.py runs it: rectified-flow loss on normalised latents
// (flips included), label dropout, AdamW (weight decay 0) with betas (0.9, beta2), optional
// gradient clipping, and an EMA of the weights. A run folder holds config.yaml, metrics.jsonl,
// checkpoints/step_*.safetensors (model.*, ema.*, optimizer state), ema.safetensors (upstream's
// names, for sampling) and images/samples_*.png when a tokenizer is given.
namespace vavae::dit {

struct DiTRunOptions {
  std::string output;
  std::string resume;      // a run folder or checkpoint to continue from
  int64_t max_steps = 0;   // > 0: overrides train.max_steps
};

struct DiTRunSummary {
  int64_t steps = 0;
  double first_loss = 0, last_loss = 0;  // mean MSE of the first and last logging windows
  bool interrupted = false;
};

DiTRunSummary run_dit_training(const config::DiTConfig& config, const DiTRunOptions& options);

// One step's inputs on this rank's device: labels dropped and transport draws made for the whole
// global batch from `generator` (so N ranks see what one process of N*b sees), then this rank's
// rows [first, first + local).
struct StepBatch {
  torch::Tensor x1, y;
  TransportDraws draws;
};
StepBatch prepare_step(const LightningDiTImpl& model, const torch::Tensor& x1, const torch::Tensor& y, const TransportConfig& transport,
                       at::Generator generator, int64_t first, int64_t local, torch::Device device);

// One optimizer step of train.py on this rank's batch: the loss with the forward pass in
// `precision`, backward, `reduce_gradients` (data parallel; may be empty), clipping when
// max_grad_norm > 0, Adam, and the EMA update.
TransportLoss train_step(LightningDiTImpl& model, LightningDiTImpl& ema, torch::optim::Adam& optimizer, const StepBatch& batch,
                         const config::DiTConfig& config, Precision precision, const std::function<void()>& reduce_gradients);

// A LightningDiT for the config and the latents' shape (channels and size from the latents).
LightningDiTConfig model_config_for(const config::DiTConfig& config, int64_t channels, int64_t latent_size);

// A LightningDiT's weights under upstream's names: ema.safetensors, a checkpoint's ema.* part, or
// upstream's checkpoint .pt (its 'ema' dict, through the safe reader). io::load_into checks them.
io::WeightFile read_dit_weights(const std::string& path);

// The config's tokenizer, decoder only (vae.config, else vae.weights' own config; vae.weights), in
// eval mode on `device`; undefined when vae.weights is empty.
nn::AutoencoderKL load_tokenizer(const config::DiTConfig& config, torch::Device device);

// Decodes normalised-space samples with the tokenizer into images.
std::vector<io::Image> decode_samples(nn::AutoencoderKLImpl& tokenizer, const torch::Tensor& latents, const data::LatentStats& stats,
                                      bool normalized, double multiplier, torch::Device device);

}  // namespace vavae::dit
