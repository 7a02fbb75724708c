#pragma once
#include <torch/torch.h>

#include <string>
#include <vector>

// LightningDiT's latent folders: the shards extract_features.py writes (latents, latents_flip,
// labels) and the normalisation ImgLatentDataset computes from them and caches as latents_stats.pt.
namespace vavae::data {

struct LatentStats {
  torch::Tensor mean, std;  // [1, C, 1, 1] float32
};

// The folder's *.safetensors files in sorted order (the order ImgLatentDataset indexes items in).
std::vector<std::string> latent_shards(const std::string& folder);

// ImgLatentDataset.compute_latent_stats: min(max_items, N) items drawn without replacement
// (seeded; all of them when N <= max_items), their un-flipped `latents` only, mean and unbiased
// (N·H·W − 1) std per channel.
LatentStats compute_latent_stats(const std::string& folder, uint64_t seed, int64_t max_items = 10000);

// latents_stats.pt ({'mean', 'std'}, read by torch.load and by LightningDiT) in the folder, and a
// safetensors twin in its stats/ subfolder (not beside the shards, where LightningDiT's glob of
// *.safetensors would take it for one).
void write_latent_stats(const std::string& folder, const LatentStats& stats);

// (latent − mean) / std · multiplier, as ImgLatentDataset returns an item.
torch::Tensor normalize_latents(const torch::Tensor& latents, const LatentStats& stats, double multiplier = 1.0);

}  // namespace vavae::data
