#pragma once
#include <torch/torch.h>

#include <vector>

#include "vavae/nn/convolution.h"

// The LDM AutoencoderKL used by VA-VAE. Submodules are registered under the original names and in
// the original order, so named_parameters() yields the upstream state_dict keys
// (encoder.down.0.block.0.norm1.weight, ...) and loading weights is a lookup.
namespace vavae::nn {

// The upstream `ddconfig` plus `embed_dim`; defaults are the released f16d32 model.
struct AutoencoderConfig {
  int64_t ch = 128;
  std::vector<int64_t> ch_mult{1, 1, 2, 2, 4};
  int64_t num_res_blocks = 2;
  std::vector<int64_t> attn_resolutions{16};
  int64_t z_channels = 32;
  int64_t embed_dim = 32;
  bool double_z = true;
  int64_t in_channels = 3;
  int64_t out_ch = 3;
  int64_t resolution = 256;
  double dropout = 0.0;

  int64_t downsample_factor() const { return int64_t{1} << (ch_mult.size() - 1); }
};

struct ResnetBlockImpl : torch::nn::Module {
  ResnetBlockImpl(int64_t in, int64_t out, double dropout);
  torch::Tensor forward(torch::Tensor x);  // [B, in, H, W] -> [B, out, H, W]
  torch::nn::GroupNorm norm1{nullptr}, norm2{nullptr};
  Conv2d conv1{nullptr}, conv2{nullptr}, nin_shortcut{nullptr};  // shortcut only when in != out
  torch::nn::Dropout dropout{nullptr};
};
TORCH_MODULE(ResnetBlock);

// Single-head self-attention over the H*W positions with 1x1-conv projections.
struct AttnBlockImpl : torch::nn::Module {
  explicit AttnBlockImpl(int64_t channels);
  torch::Tensor forward(torch::Tensor x);  // [B, C, H, W] -> [B, C, H, W]
  torch::nn::GroupNorm norm{nullptr};
  Conv2d q{nullptr}, k{nullptr}, v{nullptr}, proj_out{nullptr};
};
TORCH_MODULE(AttnBlock);

// Pad right/bottom by one, then a 3x3 stride-2 convolution without padding.
struct DownsampleImpl : torch::nn::Module {
  explicit DownsampleImpl(int64_t channels);
  torch::Tensor forward(torch::Tensor x);  // [B, C, H, W] -> [B, C, H/2, W/2]
  Conv2d conv{nullptr};
};
TORCH_MODULE(Downsample);

// Nearest-neighbour x2, then a 3x3 convolution.
struct UpsampleImpl : torch::nn::Module {
  explicit UpsampleImpl(int64_t channels);
  torch::Tensor forward(torch::Tensor x);  // [B, C, H, W] -> [B, C, 2H, 2W]
  Conv2d conv{nullptr};
};
TORCH_MODULE(Upsample);

// One resolution level: `block` and `attn` lists plus an optional resampler.
struct LevelImpl : torch::nn::Module {
  torch::nn::ModuleList block, attn;
  Downsample downsample{nullptr};
  Upsample upsample{nullptr};
};
TORCH_MODULE(Level);

// block_1 -> attn_1 -> block_2 at the lowest resolution.
struct MidImpl : torch::nn::Module {
  MidImpl(int64_t channels, double dropout);
  torch::Tensor forward(torch::Tensor x);
  ResnetBlock block_1{nullptr}, block_2{nullptr};
  AttnBlock attn_1{nullptr};
};
TORCH_MODULE(Mid);

struct EncoderImpl : torch::nn::Module {
  explicit EncoderImpl(const AutoencoderConfig& c);
  torch::Tensor forward(torch::Tensor x);  // [B, in_channels, H, W] -> [B, (2x)z_channels, H/f, W/f]
  Conv2d conv_in{nullptr}, conv_out{nullptr};
  torch::nn::ModuleList down;
  Mid mid{nullptr};
  torch::nn::GroupNorm norm_out{nullptr};
};
TORCH_MODULE(Encoder);

struct DecoderImpl : torch::nn::Module {
  explicit DecoderImpl(const AutoencoderConfig& c);
  torch::Tensor forward(torch::Tensor z);  // [B, z_channels, h, w] -> [B, out_ch, h*f, w*f]
  Conv2d conv_in{nullptr}, conv_out{nullptr};
  Mid mid{nullptr};
  torch::nn::ModuleList up;
  torch::nn::GroupNorm norm_out{nullptr};
};
TORCH_MODULE(Decoder);

// The diagonal Gaussian posterior q(z|x) from the quantised moments.
struct DiagonalGaussian {
  explicit DiagonalGaussian(const torch::Tensor& moments);  // [B, 2E, h, w]
  torch::Tensor mean, logvar, std, var;                     // [B, E, h, w]; logvar clamped to [-30, 20]
  // mean + std * noise; noise ~ N(0, 1) drawn on the CPU generator (as upstream), then moved.
  torch::Tensor sample(c10::optional<torch::Generator> generator = c10::nullopt) const;
  torch::Tensor sample_with(const torch::Tensor& noise) const { return mean + std * noise; }
  torch::Tensor mode() const { return mean; }
  torch::Tensor kl() const;  // [B]: 0.5 * sum_{C,H,W}(mean^2 + var - 1 - logvar)
};

// silu(norm(x)), the normalisation followed by the nonlinearity in every block: backward keeps x
// and the group statistics, not the normalised activations.
torch::Tensor group_norm_silu(torch::nn::GroupNorm& norm, const torch::Tensor& x);
// The same, free to overwrite x where no autograd graph needs it: for an x used nowhere after.
torch::Tensor group_norm_silu_(torch::nn::GroupNorm& norm, torch::Tensor x);

// The halves a model is built with: encoding alone (encode, extract-latents) needs no decoder, and
// decoding alone (decode, generation) no encoder; their weights are then neither allocated nor read.
enum class AutoencoderParts { both, encoder, decoder };

struct AutoencoderKLImpl : torch::nn::Module {
  explicit AutoencoderKLImpl(const AutoencoderConfig& c, AutoencoderParts parts = AutoencoderParts::both);
  torch::Tensor encode_moments(const torch::Tensor& x);  // [B, 3, H, W] -> [B, 2E, H/f, W/f]
  DiagonalGaussian encode(const torch::Tensor& x) { return DiagonalGaussian(encode_moments(x)); }
  torch::Tensor decode(const torch::Tensor& z);          // [B, E, h, w] -> [B, 3, h*f, w*f]
  AutoencoderConfig config;
  Encoder encoder{nullptr};
  Decoder decoder{nullptr};
  Conv2d quant_conv{nullptr}, post_quant_conv{nullptr};
};
TORCH_MODULE(AutoencoderKL);

}  // namespace vavae::nn
