#pragma once
#include <torch/torch.h>

#include <string>

#include "vavae/nn/vit.h"

// The frozen vision foundation model of the VF loss: a ViT and the way upstream feeds it.
namespace vavae::nn {

struct FoundationModelConfig {
  std::string family = "dinov2";  // dinov2 | mae | vit (a checkpoint of our own, e.g. from train-fm)
  ViTConfig vit;
  // upstream: the [-1, 1] image as is (the original's missing normalisation, kept selectable);
  // imagenet: mapped to [0, 1] and normalised with the ImageNet mean and std.
  std::string input_mode = "upstream";
  // Images are resized (bilinear, align_corners false) to this square before the ViT; 0 keeps their
  // size. Upstream: 224 for DINOv2, none for MAE.
  int64_t input_size = 224;
  bool bf16 = false;  // run the frozen ViT in bfloat16 on CUDA
};

class FoundationModelImpl : public torch::nn::Module {
 public:
  explicit FoundationModelImpl(const FoundationModelConfig& c);
  // [B, 3, H, W] in [-1, 1] -> patch tokens after the final norm, prefix tokens dropped, as a grid
  // [B, D, h, w] (h, w = the ViT's token grid). Frozen: no gradients, eval mode.
  torch::Tensor features(const torch::Tensor& images);
  // Loads timm or official-release weights (see to_timm_names); names the wrong width or family.
  void load(const std::string& path);
  FoundationModelConfig config;
  ViT vit{nullptr};
};
TORCH_MODULE(FoundationModel);

}  // namespace vavae::nn
