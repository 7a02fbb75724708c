#include "vavae/data/latent_folder.h"

#include <ATen/CPUGeneratorImpl.h>

#include <algorithm>
#include <filesystem>

#include "vavae/common/error.h"
#include "vavae/io/files.h"
#include "vavae/io/safetensors.h"
#include "vavae/io/torch_writer.h"

namespace vavae::data {

std::vector<std::string> latent_shards(const std::string& folder) {
  if (!std::filesystem::is_directory(folder)) throw Error(folder + ": not a folder of latent shards");
  std::vector<std::string> files;
  for (const auto& e : std::filesystem::directory_iterator(folder))
    if (e.is_regular_file() && io::ends_with(e.path().filename().string(), ".safetensors")) files.push_back(e.path().string());
  std::sort(files.begin(), files.end());
  if (files.empty()) throw Error(folder + ": holds no *.safetensors latent shards");
  return files;
}

LatentStats compute_latent_stats(const std::string& folder, uint64_t seed, int64_t max_items) {
  // Item index -> (shard, row), over the shards in sorted order.
  std::vector<std::unique_ptr<io::SafetensorsReader>> shards;
  std::vector<std::pair<size_t, int64_t>> items;
  for (const auto& file : latent_shards(folder)) {
    shards.push_back(std::make_unique<io::SafetensorsReader>(file));
    const auto& s = *shards.back();
    if (!s.contains("latents") || !s.contains("labels")) throw Error(file + ": not a latent shard (needs latents and labels)");
    const auto& e = s.entry("latents");
    if (e.shape.size() != 4 || s.entry("labels").shape.size() != 1 || s.entry("labels").shape[0] != e.shape[0])
      throw Error(file + ": latents must be [N, C, H, W] beside labels [N]");
    for (int64_t i = 0; i < e.shape[0]; ++i) items.emplace_back(shards.size() - 1, i);
  }
  const int64_t n = std::min<int64_t>(max_items, static_cast<int64_t>(items.size()));
  at::Generator generator = at::detail::createCPUGenerator(seed);
  const torch::Tensor order = torch::randperm(static_cast<int64_t>(items.size()), generator, torch::kLong).slice(0, 0, n);
  std::vector<torch::Tensor> cached(shards.size()), picked;
  for (int64_t k = 0; k < n; ++k) {
    const auto [shard, row] = items[static_cast<size_t>(order[k].item<int64_t>())];
    if (!cached[shard].defined()) cached[shard] = shards[shard]->tensor("latents").to(torch::kFloat32);
    picked.push_back(cached[shard].slice(0, row, row + 1));
  }
  const torch::Tensor latents = torch::cat(picked);
  if (latents.size(0) * latents.size(2) * latents.size(3) < 2) throw Error(folder + ": too few latent values for a std");
  return {latents.mean({0, 2, 3}, /*keepdim=*/true), latents.std({0, 2, 3}, /*unbiased=*/true, /*keepdim=*/true)};
}

void write_latent_stats(const std::string& folder, const LatentStats& stats) {
  io::write_torch_dict((std::filesystem::path(folder) / "latents_stats.pt").string(), {{"mean", stats.mean}, {"std", stats.std}});
  std::filesystem::create_directories(std::filesystem::path(folder) / "stats");
  io::write_safetensors((std::filesystem::path(folder) / "stats" / "latents_stats.safetensors").string(),
                        {{"mean", stats.mean}, {"std", stats.std}}, {{"format", "LightningDiT latent statistics (ImgLatentDataset)"}});
}

torch::Tensor normalize_latents(const torch::Tensor& latents, const LatentStats& stats, double multiplier) {
  return (latents - stats.mean) / stats.std * multiplier;
}

}  // namespace vavae::data
