#include "vavae/data/latent_folder.h"

#include <ATen/CPUGeneratorImpl.h>

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <iostream>
#include <map>

#include "vavae/common/error.h"
#include "vavae/common/progress.h"
#include "vavae/common/runtime.h"
#include "vavae/data/dataset.h"
#include "vavae/io/image.h"
#include "vavae/io/files.h"
#include "vavae/io/safetensors.h"
#include "vavae/io/torch_writer.h"
#include "vavae/io/weights.h"

namespace vavae::data {

namespace {

// ToTensor() + Normalize(0.5, 0.5) as torchvision computes it, in float32.
torch::Tensor to_normalized_tensor(const io::Image& im) { return (io::to_unit_tensor(im) - 0.5f) / 0.5f; }

std::string shard_name(int rank, int64_t index) {
  char name[64];
  std::snprintf(name, sizeof(name), "latents_rank%02d_shard%03lld.safetensors", rank, static_cast<long long>(index));
  return name;
}

}  // namespace

int64_t extract_latents(nn::AutoencoderKLImpl& autoencoder, const ExtractOptions& o, torch::Device device) {
  namespace fs = std::filesystem;
  if (o.batch_size <= 0 || o.images_per_shard < o.batch_size)
    throw Error("extract-latents: the batch size must be positive and at most the images per shard");
  const auto dataset = open_labelled_dataset(o.data);
  std::cout << "extract-latents: " << dataset->describe() << std::endl;
  fs::create_directories(o.output);
  const int64_t per_shard = (o.images_per_shard / o.batch_size) * o.batch_size;  // upstream's rule
  if (o.world_size < 1 || o.rank < 0 || o.rank >= o.world_size)
    throw Error("extract-latents: rank " + std::to_string(o.rank) + " of " + std::to_string(o.world_size));
  // DistributedSampler(shuffle=False): the item list padded with its first items to a multiple of
  // the ranks, every world_size-th from this rank's position.
  std::vector<size_t> mine;
  const int64_t padded = (static_cast<int64_t>(dataset->size()) + o.world_size - 1) / o.world_size * o.world_size;
  for (int64_t i = o.rank; i < padded; i += o.world_size) mine.push_back(static_cast<size_t>(i % static_cast<int64_t>(dataset->size())));
  const int64_t total = static_cast<int64_t>(mine.size());
  const int64_t shards = (total + per_shard - 1) / per_shard;
  torch::NoGradGuard no_grad;
  autoencoder.eval();
  Progress progress(total);
  int64_t done = 0, encoded = 0;
  for (int64_t shard = 0; shard < shards; ++shard) {
    const int64_t begin = shard * per_shard, end = std::min(total, begin + per_shard);
    const std::string name = shard_name(o.rank, shard);
    const std::string path = (fs::path(o.output) / name).string();
    if (fs::exists(path)) {
      try {
        io::SafetensorsReader existing(path);
        if (existing.metadata().count("total_size") && existing.metadata().at("total_size") == std::to_string(end - begin)) {
          std::cout << "extract-latents: " << name << " is complete (" << end - begin << " images), skipped" << std::endl;
          done = end;
          continue;
        }
      } catch (const Error&) {
      }
    }
    // Upstream seeds each rank with seed + rank.
    at::Generator noise = at::detail::createCPUGenerator((o.seed + static_cast<uint64_t>(o.rank)) * 1000003 + static_cast<uint64_t>(shard));
    std::vector<torch::Tensor> latents, flipped;
    std::vector<int64_t> labels;
    for (int64_t start = begin; start < end; start += o.batch_size) {
      std::vector<torch::Tensor> plain_batch, flip_batch;
      for (int64_t i = start; i < std::min(end, start + o.batch_size); ++i) {
        const size_t item = mine[static_cast<size_t>(i)];
        const io::Image im = io::center_crop_resize(io::pad(dataset->image(item), o.pad), o.resolution);
        plain_batch.push_back(to_normalized_tensor(im));
        flip_batch.push_back(to_normalized_tensor(io::flip_horizontal(im)));
        labels.push_back(dataset->label(item));
      }
      // As upstream: the plain batch, then the flipped one, each with its own posterior sample.
      latents.push_back(autoencoder.encode(torch::stack(plain_batch).to(device)).sample(noise).to(torch::kCPU));
      flipped.push_back(autoencoder.encode(torch::stack(flip_batch).to(device)).sample(noise).to(torch::kCPU));
      done += static_cast<int64_t>(plain_batch.size());
      encoded += static_cast<int64_t>(plain_batch.size());
      progress.report(done, encoded, name);
    }
    const torch::Tensor all = torch::cat(latents);
    io::write_safetensors(path,
                          {{"latents", all}, {"latents_flip", torch::cat(flipped)}, {"labels", torch::tensor(labels, torch::kInt64)}},
                          {{"total_size", std::to_string(all.size(0))}, {"dtype", "torch.float32"}, {"device", "cpu"}});
    std::cout << "extract-latents: wrote " << path << " (" << all.size(0) << " images, latents " << shape_string(all.sizes()) << ")"
              << std::endl;
  }
  return encoded;
}

std::vector<std::string> latent_shards(const std::string& folder) {
  if (!std::filesystem::is_directory(folder)) throw Error(folder + ": not a folder of latent shards");
  std::vector<std::string> files;
  for (const auto& e : std::filesystem::directory_iterator(folder))
    if (e.is_regular_file() && io::ends_with(e.path().filename().string(), ".safetensors")) files.push_back(e.path().string());
  std::sort(files.begin(), files.end());
  if (files.empty()) throw Error(folder + ": holds no *.safetensors latent shards");
  return files;
}

LatentItems draw_latent_items(const std::string& folder, uint64_t seed, int64_t max_items, bool with_flip) {
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
    if (with_flip && (!s.contains("latents_flip") || s.entry("latents_flip").shape != e.shape))
      throw Error(file + ": needs latents_flip of the shape of latents");
    for (int64_t i = 0; i < e.shape[0]; ++i) items.emplace_back(shards.size() - 1, i);
  }
  const int64_t n = std::min<int64_t>(max_items, static_cast<int64_t>(items.size()));
  at::Generator generator = at::detail::createCPUGenerator(seed);
  const torch::Tensor order = torch::randperm(static_cast<int64_t>(items.size()), generator, torch::kLong).slice(0, 0, n);
  const auto drawn = order.accessor<int64_t, 1>();
  // Each shard's tensors are read once, when the first of its items is drawn.
  std::vector<std::map<std::string, torch::Tensor>> cached(shards.size());
  std::map<std::string, std::vector<torch::Tensor>> picked;
  std::vector<std::string> names{"latents", "labels"};
  if (with_flip) names.push_back("latents_flip");
  for (int64_t k = 0; k < n; ++k) {
    const auto [shard, row] = items[static_cast<size_t>(drawn[k])];
    for (const auto& name : names) {
      auto& t = cached[shard][name];
      if (!t.defined()) t = name == "labels" ? shards[shard]->tensor(name).to(torch::kInt64) : shards[shard]->tensor(name).to(torch::kFloat32);
      picked[name].push_back(t.slice(0, row, row + 1));
    }
  }
  LatentItems out;
  out.latents = torch::cat(picked["latents"]);
  out.labels = torch::cat(picked["labels"]);
  if (with_flip) out.latents_flip = torch::cat(picked["latents_flip"]);
  return out;
}

LatentStats compute_latent_stats(const std::string& folder, uint64_t seed, int64_t max_items) {
  const torch::Tensor latents = draw_latent_items(folder, seed, max_items, false).latents;
  if (latents.size(0) * latents.size(2) * latents.size(3) < 2) throw Error(folder + ": too few latent values for a std");
  return {latents.mean({0, 2, 3}, /*keepdim=*/true), latents.std({0, 2, 3}, /*unbiased=*/true, /*keepdim=*/true)};
}

std::optional<LatentStats> read_latent_stats(const std::string& folder) {
  const std::string path = (std::filesystem::path(folder) / "latents_stats.pt").string();
  if (!std::filesystem::exists(path)) return std::nullopt;
  LatentStats stats;
  for (const auto& [name, t] : io::read_weights(path).tensors) {
    if (name == "mean") stats.mean = t.to(torch::kFloat32);
    else if (name == "std") stats.std = t.to(torch::kFloat32);
  }
  if (!stats.mean.defined() || !stats.std.defined() || stats.mean.dim() != 4 || stats.mean.sizes() != stats.std.sizes())
    throw Error(path + ": needs mean and std of shape [1, C, 1, 1]");
  return stats;
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
