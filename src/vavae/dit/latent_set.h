#pragma once
#include <torch/torch.h>

#include <mutex>
#include <string>

#include "vavae/data/latent_folder.h"

namespace vavae::dit {

// The latents of an extract-latents folder, held in memory and normalised as LightningDiT's
// ImgLatentDataset returns them: (latent - mean) / std * multiplier, where latents_stats.pt is
// computed from the folder and cached there when it is missing (as upstream does).
class LatentSet {
 public:
  LatentSet(const std::string& folder, bool latent_norm, double multiplier, uint64_t seed);

  int64_t size() const { return labels_.size(0); }
  int64_t batches_per_epoch(int64_t batch_size) const { return size() / batch_size; }
  // Batch `index` of `epoch`: the epoch's permutation is seeded by (seed, epoch); each item is its
  // flipped latent with probability 1/2 (ImgLatentDataset's choice), drawn from (seed, epoch, index).
  std::pair<torch::Tensor, torch::Tensor> batch(int64_t epoch, int64_t index, int64_t batch_size) const;  // [B, C, h, w], [B]

  const data::LatentStats& stats() const { return stats_; }
  bool normalized() const { return normalized_; }
  double multiplier() const { return multiplier_; }
  std::vector<int64_t> latent_shape() const { return {latents_.size(1), latents_.size(2), latents_.size(3)}; }
  int64_t max_label() const { return labels_.max().item<int64_t>(); }

 private:
  torch::Tensor latents_, flipped_, labels_;
  data::LatentStats stats_;
  bool normalized_;
  double multiplier_;
  uint64_t seed_;
  mutable std::mutex permutation_mutex_;
  mutable int64_t permutation_epoch_ = -1;
  mutable torch::Tensor permutation_;
};

// Samples back to the tokenizer's latent space: z * std / multiplier + mean (inference.py).
torch::Tensor denormalize_latents(const torch::Tensor& z, const data::LatentStats& stats, bool normalized, double multiplier);

}  // namespace vavae::dit
