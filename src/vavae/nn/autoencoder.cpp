#include "vavae/nn/autoencoder.h"

#include <algorithm>
#include <cmath>

#include "vavae/common/error.h"
#include "vavae/nn/group_norm_silu_kernel.h"

namespace vavae::nn {
namespace {

namespace F = torch::nn::functional;

torch::nn::GroupNorm normalize(int64_t channels) {
  return torch::nn::GroupNorm(torch::nn::GroupNormOptions(32, channels).eps(1e-6).affine(true));
}

// GroupNorm in its weights' dtype: under bf16 autocast a convolution's bf16 output is normalised in
// fp32, as CUDA's autocast does for group_norm (LibTorch 1.13's CPU kernel rejects mixed dtypes).
torch::Tensor group_norm(torch::nn::GroupNorm& norm, const torch::Tensor& x) { return norm(x.to(norm->weight.scalar_type())); }

Conv2d conv(int64_t in, int64_t out, int64_t kernel, int64_t stride = 1, int64_t padding = 0) {
  return Conv2d(torch::nn::Conv2dOptions(in, out, kernel).stride(stride).padding(padding));
}

// group_norm(x) of a contiguous x, with the per-(sample, group) mean and 1/std.
std::tuple<torch::Tensor, torch::Tensor, torch::Tensor> normalize_groups(const torch::Tensor& x, const torch::Tensor& weight,
                                                                        const torch::Tensor& bias, int64_t groups, double eps) {
  const int64_t n = x.size(0), c = x.size(1);
  return torch::native_group_norm(x, weight, bias, n, c, x.numel() / (n * c), groups, eps);
}

// silu(group_norm(x)) whose backward recomputes the normalised activations from x and the group
// statistics instead of keeping them: one activation-sized tensor less per block for the whole
// step (about 500 MB of an f16d32 step at 256 px), for one element-wise pass in backward.
struct GroupNormSiLU : torch::autograd::Function<GroupNormSiLU> {
  static torch::Tensor forward(torch::autograd::AutogradContext* ctx, const torch::Tensor& x, const torch::Tensor& weight,
                               const torch::Tensor& bias, int64_t groups, double eps) {
    // ATen's forward, not GroupNormSiLUInference: a step with either is as fast (within noise), and
    // the two-rank equivalence test (DataParallel.TwoRanksWithGlobalAdaptiveWeights...) sits at the
    // edge of the GAN weight's amplification of rounding, where float64 statistics moved step 8's
    // drift from 0.02 to 3.
    const torch::Tensor input = x.contiguous();
    auto [out, mean, rstd] = normalize_groups(input, weight, bias, groups, eps);
    ctx->save_for_backward({input, weight, bias, mean, rstd});
    ctx->saved_data["groups"] = groups;
    return torch::silu_(out);
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx, torch::autograd::variable_list grads) {
    const auto saved = ctx->get_saved_variables();
    const torch::Tensor &x = saved[0], &weight = saved[1], &bias = saved[2], &mean = saved[3], &rstd = saved[4];
    const int64_t n = x.size(0), c = x.size(1), groups = ctx->saved_data["groups"].toInt();
    if (GroupNormSiLUBackward::applies(x, grads[0], weight, bias)) {
      auto [dx, dweight, dbias] = GroupNormSiLUBackward::run(x, grads[0], weight, bias, mean, rstd, groups);
      return {dx, ctx->needs_input_grad(1) ? dweight : torch::Tensor(), ctx->needs_input_grad(2) ? dbias : torch::Tensor(),
              torch::Tensor(), torch::Tensor()};
    }
    // group_norm(x) = x * scale + shift per (sample, channel)
    const torch::Tensor scale = (rstd.view({n, groups, 1}) * weight.view({1, groups, c / groups})).view({n, c});
    const torch::Tensor shift = bias.view({1, c}) - mean.view({n, groups, 1}).expand({n, groups, c / groups}).reshape({n, c}) * scale;
    std::vector<int64_t> per_channel{n, c};
    per_channel.resize(static_cast<size_t>(x.dim()), 1);
    const torch::Tensor normalized = torch::addcmul(shift.view(per_channel), x, scale.view(per_channel));
    const torch::Tensor grad_normalized = torch::silu_backward(grads[0].contiguous(), normalized);
    const auto [dx, dweight, dbias] =
        torch::native_group_norm_backward(grad_normalized, x, mean, rstd, weight, n, c, x.numel() / (n * c), groups,
                                          {ctx->needs_input_grad(0), ctx->needs_input_grad(1), ctx->needs_input_grad(2)});
    return {dx, dweight, dbias, torch::Tensor(), torch::Tensor()};
  }

};

}  // namespace

namespace {

torch::Tensor group_norm_silu_into(torch::nn::GroupNorm& norm, const torch::Tensor& x, bool overwrite) {
  const torch::Tensor input = x.to(norm->weight.scalar_type());
  const auto& o = norm->options;
  const bool differentiable = torch::GradMode::is_enabled() && (input.requires_grad() || norm->weight.requires_grad());
  if (differentiable) return GroupNormSiLU::apply(input, norm->weight, norm->bias, o.num_groups(), o.eps());
  if (GroupNormSiLUInference::applies(input, norm->weight, norm->bias)) {
    torch::Tensor out = overwrite ? input : torch::empty_like(input);
    GroupNormSiLUInference::run(input, out, norm->weight, norm->bias, o.num_groups(), o.eps());
    return out;
  }
  torch::Tensor out = std::get<0>(normalize_groups(input.contiguous(), norm->weight, norm->bias, o.num_groups(), o.eps()));
  return torch::silu_(out);
}

}  // namespace

// Upstream writes x * sigmoid(x); the fused SiLU is the same function with one rounding less. The
// GroupNorm runs in its weights' dtype (see group_norm above).
torch::Tensor group_norm_silu(torch::nn::GroupNorm& norm, const torch::Tensor& x) { return group_norm_silu_into(norm, x, false); }

torch::Tensor group_norm_silu_(torch::nn::GroupNorm& norm, torch::Tensor x) { return group_norm_silu_into(norm, x, true); }

namespace {

bool contains(const std::vector<int64_t>& v, int64_t x) { return std::find(v.begin(), v.end(), x) != v.end(); }

}  // namespace

ResnetBlockImpl::ResnetBlockImpl(int64_t in, int64_t out, double p) {
  norm1 = register_module("norm1", normalize(in));
  conv1 = register_module("conv1", conv(in, out, 3, 1, 1));
  norm2 = register_module("norm2", normalize(out));
  dropout = register_module("dropout", torch::nn::Dropout(p));
  conv2 = register_module("conv2", conv(out, out, 3, 1, 1));
  if (in != out) nin_shortcut = register_module("nin_shortcut", conv(in, out, 1));
}

torch::Tensor ResnetBlockImpl::forward(torch::Tensor x) {
  torch::Tensor h = conv1(group_norm_silu(norm1, x));
  h = conv2(dropout(group_norm_silu_(norm2, std::move(h))));
  if (nin_shortcut) x = nin_shortcut(x);
  return h.add_(x);  // in place on the conv output, which no backward formula needs
}

AttnBlockImpl::AttnBlockImpl(int64_t channels) {
  norm = register_module("norm", normalize(channels));
  q = register_module("q", conv(channels, channels, 1));
  k = register_module("k", conv(channels, channels, 1));
  v = register_module("v", conv(channels, channels, 1));
  proj_out = register_module("proj_out", conv(channels, channels, 1));
}

torch::Tensor AttnBlockImpl::forward(torch::Tensor x) {
  const torch::Tensor h = group_norm(norm, x);
  const int64_t b = x.size(0), c = x.size(1), hw = x.size(2) * x.size(3);
  const torch::Tensor query = q(h).reshape({b, c, hw}).permute({0, 2, 1});  // [B, N, C]
  const torch::Tensor key = k(h).reshape({b, c, hw});                       // [B, C, N]
  const torch::Tensor value = v(h).reshape({b, c, hw});                     // [B, C, N]
  const torch::Tensor weights =
      torch::softmax(torch::bmm(query, key) * std::pow(static_cast<double>(c), -0.5), 2);  // [B, Nq, Nk]
  const torch::Tensor out = torch::bmm(value, weights.permute({0, 2, 1})).reshape(x.sizes());  // [B, C, N]
  return proj_out(out).add_(x);
}

DownsampleImpl::DownsampleImpl(int64_t channels) { conv = register_module("conv", nn::conv(channels, channels, 3, 2, 0)); }

torch::Tensor DownsampleImpl::forward(torch::Tensor x) {
  return conv(F::pad(x, F::PadFuncOptions({0, 1, 0, 1}).mode(torch::kConstant).value(0)));
}

UpsampleImpl::UpsampleImpl(int64_t channels) { conv = register_module("conv", nn::conv(channels, channels, 3, 1, 1)); }

torch::Tensor UpsampleImpl::forward(torch::Tensor x) {
  return conv(F::interpolate(x, F::InterpolateFuncOptions().scale_factor(std::vector<double>{2.0, 2.0}).mode(torch::kNearest)));
}

MidImpl::MidImpl(int64_t channels, double dropout) {
  block_1 = register_module("block_1", ResnetBlock(channels, channels, dropout));
  attn_1 = register_module("attn_1", AttnBlock(channels));
  block_2 = register_module("block_2", ResnetBlock(channels, channels, dropout));
}

torch::Tensor MidImpl::forward(torch::Tensor x) { return block_2(attn_1(block_1(x))); }

namespace {

// The blocks of one level, each followed by its attention block where the level has them.
torch::Tensor run_level(LevelImpl& level, torch::Tensor h) {
  for (size_t i = 0; i < level.block->size(); ++i) {
    h = level.block[i]->as<ResnetBlock>()->forward(h);
    if (!level.attn->is_empty()) h = level.attn[i]->as<AttnBlock>()->forward(h);
  }
  return h;
}

}  // namespace

EncoderImpl::EncoderImpl(const AutoencoderConfig& c) {
  conv_in = register_module("conv_in", conv(c.in_channels, c.ch, 3, 1, 1));
  down = register_module("down", torch::nn::ModuleList());
  int64_t resolution = c.resolution;
  int64_t block_in = c.ch;
  const size_t levels = c.ch_mult.size();
  for (size_t i = 0; i < levels; ++i) {
    Level level;
    level->block = level->register_module("block", torch::nn::ModuleList());
    level->attn = level->register_module("attn", torch::nn::ModuleList());
    const int64_t block_out = c.ch * c.ch_mult[i];
    for (int64_t j = 0; j < c.num_res_blocks; ++j) {
      level->block->push_back(ResnetBlock(block_in, block_out, c.dropout));
      block_in = block_out;
      if (contains(c.attn_resolutions, resolution)) level->attn->push_back(AttnBlock(block_in));
    }
    if (i + 1 != levels) {
      level->downsample = level->register_module("downsample", Downsample(block_in));
      resolution /= 2;
    }
    down->push_back(level);
  }
  mid = register_module("mid", Mid(block_in, c.dropout));
  norm_out = register_module("norm_out", normalize(block_in));
  conv_out = register_module("conv_out", conv(block_in, c.double_z ? 2 * c.z_channels : c.z_channels, 3, 1, 1));
}

torch::Tensor EncoderImpl::forward(torch::Tensor x) {
  torch::Tensor h = conv_in(x);
  for (const auto& module : *down) {
    auto& level = *module->as<Level>();
    h = run_level(level, h);
    if (level.downsample) h = level.downsample(h);
  }
  h = mid(h);
  return conv_out(group_norm_silu_(norm_out, std::move(h)));
}

DecoderImpl::DecoderImpl(const AutoencoderConfig& c) {
  const size_t levels = c.ch_mult.size();
  int64_t block_in = c.ch * c.ch_mult.back();
  int64_t resolution = c.resolution >> (levels - 1);
  conv_in = register_module("conv_in", conv(c.z_channels, block_in, 3, 1, 1));
  mid = register_module("mid", Mid(block_in, c.dropout));
  // Built from the lowest resolution up, registered as up.0 (highest resolution) .. up.L-1.
  std::vector<Level> built(levels, Level(nullptr));
  for (size_t i = levels; i-- > 0;) {
    Level level;
    level->block = level->register_module("block", torch::nn::ModuleList());
    level->attn = level->register_module("attn", torch::nn::ModuleList());
    const int64_t block_out = c.ch * c.ch_mult[i];
    for (int64_t j = 0; j <= c.num_res_blocks; ++j) {
      level->block->push_back(ResnetBlock(block_in, block_out, c.dropout));
      block_in = block_out;
      if (contains(c.attn_resolutions, resolution)) level->attn->push_back(AttnBlock(block_in));
    }
    if (i != 0) {
      level->upsample = level->register_module("upsample", Upsample(block_in));
      resolution *= 2;
    }
    built[i] = level;
  }
  up = register_module("up", torch::nn::ModuleList());
  for (auto& level : built) up->push_back(level);
  norm_out = register_module("norm_out", normalize(block_in));
  conv_out = register_module("conv_out", conv(block_in, c.out_ch, 3, 1, 1));
}

torch::Tensor DecoderImpl::forward(torch::Tensor z) {
  torch::Tensor h = mid(conv_in(z));
  for (size_t i = up->size(); i-- > 0;) {
    auto& level = *up[i]->as<Level>();
    h = run_level(level, h);
    if (level.upsample) h = level.upsample(h);
  }
  return conv_out(group_norm_silu_(norm_out, std::move(h)));
}

DiagonalGaussian::DiagonalGaussian(const torch::Tensor& moments) {
  auto halves = moments.chunk(2, 1);
  mean = halves[0];
  logvar = torch::clamp(halves[1], -30.0, 20.0);
  std = torch::exp(0.5 * logvar);
  var = torch::exp(logvar);
}

torch::Tensor DiagonalGaussian::sample(c10::optional<torch::Generator> generator) const {
  const torch::Tensor noise = at::randn(mean.sizes(), generator, torch::TensorOptions().dtype(mean.dtype()));
  return sample_with(noise.to(mean.device()));
}

torch::Tensor DiagonalGaussian::kl() const {
  return 0.5 * torch::sum(torch::pow(mean, 2) + var - 1.0 - logvar, {1, 2, 3});
}

AutoencoderKLImpl::AutoencoderKLImpl(const AutoencoderConfig& c, AutoencoderParts parts) : config(c) {
  // Registered in upstream's state_dict order: encoder, decoder, quant_conv, post_quant_conv.
  const bool with_encoder = parts != AutoencoderParts::decoder, with_decoder = parts != AutoencoderParts::encoder;
  if (with_encoder) encoder = register_module("encoder", Encoder(c));
  if (with_decoder) decoder = register_module("decoder", Decoder(c));
  const int64_t moments_in = c.double_z ? 2 * c.z_channels : c.z_channels;
  if (with_encoder) quant_conv = register_module("quant_conv", conv(moments_in, 2 * c.embed_dim, 1));
  if (with_decoder) post_quant_conv = register_module("post_quant_conv", conv(c.embed_dim, c.z_channels, 1));
}

// Both return their input's dtype: under bf16 autocast the last convolution gives bf16, and the
// posterior, the KL and the losses are computed in fp32.
torch::Tensor AutoencoderKLImpl::encode_moments(const torch::Tensor& x) {
  if (!encoder) throw Error("this autoencoder was built without its encoder (decoding only)");
  return quant_conv(encoder(x)).to(x.scalar_type());
}

torch::Tensor AutoencoderKLImpl::decode(const torch::Tensor& z) {
  if (!decoder) throw Error("this autoencoder was built without its decoder (encoding only)");
  return decoder(post_quant_conv(z)).to(z.scalar_type());
}

}  // namespace vavae::nn
