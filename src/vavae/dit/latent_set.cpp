#include "vavae/dit/latent_set.h"

#include <iostream>
#include <limits>

#include "vavae/common/error.h"
#include "vavae/common/seed.h"

namespace vavae::dit {
LatentSet::LatentSet(const std::string& folder, bool latent_norm, double multiplier, uint64_t seed)
    : normalized_(latent_norm), multiplier_(multiplier), seed_(seed) {
  const data::LatentItems items = data::draw_latent_items(folder, seed, std::numeric_limits<int64_t>::max(), /*with_flip=*/true);
  if (items.labels.size(0) == 0) throw Error(folder + ": no latents");
  if (latent_norm) {
    auto stats = data::read_latent_stats(folder);
    if (!stats) {
      stats = data::compute_latent_stats(folder, seed);
      data::write_latent_stats(folder, *stats);
      std::cerr << folder << ": computed latents_stats.pt from " << std::min<int64_t>(10000, items.labels.size(0)) << " latents" << std::endl;
    }
    if (stats->mean.size(1) != items.latents.size(1))
      throw Error(folder + "/latents_stats.pt: " + std::to_string(stats->mean.size(1)) + " channels, the latents have " +
                  std::to_string(items.latents.size(1)));
    stats_ = *stats;
    latents_ = data::normalize_latents(items.latents, stats_, multiplier);
    flipped_ = data::normalize_latents(items.latents_flip, stats_, multiplier);
  } else {
    stats_ = {torch::zeros({1, items.latents.size(1), 1, 1}), torch::ones({1, items.latents.size(1), 1, 1})};
    latents_ = items.latents * multiplier;
    flipped_ = items.latents_flip * multiplier;
  }
  labels_ = items.labels;
}

std::pair<torch::Tensor, torch::Tensor> LatentSet::batch(int64_t epoch, int64_t index, int64_t batch_size) const {
  torch::Tensor permutation;
  {
    std::lock_guard<std::mutex> lock(permutation_mutex_);
    if (permutation_epoch_ != epoch) {  // once per epoch, not per batch
      at::Generator order = at::detail::createCPUGenerator(mix_seed(seed_, static_cast<uint64_t>(epoch)));
      permutation_ = torch::randperm(size(), order);
      permutation_epoch_ = epoch;
    }
    permutation = permutation_;
  }
  const torch::Tensor items = permutation.narrow(0, index * batch_size, batch_size);
  at::Generator coin = at::detail::createCPUGenerator(mix_seed(mix_seed(seed_, static_cast<uint64_t>(epoch)), static_cast<uint64_t>(index) + 1));
  const torch::Tensor flip = (torch::rand({batch_size}, coin) < 0.5).view({-1, 1, 1, 1});
  return {torch::where(flip, flipped_.index_select(0, items), latents_.index_select(0, items)), labels_.index_select(0, items)};
}

torch::Tensor denormalize_latents(const torch::Tensor& z, const data::LatentStats& stats, bool normalized, double multiplier) {
  if (!normalized) return z / multiplier;
  return z * stats.std.to(z.device()) / multiplier + stats.mean.to(z.device());
}

}  // namespace vavae::dit
