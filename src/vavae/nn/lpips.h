#pragma once
#include <torch/torch.h>

#include <string>
#include <vector>

#include "vavae/io/weights.h"
#include "vavae/nn/convolution.h"

// LPIPS (taming-transformers' copy): a frozen VGG16 trunk tapped after relu1_2, relu2_2, relu3_3,
// relu4_3 and relu5_3, channel-normalised squared differences, 1x1 linear heads, spatial mean, sum.
// Registered under the upstream names (scaling_layer.shift, net.slice1.0.weight, lin0.model.1.weight).
namespace vavae::nn {

// One run of VGG16 `features`, its convolutions registered under their index in torchvision's
// `vgg16().features` (slice2 holds 5 and 7, ...), max pools where torchvision has them.
struct VggSliceImpl : torch::nn::Module {
  VggSliceImpl(int64_t first_index, const std::vector<std::pair<int64_t, int64_t>>& convs, bool starts_with_pool);
  torch::Tensor forward(torch::Tensor x);
  bool starts_with_pool;
  std::vector<Conv2d> convs;  // 3x3, padding 1: Winograd where it applies
};
TORCH_MODULE(VggSlice);

struct LinearHeadImpl : torch::nn::Module {  // `model` = Sequential(Dropout, Conv2d 1x1 no bias)
  explicit LinearHeadImpl(int64_t channels);
  torch::nn::Sequential model;
};
TORCH_MODULE(LinearHead);

struct LPIPSImpl : torch::nn::Module {
  LPIPSImpl();
  // Per-image distance [B, 1, 1, 1]; `layers`, if given, receives the five per-layer terms.
  torch::Tensor forward(const torch::Tensor& x0, const torch::Tensor& x1, std::vector<torch::Tensor>* layers = nullptr);
  torch::Tensor scale_input(const torch::Tensor& x) const;  // (x - shift) / scale
  std::vector<torch::Tensor> vgg_taps(const torch::Tensor& x);  // the five VGG activations LPIPS compares
  // Layer k's term [B, 1, 1, 1]: mean over pixels of lin_k((unit(f0) - unit(f1))^2), unit(f) the
  // features scaled to length 1 over channels (a fused kernel for float32 CPU features).
  torch::Tensor layer_distance(size_t k, const torch::Tensor& f0, const torch::Tensor& f1);
  // Parameters start as NaN, so a forward pass before weights were loaded fails with an Error
  // instead of returning a distance from random VGG features.
  bool has_weights() const;
  torch::Tensor shift, scale;
  std::vector<VggSlice> slices;
  std::vector<LinearHead> lins;
};
TORCH_MODULE(LPIPS);

// Loads LPIPS weights from what people have: one file with the upstream LPIPS names (safetensors
// or a torch checkpoint), or torchvision's vgg16 state dict (`features.N.*`) plus the LPIPS
// `vgg.pth` heads (`lin0.model.1.weight`, a legacy pickle). Freezes the module and sets eval mode.
void load_lpips(LPIPSImpl& lpips, const std::string& weights, const std::string& heads = "");

}  // namespace vavae::nn
