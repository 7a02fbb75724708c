#include "vavae/eval/linear_probe.h"

#include "vavae/common/error.h"
#include "vavae/data/loader.h"

namespace vavae::eval {

ProbeResult linear_probe(const torch::Tensor& train_x, const torch::Tensor& train_y, const torch::Tensor& test_x,
                         const torch::Tensor& test_y, int64_t iterations) {
  if (train_x.size(0) != train_y.size(0) || test_x.size(0) != test_y.size(0))
    throw Error("linear probe: features and labels differ in count");
  if (train_y.min().item<int64_t>() < 0) throw Error("linear probe: the dataset has no class labels");
  const int64_t classes = std::max(train_y.max().item<int64_t>(), test_y.max().item<int64_t>()) + 1;
  const torch::Tensor mean = train_x.mean(0, true), std = train_x.std(0, true, true) + 1e-6;
  const torch::Tensor a = (train_x - mean) / std, b = (test_x - mean) / std;
  torch::Tensor weight = torch::zeros({a.size(1), classes}, torch::requires_grad());
  torch::Tensor bias = torch::zeros({classes}, torch::requires_grad());
  torch::optim::LBFGS optimizer({weight, bias},
                                torch::optim::LBFGSOptions(1.0).max_iter(iterations).line_search_fn("strong_wolfe"));
  auto closure = [&] {
    optimizer.zero_grad();
    torch::Tensor loss = torch::nn::functional::cross_entropy(torch::matmul(a, weight) + bias, train_y) + 1e-4 * weight.pow(2).sum();
    loss.backward();
    return loss;
  };
  optimizer.step(closure);
  torch::NoGradGuard no_grad;
  auto accuracy = [&](const torch::Tensor& x, const torch::Tensor& y) {
    return (torch::matmul(x, weight) + bias).argmax(1).eq(y).to(torch::kFloat64).mean().item<double>();
  };
  return {accuracy(a, train_y), accuracy(b, test_y), a.size(1)};
}

Embedded embed_dataset(const data::Dataset& dataset, size_t count, int64_t resolution, int64_t pad,
                       const std::function<torch::Tensor(const torch::Tensor&)>& embed, int64_t batch_size) {
  torch::NoGradGuard no_grad;
  const size_t n = std::min(count == 0 ? dataset.size() : count, dataset.size());
  std::vector<torch::Tensor> features;
  std::vector<int64_t> labels;
  for (size_t start = 0; start < n; start += static_cast<size_t>(batch_size)) {
    std::vector<io::Image> images;
    for (size_t i = start; i < std::min(n, start + static_cast<size_t>(batch_size)); ++i) {
      images.push_back(io::center_crop_resize(io::pad(dataset.image(i), pad), resolution));
      labels.push_back(dataset.label(i));
    }
    features.push_back(embed(io::images_to_tensor(images)).to(torch::kCPU, torch::kFloat32));
  }
  return {torch::cat(features), torch::tensor(labels, torch::kInt64)};
}

}  // namespace vavae::eval
