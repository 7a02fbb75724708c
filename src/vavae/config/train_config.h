#pragma once
#include <nlohmann/json.hpp>

#include <string>
#include <utility>
#include <vector>

#include "vavae/config/schema.h"
#include "vavae/loss/objective.h"
#include "vavae/nn/autoencoder.h"
#include "vavae/nn/foundation_model.h"

// The training config: upstream's YAML layout (model / data / lightning) plus vavae's own
// sections (trainer, stages, foundation and LPIPS weights). Every key is declared once, in
// `describe` (train_config.cpp); `vavae train --keys` prints them all.
namespace vavae::config {

struct DataSplitConfig {
  std::string source;       // see data::open_dataset
  std::string target;       // upstream's dataset class (ImageNet: data_root/ILSVRC2012_*/data)
  std::string data_root;    // upstream's data.params.<split>.params.data_root
  int64_t resolution = 256;
  int64_t pad = 0;          // zero padding on every side before resizing (Fashion-MNIST 28 -> 32: 2)
  bool random_crop = true;  // training split, as upstream; validation always centre-crops
  bool flip = false;        // random horizontal flip; upstream does not flip
  bool jpeg_dct_scaling = true;  // training split: JPEGs decode DCT-scaled (data::TransformConfig)
  int64_t limit = 0;        // use the first `limit` images (0: all)
};

// A phase of training. Resolved when the config is read: `objective` is the complete loss
// configuration of this stage (the run's lossconfig with the stage's keys over it).
struct StageConfig {
  std::string name;
  int64_t steps = 0;   // batches; or
  double epochs = 0;   // passes over the training split
  loss::ObjectiveConfig objective;
  std::vector<std::string> overridden;  // the lossconfig keys this stage sets
  // Begin as a new run, as upstream ran each stage: fresh optimizer state, and upstream's step
  // counter (disc_start, the first-batch LPIPS switch) counting from this stage's first batch.
  bool restart = false;
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
  // Data parallelism: the adaptive weights from each rank's own gradients ("local", upstream's
  // DDP) or from the global batch's ("global"); seconds a collective may wait for a lost rank.
  std::string adaptive_weights = "local";
  // bf16 autocast for the networks' forward passes (autoencoder, LPIPS, discriminator, foundation
  // model); losses, adaptive weights, weights and optimizer in fp32. Upstream trained in fp32.
  std::string mixed_precision = "no";
  // The learning rate over the run: constant (upstream) or a cosine from model.base_learning_rate
  // at the first step to 0 after the last, which settles a short run's weights.
  std::string lr_schedule = "constant";
  double dist_timeout = 300;
};

struct TrainConfig {
  TrainConfig() {
    foundation.use_vf.clear();  // no VF loss unless model.params.use_vf names a model
    validation.random_crop = false;
  }

  nn::AutoencoderConfig autoencoder;
  loss::ObjectiveConfig objective;
  bool use_vf = false;  // foundation.use_vf names a model
  bool reverse_proj = true;
  bool proj_fix = false;
  nn::FoundationSpec foundation;
  std::string lpips_weights, lpips_heads;  // model.params.lpips: needed when perceptual_weight > 0
  double learning_rate = 1e-4;
  int64_t batch_size = 8, num_workers = 2;
  DataSplitConfig train, validation;
  TrainerConfig trainer;
  int64_t precision = 32;
  std::string weight_init;
  std::string ckpt_path;                 // model.params.ckpt_path: upstream's init_from_ckpt
  std::vector<std::string> ignore_keys;  // key prefixes ckpt_path's file loses first
  std::vector<StageConfig> stages;

  Provenance provenance;  // where each key's value came from; absent: the default
  std::vector<std::pair<std::string, std::string>> ignored;  // keys present that only Lightning used, and why
  nlohmann::json resolved;  // every key with its value, as written to config.yaml
};

// Applies "a.b.c=value" overrides (value read as YAML) to a config tree; returns the paths set.
std::vector<std::string> apply_overrides(nlohmann::json& root, const std::vector<std::string>& assignments);

// Parses and validates; unknown keys, wrong types and empty (template) values are Errors naming
// the key. `set_paths` (from apply_overrides) are recorded as coming from --set.
TrainConfig train_config_from_json(const nlohmann::json& root, const std::string& source,
                                   const std::vector<std::string>& set_paths = {});

// Every key with its value and origin (default, file, --set, stage NAME): `vavae train --dry-run`.
std::string describe_resolved(const TrainConfig& c);

// The markdown table of every key (path, type, default, meaning): `vavae train --keys`.
std::string keys_table();

// YAML text for a config tree.
std::string to_yaml(const nlohmann::json& root);

}  // namespace vavae::config
