#pragma once
#include <ATen/core/Generator.h>

#include <string>

#include "vavae/io/weights.h"
#include "vavae/train/train_step.h"

// Training checkpoints: one safetensors file holding the model under upstream's names
// (encoder.*, decoder.*, quant_conv.*, post_quant_conv.*, linear_proj.weight, loss.logvar,
// loss.discriminator.*), so `vavae encode --weights` reads it directly, plus both optimizers,
// the random generators and the step under trainer.* and in the metadata. Written atomically.
namespace vavae::train {

struct CheckpointState {
  int64_t step = 0;  // batches done
  std::string stage;
  std::string config_json;
};

// Adam as PyTorch's optimizer.state_dict() lays it out: per parameter index `state.<i>.exp_avg`,
// `exp_avg_sq`, `step` (a float32 scalar, as PyTorch keeps it) under `prefix`, and the param group's
// settings as JSON in the metadata. Plain tensors: resuming never runs a deserialiser that can
// execute code. Restoring checks every shape, count and index against the optimizer's parameters.
void add_adam_state(torch::optim::Adam& optimizer, const std::string& prefix, io::NamedTensors& tensors,
                    std::map<std::string, std::string>& metadata);
void restore_adam_state(torch::optim::Adam& optimizer, const std::string& prefix, const io::SafetensorsReader& reader);

void save_checkpoint(const std::string& path, TrainStep& step, const CheckpointState& state, at::Generator& noise);

// Restores everything save_checkpoint wrote; returns the state.
CheckpointState load_checkpoint(const std::string& path, TrainStep& step, at::Generator& noise);

// The checkpoint with the highest step in a folder (or the file itself); Error when none.
std::string find_checkpoint(const std::string& path);

// Deletes the temporary files (NAME.tmp.PID) that a write killed mid-way left in a folder.
void remove_stale_temporaries(const std::string& folder);

// Deletes all but the newest `keep` step_*.safetensors in a folder.
void prune_checkpoints(const std::string& folder, int64_t keep);

// Loads a state dict in upstream's layout (a Lightning checkpoint's `state_dict`, or a vavae
// checkpoint) non-strictly, as upstream's init_from_ckpt and main.py (strict=False) do: keys
// starting with one of `ignore_keys` are dropped, every tensor whose name matches is copied into
// the autoencoder, linear_proj, loss.logvar, loss.discriminator or loss.perceptual_loss (LPIPS);
// a shape mismatch is an Error; the report says what was loaded and what skipped.
io::LoadReport load_upstream_state_dict(TrainStep& step, const io::WeightFile& file, const std::vector<std::string>& ignore_keys = {});

// The inference weights alone (the autoencoder, upstream names), from a model or from any
// upstream-layout state dict (the tensors under encoder., decoder., quant_conv., post_quant_conv.);
// Error when there are none. Returns how many tensors were written.
size_t export_autoencoder(const std::string& path, const nn::AutoencoderKLImpl& autoencoder);
size_t export_autoencoder(const std::string& path, const io::NamedTensors& state_dict, const std::string& source);

}  // namespace vavae::train
