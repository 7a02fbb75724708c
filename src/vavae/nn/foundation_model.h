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
  bool bf16 = false;  // weights and forward pass in bfloat16 on CUDA (autocast keeps fp32 weights)
};

class FoundationModelImpl : public torch::nn::Module {
 public:
  explicit FoundationModelImpl(const FoundationModelConfig& c);
  // [B, 3, H, W] in [-1, 1] -> patch tokens after the final norm, prefix tokens dropped, as a grid
  // [B, D, h, w] (h, w = the ViT's token grid). Frozen: no gradients, eval mode.
  torch::Tensor features(const torch::Tensor& images);
  // Loads timm or official-release weights (see to_timm_names); names the wrong width or family.
  void load_weights(const std::string& path);
  FoundationModelConfig config;
  ViT vit{nullptr};
};
TORCH_MODULE(FoundationModel);

// What the config's `use_vf` and foundation keys say.
struct FoundationSpec {
  std::string use_vf = "dinov2";  // dinov2 | mae | a timm ViT name | a checkpoint written by train-fm
  std::string weights;            // the weight file (a train-fm checkpoint is its own)
  std::string input_mode = "upstream";
  int64_t input_size = -1;        // -1: the family's (224 for DINOv2, none for MAE, train-fm's own)
  bool bf16 = false;
};

// Builds and loads the frozen foundation model; a missing weight file is an Error.
FoundationModel make_foundation_model(const FoundationSpec& spec);

// A train-fm checkpoint (its architecture comes from its metadata).
FoundationModel load_foundation_model(const std::string& path, const std::string& input_mode);

}  // namespace vavae::nn
