#include "vavae/nn/lpips.h"

#include <limits>

#include "vavae/common/checked.h"
#include "vavae/common/error.h"

namespace vavae::nn {
namespace {

// (torchvision index, output channels) of the VGG16 convolutions in each LPIPS slice.
const std::vector<std::vector<std::pair<int64_t, int64_t>>> kSlices = {
    {{0, 64}, {2, 64}},
    {{5, 128}, {7, 128}},
    {{10, 256}, {12, 256}, {14, 256}},
    {{17, 512}, {19, 512}, {21, 512}},
    {{24, 512}, {26, 512}, {28, 512}},
};
const int64_t kChannels[] = {64, 128, 256, 512, 512};

}  // namespace

VggSliceImpl::VggSliceImpl(int64_t in_channels, const std::vector<std::pair<int64_t, int64_t>>& layout, bool pool_first)
    : starts_with_pool(pool_first) {
  int64_t in = in_channels;
  for (const auto& [index, out] : layout) {
    convs.push_back(register_module(std::to_string(index), Conv2d(torch::nn::Conv2dOptions(in, out, 3).padding(1))));
    in = out;
  }
}

torch::Tensor VggSliceImpl::forward(torch::Tensor x) {
  if (starts_with_pool) x = torch::max_pool2d(x, 2, 2);
  for (auto& conv : convs) x = torch::relu(conv(x));
  return x;
}

LinearHeadImpl::LinearHeadImpl(int64_t channels) {
  model = register_module("model", torch::nn::Sequential(torch::nn::Dropout(0.5),
                                                          torch::nn::Conv2d(torch::nn::Conv2dOptions(channels, 1, 1).bias(false))));
}

LPIPSImpl::LPIPSImpl() {
  auto scaling = register_module("scaling_layer", std::make_shared<torch::nn::Module>());
  shift = scaling->register_buffer("shift", torch::tensor({-.030f, -.088f, -.188f}).view({1, 3, 1, 1}));
  scale = scaling->register_buffer("scale", torch::tensor({.458f, .448f, .450f}).view({1, 3, 1, 1}));
  auto net = register_module("net", std::make_shared<torch::nn::Module>());
  int64_t in = 3;
  for (size_t i = 0; i < kSlices.size(); ++i) {
    slices.push_back(net->register_module("slice" + std::to_string(i + 1), VggSlice(in, kSlices[i], i > 0)));
    in = kSlices[i].back().second;
  }
  for (size_t i = 0; i < 5; ++i) lins.push_back(register_module("lin" + std::to_string(i), LinearHead(kChannels[i])));
  torch::NoGradGuard no_grad;
  for (auto& p : parameters()) p.fill_(std::numeric_limits<float>::quiet_NaN());
}

bool LPIPSImpl::has_weights() const {
  // Loading replaces every tensor at once (load_into fails otherwise), so one head tells.
  return !torch::isnan(lins[0]->model->ptr(1)->as<torch::nn::Conv2d>()->weight).any().item<bool>();
}

torch::Tensor LPIPSImpl::scale_input(const torch::Tensor& x) const { return (x - shift) / scale; }

std::vector<torch::Tensor> LPIPSImpl::vgg_features(const torch::Tensor& x) {
  std::vector<torch::Tensor> taps;
  torch::Tensor h = scale_input(x);
  for (auto& slice : slices) {
    h = slice->forward(h);
    taps.push_back(h / (torch::sqrt(h.pow(2).sum(1, true)) + 1e-10));  // unit length over channels
  }
  return taps;
}

torch::Tensor LPIPSImpl::forward(const torch::Tensor& x0, const torch::Tensor& x1, std::vector<torch::Tensor>* layers) {
  if (x0.sizes() != x1.sizes()) throw Error("LPIPS: the two image batches differ in shape");
  if (!has_weights()) throw Error("LPIPS weights are not loaded: give the LPIPS weight file (or set perceptual_weight to 0)");
  // A side without gradients (the real images in training) runs without an autograd graph, so the
  // backward pass only goes through VGG once; without gradients both sides share one batch.
  const bool grad = torch::GradMode::is_enabled() && (x0.requires_grad() || x1.requires_grad());
  std::vector<torch::Tensor> f0, f1;
  if (!grad) {
    const int64_t b = x0.size(0);
    for (const auto& f : vgg_features(torch::cat({x0, x1}))) {
      f0.push_back(f.slice(0, 0, b));
      f1.push_back(f.slice(0, b));
    }
  } else {
    auto side = [&](const torch::Tensor& x) {
      if (x.requires_grad()) return vgg_features(x);
      torch::NoGradGuard no_grad;
      return vgg_features(x);
    };
    f0 = side(x0);
    f1 = side(x1);
  }
  torch::Tensor total;
  for (size_t k = 0; k < f0.size(); ++k) {
    const torch::Tensor term = lins[k]->model->forward((f0[k] - f1[k]).pow(2)).mean({2, 3}, true);
    if (layers) layers->push_back(term);
    total = k == 0 ? term : total + term;
  }
  return total.to(x0.scalar_type());  // fp32 from a bf16-autocast pass
}

void load_lpips(LPIPSImpl& lpips, const std::string& weights, const std::string& heads) {
  io::WeightFile file = io::read_weights(weights);
  bool torchvision = false;
  for (const auto& [k, t] : file.tensors) torchvision |= k.rfind("features.", 0) == 0;
  if (torchvision) {
    // torchvision vgg16: features.<i>.{weight,bias} -> net.slice<k>.<i>.*; classifier.* is not used.
    io::NamedTensors renamed;
    for (const auto& [k, t] : file.tensors) {
      if (k.rfind("features.", 0) != 0) continue;
      const int64_t index = parse_count(k.substr(9, k.find('.', 9) - 9), weights + ": layer index of '" + k + "'");
      for (size_t s = 0; s < kSlices.size(); ++s)
        for (const auto& [i, _] : kSlices[s])
          if (i == index) renamed.emplace_back("net.slice" + std::to_string(s + 1) + "." + k.substr(9), t);
    }
    if (heads.empty()) throw Error(weights + ": torchvision VGG16 weights need the LPIPS linear heads too (vgg.pth)");
    for (const auto& [k, t] : io::read_weights(heads).tensors) renamed.emplace_back(k, t);
    renamed.emplace_back("scaling_layer.shift", lpips.shift.clone());
    renamed.emplace_back("scaling_layer.scale", lpips.scale.clone());
    file.tensors = std::move(renamed);
  } else if (!heads.empty()) {
    for (const auto& [k, t] : io::read_weights(heads).tensors) file.tensors.emplace_back(k, t);
  }
  if (file.tensors.empty()) throw Error(weights + ": no LPIPS weights found");
  io::load_into(lpips, file);
  for (auto& p : lpips.parameters()) p.set_requires_grad(false);
  lpips.eval();
}

}  // namespace vavae::nn
