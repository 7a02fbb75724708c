#pragma once
#include <torch/torch.h>

#include <optional>
#include <string>
#include <vector>

#include "vavae/nn/autoencoder.h"

// LightningDiT's latent folders: the shards extract_features.py writes (latents, latents_flip,
// labels) and the normalisation ImgLatentDataset computes from them and caches as latents_stats.pt.
namespace vavae::data {

struct ExtractOptions {
  std::string data;     // a labelled image folder (class sub-folders, as ImageFolder) or a dataset spec (open_labelled_dataset)
  std::string output;   // where the shards go
  int64_t resolution = 256;
  int64_t pad = 0;      // zero padding on every side before the crop (2 for Fashion-MNIST's 28 px at 32)
  int64_t batch_size = 256;
  int64_t images_per_shard = 10000;  // upstream writes a shard every (images_per_shard / batch_size) batches
  uint64_t seed = 0;
  // Data parallelism: this rank encodes every world_size-th item (DistributedSampler without
  // shuffling, padded with the first items) into latents_rankRR_shardSSS files of its own.
  int rank = 0, world_size = 1;
};

// extract_features.py: every image of the folder (ImageFolder order: sorted classes, sorted files)
// centre-cropped as ADM does, mapped with ToTensor + Normalize(0.5) in float32, encoded with a
// posterior sample, as is and flipped horizontally, into latents_rank00_shardSSS.safetensors
// (latents, latents_flip [n, C, h, w] F32, labels [n] I64; metadata total_size, dtype, device);
// on several ranks each writes latents_rankRR_shardSSS of its share, seeded with seed + rank.
// A shard's noise comes from its own seeded generator, so a re-run skips the complete shards
// (saying so) and rewrites the rest exactly. Returns the number of images encoded by this call.
int64_t extract_latents(nn::AutoencoderKLImpl& autoencoder, const ExtractOptions& options, torch::Device device);

struct LatentStats {
  torch::Tensor mean, std;  // [1, C, 1, 1] float32
};

// The folder's *.safetensors files in sorted order (the order ImgLatentDataset indexes items in).
std::vector<std::string> latent_shards(const std::string& folder);

struct LatentItems {
  torch::Tensor latents, latents_flip, labels;  // [n, C, h, w] float32 (latents_flip only when asked), [n] int64
};
// min(max_items, N) items drawn without replacement (seeded; in the drawn order), as
// ImgLatentDataset.compute_latent_stats draws them.
LatentItems draw_latent_items(const std::string& folder, uint64_t seed, int64_t max_items, bool with_flip);

// ImgLatentDataset.compute_latent_stats: min(max_items, N) items drawn without replacement
// (seeded; all of them when N <= max_items), their un-flipped `latents` only, mean and unbiased
// (N·H·W − 1) std per channel.
LatentStats compute_latent_stats(const std::string& folder, uint64_t seed, int64_t max_items = 10000);

// latents_stats.pt ({'mean', 'std'}, read by torch.load and by LightningDiT) in the folder, and a
// safetensors twin in its stats/ subfolder (not beside the shards, where LightningDiT's glob of
// *.safetensors would take it for one).
void write_latent_stats(const std::string& folder, const LatentStats& stats);

// The folder's latents_stats.pt (through the safe reader), when there is one.
std::optional<LatentStats> read_latent_stats(const std::string& folder);

// (latent − mean) / std · multiplier, as ImgLatentDataset returns an item.
torch::Tensor normalize_latents(const torch::Tensor& latents, const LatentStats& stats, double multiplier = 1.0);

}  // namespace vavae::data
