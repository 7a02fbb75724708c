#pragma once
#include <nlohmann/json.hpp>

#include <string>
#include <vector>

#include "vavae/dit/lightningdit.h"
#include "vavae/dit/transport.h"

// A LightningDiT training/sampling config in upstream's layout (configs/lightningdit_*.yaml:
// data, vae, model, train, optimizer, transport, sample), each key declared once (schema.h), so
// upstream's files load as they are. Keys upstream has but that change nothing here are accepted
// and reported; options upstream has that are not available here must keep upstream's value.
namespace vavae::config {

struct DiTConfig {
  // data
  std::string data_path;          // extract-latents' folder (shards + latents_stats.pt)
  bool latent_norm = true;
  double latent_multiplier = 1.0;
  int64_t num_classes = 1000;
  // vae: the tokenizer the latents came from, to decode samples
  std::string vae_config, vae_weights;
  // model
  std::string model_type = "LightningDiT-XL/1";
  dit::LightningDiTConfig model;  // flags from the file; size from model_type unless given
  int64_t depth = 0, hidden_size = 0, num_heads = 0, patch_size = 0;  // > 0: override model_type's
  // train
  int64_t max_steps = 80000;
  int64_t global_batch_size = 1024;
  int64_t global_seed = 0;
  int64_t log_every = 100;
  int64_t ckpt_every = 20000;
  int64_t keep_checkpoints = 2;
  int64_t sample_every = 0;     // steps between sample grids (0: at the end only)
  double ema_decay = 0.9999;
  int threads = 0;
  std::string device = "cpu";
  std::string mixed_precision = "auto";  // accelerate's --mixed_precision: no or bf16; auto: bf16 where native
  double dist_timeout = 600;    // data parallel: seconds a rank waits for the others
  // optimizer (AdamW with weight decay 0, i.e. Adam)
  double lr = 2e-4, beta2 = 0.95;
  double max_grad_norm = 0;  // > 0: clip the global gradient norm (upstream: only when the key is present)
  // transport and sampling
  dit::TransportConfig transport;
  dit::SamplerConfig sampler;
  dit::Guidance guidance;
  int64_t per_proc_batch_size = 4;
  int64_t fid_num = 50000;

  nlohmann::json resolved;  // every key's value, as written to the run's config.yaml
  std::vector<std::pair<std::string, std::string>> ignored;  // keys present and ignored, with reasons
};

// Parses and validates (errors name the file and key). `set` holds --set key.path=value overrides.
DiTConfig dit_config_from_json(const nlohmann::json& root, const std::string& source);
DiTConfig load_dit_config(const std::string& path, const std::vector<std::string>& set = {});

// The key table for `vavae dit train --keys`.
std::string dit_keys_table();

}  // namespace vavae::config
