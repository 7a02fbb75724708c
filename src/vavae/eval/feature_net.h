#pragma once
#include <torch/torch.h>

#include <string>

#include "vavae/io/image.h"

// A feature network for Fréchet distances where InceptionV3's weights are not at hand (Fashion-MNIST
// here): a small CNN classifier trained by the project on the training split, whose pooled
// penultimate features stand in for Inception's. Numbers computed with it are not FID against
// Inception and are labelled as such. Never the foundation model of the VF loss.
namespace vavae::eval {

struct FeatureNetConfig {
  int64_t width = 64;        // channels of the first stage (then 2x, 4x)
  int64_t num_classes = 10;
  int64_t resolution = 28;   // images are centre-cropped / resized to this
  int64_t pad = 0;           // zero padding before (as the dataset spec's --pad)
};

struct FeatureNetImpl : torch::nn::Module {
  explicit FeatureNetImpl(const FeatureNetConfig& c);
  torch::Tensor features(const torch::Tensor& x);  // [B, 3, R, R] in [-1, 1] -> [B, 4 * width]
  torch::Tensor forward(const torch::Tensor& x) { return head(features(x)); }  // class logits
  FeatureNetConfig config;
  torch::nn::Sequential body{nullptr};
  torch::nn::Linear head{nullptr};
};
TORCH_MODULE(FeatureNet);

struct FeatureNetTraining {
  std::string data = "fashion-mnist:train", test = "fashion-mnist:test";
  std::string output = "runs/feature_net";
  FeatureNetConfig net;
  int64_t steps = 3000, batch_size = 128;
  double lr = 1e-3;
  uint64_t seed = 0;
};

struct FeatureNetResult {
  std::string path;  // output/feature_net.safetensors
  double test_accuracy = 0, first_loss = 0, last_loss = 0;
};

// Adam with cosine decay, random crops (with `pad` as the padding) and flips; writes the weights
// with their config in the metadata and reports the test accuracy.
FeatureNetResult train_feature_net(const FeatureNetTraining& o, torch::Device device);

FeatureNet load_feature_net(const std::string& path, torch::Device device);

// The features of images in batches: [N, 4 * width]. Images at the net's resolution are taken as
// they are (a tokenizer's decoded, already padded output); others are padded by its pad and
// centre-cropped/resized to its resolution (the dataset's originals).
torch::Tensor feature_net_features(FeatureNetImpl& net, const std::vector<io::Image>& images, int64_t batch_size, torch::Device device);

}  // namespace vavae::eval
