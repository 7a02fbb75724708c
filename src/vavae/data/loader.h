#pragma once
#include <torch/torch.h>

#include <atomic>
#include <deque>
#include <future>
#include <memory>
#include <string>
#include <vector>

#include "vavae/data/dataset.h"

namespace vavae::data {

struct TransformConfig {
  int64_t resolution = 256;
  int64_t pad = 0;            // zero padding on every side first (Fashion-MNIST: 28 + 2*2 = 32)
  bool random_crop = false;   // training: random crop after the shorter-side resize; else centre crop
  bool horizontal_flip = false;
  // Decode JPEGs DCT-scaled (1/2, 1/4, 1/8) to the smallest size still >= resolution: faster,
  // and not bit-identical to resizing the full-size image (io::decode_jpeg).
  bool jpeg_dct_scaling = false;
};

struct LoaderConfig {
  int64_t batch_size = 8;
  bool shuffle = true;
  uint64_t seed = 0;
  int64_t workers = 2;  // batches decoded ahead, each on its own thread
  TransformConfig transform;
  // Data parallelism: each of `world_size` ranks reads its own `batch_size` images of every global
  // batch of world_size * batch_size consecutive items of the epoch's permutation, rank 0 first;
  // the union of the ranks' batches is the batch one rank of world_size * batch_size reads.
  int rank = 0, world_size = 1;
};

struct Batch {
  torch::Tensor images;  // [B, 3, R, R] float32 in [-1, 1]
  torch::Tensor labels;  // [B] int64 (-1 without labels)
  int64_t epoch = 0, index = 0;
};

// Batches are a pure function of (seed, epoch, index): the epoch's permutation and every random
// crop and flip derive from them, so a run resumes mid-epoch exactly. An item that cannot be read
// is skipped with a warning and counted; the batch takes the next item instead.
class Loader {
 public:
  Loader(std::shared_ptr<Dataset> dataset, const LoaderConfig& config);
  ~Loader();

  int64_t batches_per_epoch() const;  // full global batches only
  Batch batch(int64_t epoch, int64_t index) const;

  // Sequential reading with `workers` batches decoded ahead, from (epoch, index) on.
  void start(int64_t epoch, int64_t index);
  Batch next();

  int64_t skipped() const { return skipped_.load(); }
  const Dataset& dataset() const { return *dataset_; }
  const LoaderConfig& config() const { return config_; }

 private:
  std::shared_ptr<const std::vector<size_t>> permutation(int64_t epoch) const;
  io::Image transformed(size_t item, uint64_t rng_seed) const;

  std::shared_ptr<Dataset> dataset_;
  LoaderConfig config_;
  mutable std::atomic<int64_t> skipped_{0};
  mutable std::mutex permutation_mutex_;
  mutable std::pair<int64_t, std::shared_ptr<const std::vector<size_t>>> cached_permutation_{-1, nullptr};
  std::deque<std::future<Batch>> ahead_;
  int64_t next_epoch_ = 0, next_index_ = 0;
};

}  // namespace vavae::data
