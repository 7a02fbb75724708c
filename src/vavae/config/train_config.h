#pragma once
#include <nlohmann/json.hpp>

#include <string>
#include <vector>

#include "vavae/loss/objective.h"
#include "vavae/nn/autoencoder.h"
#include "vavae/nn/foundation_model.h"

namespace vavae::config {

struct DataSplitConfig {
  std::string source;       // see data::open_dataset
  int64_t resolution = 256;
  int64_t pad = 0;          // zero padding on every side before resizing (Fashion-MNIST 28 -> 32: 2)
  bool random_crop = true;  // training split; validation always centre-crops
  bool flip = true;         // random horizontal flip (training split)
  int64_t limit = 0;        // use the first `limit` images (0: all)
};

// A phase of training with its own loss settings (keys of lossconfig.params).
struct StageConfig {
  std::string name;
  int64_t steps = 0;   // batches; or
  double epochs = 0;   // passes over the training split
  nlohmann::json overrides = nlohmann::json::object();
};

struct TrainerConfig {
  int64_t max_steps = 0;     // 0: from the stages or max_epochs
  double max_epochs = 0;
  int64_t log_every = 10, val_every = 500, checkpoint_every = 1000, keep_checkpoints = 3;
  int64_t val_images = 8;    // images in the validation grid
  uint64_t seed = 0;
  int64_t threads = 0;
  std::string device = "cpu";
  // Steps whose loss or gradients are NaN/Inf are skipped; this many in a row stop the run.
  int64_t max_nonfinite_steps = 5;
};

struct TrainConfig {
  nn::AutoencoderConfig autoencoder;
  loss::ObjectiveConfig objective;
  bool use_vf = false;
  nn::FoundationSpec foundation;
  std::string lpips_weights, lpips_heads;  // model.params.lpips: needed when perceptual_weight > 0
  double learning_rate = 1e-4;
  int64_t batch_size = 8, num_workers = 2;
  DataSplitConfig train, validation;
  TrainerConfig trainer;
  std::vector<StageConfig> stages;
  std::string weight_init;
  nlohmann::json resolved;  // the whole config after overrides, as written to config.yaml
};

// Applies "a.b.c=value" overrides (value read as YAML) to a config tree.
void apply_overrides(nlohmann::json& root, const std::vector<std::string>& assignments);

// Parses and validates; unknown keys and wrong types are Errors naming the key (with did-you-mean).
TrainConfig train_config_from_json(const nlohmann::json& root, const std::string& source);

// Applies a stage's overrides to an objective configuration.
void apply_stage(loss::ObjectiveConfig& objective, const StageConfig& stage);

// YAML text for a config tree.
std::string to_yaml(const nlohmann::json& root);

}  // namespace vavae::config
