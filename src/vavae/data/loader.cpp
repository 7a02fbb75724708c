#include "vavae/data/loader.h"

#include <algorithm>
#include <iostream>
#include <random>

#include "vavae/common/error.h"
#include "vavae/common/seed.h"

namespace vavae::data {
Loader::Loader(std::shared_ptr<Dataset> dataset, const LoaderConfig& config) : dataset_(std::move(dataset)), config_(config) {
  if (config_.batch_size <= 0) throw Error("batch_size must be positive");
  if (config_.world_size <= 0 || config_.rank < 0 || config_.rank >= config_.world_size)
    throw Error("loader: rank " + std::to_string(config_.rank) + " of " + std::to_string(config_.world_size));
  const int64_t global_batch = config_.batch_size * config_.world_size;
  if (static_cast<int64_t>(dataset_->size()) < global_batch)
    throw Error(dataset_->describe() + ": fewer images than one batch of " + std::to_string(global_batch) +
                (config_.world_size > 1 ? " (" + std::to_string(config_.batch_size) + " on each of " + std::to_string(config_.world_size) + " ranks)" : ""));
}

Loader::~Loader() {
  for (auto& f : ahead_)
    if (f.valid()) f.wait();
}

int64_t Loader::batches_per_epoch() const {
  return static_cast<int64_t>(dataset_->size()) / (config_.batch_size * config_.world_size);
}

std::shared_ptr<const std::vector<size_t>> Loader::permutation(int64_t epoch) const {
  std::lock_guard<std::mutex> lock(permutation_mutex_);
  if (cached_permutation_.first != epoch) {
    std::vector<size_t> order(dataset_->size());
    for (size_t i = 0; i < order.size(); ++i) order[i] = i;
    if (config_.shuffle) {
      std::mt19937_64 rng(mix_seed(config_.seed, static_cast<uint64_t>(epoch)));
      std::shuffle(order.begin(), order.end(), rng);
    }
    cached_permutation_ = {epoch, std::make_shared<const std::vector<size_t>>(std::move(order))};
  }
  return cached_permutation_.second;
}

io::Image Loader::transformed(size_t item, uint64_t rng_seed) const {
  const TransformConfig& t = config_.transform;
  io::Image img = t.jpeg_dct_scaling && t.pad == 0 ? dataset_->image_at_least(item, t.resolution) : io::pad(dataset_->image(item), t.pad);
  std::mt19937_64 rng(rng_seed);
  const auto [height, width] = io::shorter_side_size(img.height, img.width, t.resolution);
  io::Window square{(height - t.resolution) / 2, (width - t.resolution) / 2, t.resolution, t.resolution};
  if (t.random_crop) {
    square.top = std::uniform_int_distribution<int64_t>(0, height - t.resolution)(rng);
    square.left = std::uniform_int_distribution<int64_t>(0, width - t.resolution)(rng);
  }
  img = io::resize_shorter_side(img, t.resolution, square);
  if (t.horizontal_flip && std::bernoulli_distribution(0.5)(rng)) img = io::flip_horizontal(img);
  return img;
}

Batch Loader::batch(int64_t epoch, int64_t index) const {
  const auto shared_order = permutation(epoch);  // one copy per epoch, shared by the workers
  const std::vector<size_t>& order = *shared_order;
  std::vector<io::Image> images;
  std::vector<int64_t> labels;
  size_t position = static_cast<size_t>((index * config_.world_size + config_.rank) * config_.batch_size);
  size_t attempts = 0;
  while (static_cast<int64_t>(images.size()) < config_.batch_size) {
    if (attempts++ > order.size()) throw Error(dataset_->describe() + ": no readable images left");
    const size_t item = order[position++ % order.size()];
    try {
      images.push_back(transformed(item, mix_seed(mix_seed(config_.seed, static_cast<uint64_t>(epoch)), item)));
      labels.push_back(dataset_->label(item));
    } catch (const Error& e) {
      ++skipped_;
      std::cerr << "warning: skipping unreadable image: " << e.what() << "\n";
    }
  }
  Batch b;
  b.images = io::images_to_tensor(images);
  b.labels = torch::tensor(labels, torch::kInt64);
  b.epoch = epoch;
  b.index = index;
  return b;
}

void Loader::start(int64_t epoch, int64_t index) {
  for (auto& f : ahead_)
    if (f.valid()) f.wait();
  ahead_.clear();
  next_epoch_ = epoch;
  next_index_ = index;
}

Batch Loader::next() {
  const int64_t depth = std::max<int64_t>(1, config_.workers);
  while (static_cast<int64_t>(ahead_.size()) < depth) {
    const int64_t e = next_epoch_, i = next_index_;
    ahead_.push_back(std::async(std::launch::async, [this, e, i] { return batch(e, i); }));
    if (++next_index_ >= batches_per_epoch()) next_index_ = 0, ++next_epoch_;
  }
  Batch b = ahead_.front().get();
  ahead_.pop_front();
  return b;
}

}  // namespace vavae::data
