#pragma once
#include <torch/torch.h>

#include <string>
#include <vector>

#include "vavae/io/image.h"
#include "vavae/nn/inception.h"

// The Fréchet distance between two sets of feature vectors (FID when the features are
// InceptionV3's 2048-d pool features), computed as the common tools do: float64 statistics with
// the unbiased covariance, and tr(sqrtm(sigma1 sigma2)).
namespace vavae::eval {

struct FeatureStatistics {
  torch::Tensor mu;     // [D] float64
  torch::Tensor sigma;  // [D, D] float64
};

// Mean and unbiased covariance (N - 1) of [N, D] features, in float64.
FeatureStatistics feature_statistics(const torch::Tensor& features);

// Running float64 sums of [N, D] feature batches and their outer products: the statistics of a set
// seen in pieces, or spread over ranks once the three tensors are summed across them.
struct FeatureSums {
  torch::Tensor sum, outer, count;  // [D], [D, D], [1]
  void add(const torch::Tensor& features);
  FeatureStatistics statistics() const;  // mu and the unbiased covariance, as feature_statistics
};

// |mu1 - mu2|^2 + tr(sigma1) + tr(sigma2) - 2 tr(sqrtm(sigma1 sigma2)). The trace of the square
// root is taken through the symmetric form sigma1^1/2 sigma2 sigma1^1/2, whose eigenvalues are
// those of sigma1 sigma2, so a singular covariance needs no retry.
double frechet_distance(const FeatureStatistics& a, const FeatureStatistics& b);

// pytorch-fid's get_activations over image files: each read as RGB, ToTensor() (u8 / 255 in
// float32), batches of consecutive images of one size, the network's 2048-d features; [N, 2048].
torch::Tensor inception_features(nn::FIDInceptionV3Impl& inception, const std::vector<std::string>& files, int64_t batch_size,
                                 torch::Device device);

// The 2048-d features of one batch of equally sized images (ToTensor, then the network): [B, 2048].
torch::Tensor inception_features(nn::FIDInceptionV3Impl& inception, const std::vector<io::Image>& images, torch::Device device);

// pytorch-fid's statistics files: an .npz holding `mu` and `sigma` (float64 or float32 .npy).
FeatureStatistics read_npz_statistics(const std::string& path);
void write_npz_statistics(const std::string& path, const FeatureStatistics& s);

}  // namespace vavae::eval
