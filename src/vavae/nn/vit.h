#pragma once
#include <torch/torch.h>

#include <string>
#include <vector>

#include "vavae/io/safetensors.h"

// A Vision Transformer with timm's parameter names and numerics (timm 1.0.12
// VisionTransformer with dynamic_img_size): DINOv2 (LayerScale, optional register tokens,
// SwiGLU for giant), MAE and plain ViTs. Position embeddings are resampled to the input's token
// grid as timm does (bicubic with antialias, prefix tokens untouched).
namespace vavae::nn {

struct ViTConfig {
  int64_t patch_size = 14;
  int64_t embed_dim = 1024;
  int64_t depth = 24;
  int64_t num_heads = 16;
  int64_t mlp_hidden = 4096;       // fc1 output features (for SwiGLU: both halves)
  bool swiglu = false;             // SwiGLUPacked MLP (DINOv2 giant): silu(first half) * second half
  bool class_token = true;
  int64_t reg_tokens = 0;          // DINOv2 register tokens
  bool no_embed_class = false;     // position table covers the patch tokens only (register models)
  bool layerscale = true;          // ls1 / ls2 gamma
  int64_t pos_grid = 37;           // the stored position table is pos_grid x pos_grid
  double norm_eps = 1e-6;
  int64_t in_chans = 3;

  int64_t num_prefix_tokens() const { return (class_token ? 1 : 0) + reg_tokens; }
};

// timm's builder names: vit_{small,base,large,giant2}_patch14_dinov2, ..._reg4_dinov2 and
// vit_large_patch16_224.mae (the `.lvd142m` / `.mae` tags may be given). Error for other names.
ViTConfig vit_preset(const std::string& name);

struct ViTBlockImpl : torch::nn::Module {
  ViTBlockImpl(const ViTConfig& c);
  torch::Tensor forward(const torch::Tensor& x);  // [B, N, D] -> [B, N, D]
  torch::Tensor attention(const torch::Tensor& x);
  torch::Tensor mlp_forward(const torch::Tensor& x);
  int64_t num_heads;
  bool swiglu;
  torch::nn::LayerNorm norm1{nullptr}, norm2{nullptr};
  torch::nn::Linear qkv{nullptr}, proj{nullptr}, fc1{nullptr}, fc2{nullptr};
  torch::Tensor ls1, ls2;  // LayerScale gammas (undefined without LayerScale)
};
TORCH_MODULE(ViTBlock);

struct ViTImpl : torch::nn::Module {
  explicit ViTImpl(const ViTConfig& c);
  // [B, 3, H, W] (H, W multiples of the patch size) -> tokens after the final norm:
  // [B, prefix + h*w, D], order: class, registers, patches row-major.
  torch::Tensor forward_features(const torch::Tensor& x);
  torch::Tensor patch_embed(const torch::Tensor& x);             // [B, 3, H, W] -> [B, h, w, D]
  torch::Tensor resampled_pos_embed(int64_t h, int64_t w) const;  // [1, (prefix) + h*w, D]
  ViTConfig config;
  torch::Tensor cls_token, reg_token, pos_embed;
  torch::nn::Conv2d proj{nullptr};
  torch::nn::ModuleList blocks;
  torch::nn::LayerNorm norm{nullptr};
};
TORCH_MODULE(ViT);

// The config as JSON (stored in the safetensors metadata of the ViTs vavae trains), and back.
std::string vit_config_to_json(const ViTConfig& c);
ViTConfig vit_config_from_json(const std::string& json, const std::string& source);

// Renames a state dict to timm's names: the official DINOv2 release (`register_tokens`,
// `mlp.w12` / `mlp.w3`, `mask_token` dropped) and MAE's own checkpoints (`model.` prefix) are
// recognised; timm's names pass through.
io::NamedTensors to_timm_names(const io::NamedTensors& tensors);

}  // namespace vavae::nn
