#pragma once
#include <torch/torch.h>

#include <functional>

#include "vavae/data/dataset.h"

namespace vavae::eval {

struct ProbeResult {
  double train_accuracy = 0, test_accuracy = 0;
  int64_t dims = 0;
};

// Multinomial logistic regression on standardised features (L-BFGS, L2 1e-4), trained on the
// train features and scored on the test features. Labels are int64 class indices.
ProbeResult linear_probe(const torch::Tensor& train_features, const torch::Tensor& train_labels,
                         const torch::Tensor& test_features, const torch::Tensor& test_labels, int64_t iterations = 100);

// Features of the first `count` items of a dataset: `embed` maps a batch of images in [-1, 1]
// ([B, 3, R, R] after padding by `pad` and centre-cropping to R) to [B, F] features.
struct Embedded {
  torch::Tensor features, labels;
};
Embedded embed_dataset(const data::Dataset& dataset, size_t count, int64_t resolution, int64_t pad,
                       const std::function<torch::Tensor(const torch::Tensor&)>& embed, int64_t batch_size = 256);

}  // namespace vavae::eval
