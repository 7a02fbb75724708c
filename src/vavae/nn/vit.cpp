#include "vavae/nn/vit.h"

#include <nlohmann/json.hpp>

#include <cmath>

#include "vavae/common/error.h"
#include "vavae/common/runtime.h"

namespace vavae::nn {
namespace {

namespace F = torch::nn::functional;

torch::nn::LayerNorm layer_norm(int64_t dim, double eps) {
  return torch::nn::LayerNorm(torch::nn::LayerNormOptions({dim}).eps(eps));
}

}  // namespace

ViTConfig vit_preset(const std::string& full_name) {
  const std::string name = full_name.substr(0, full_name.find('.'));
  ViTConfig c;
  auto dinov2 = [&](int64_t dim, int64_t depth, int64_t heads, bool registers) {
    c.patch_size = 14, c.embed_dim = dim, c.depth = depth, c.num_heads = heads, c.mlp_hidden = 4 * dim;
    c.layerscale = true, c.pos_grid = 37;
    if (registers) c.reg_tokens = 4, c.no_embed_class = true;
  };
  for (bool reg : {false, true}) {
    const std::string tail = reg ? "_patch14_reg4_dinov2" : "_patch14_dinov2";
    if (name == "vit_small" + tail) dinov2(384, 12, 6, reg);
    else if (name == "vit_base" + tail) dinov2(768, 12, 12, reg);
    else if (name == "vit_large" + tail) dinov2(1024, 24, 16, reg);
    else if (name == "vit_giant2" + tail || name == "vit_giant" + tail) {
      dinov2(1536, 40, 24, reg);
      c.mlp_hidden = 8192, c.swiglu = true;
    } else continue;
    return c;
  }
  if (name == "vit_large_patch16_224") {  // MAE
    c.patch_size = 16, c.embed_dim = 1024, c.depth = 24, c.num_heads = 16, c.mlp_hidden = 4096;
    c.layerscale = false, c.pos_grid = 14;
    return c;
  }
  throw Error("unknown ViT '" + full_name + "' (known: vit_{small,base,large,giant2}_patch14[_reg4]_dinov2, vit_large_patch16_224.mae)");
}

ViTBlockImpl::ViTBlockImpl(const ViTConfig& c) : num_heads(c.num_heads), swiglu(c.swiglu) {
  const int64_t d = c.embed_dim;
  norm1 = register_module("norm1", layer_norm(d, c.norm_eps));
  auto attn = register_module("attn", std::make_shared<torch::nn::Module>());
  qkv = attn->register_module("qkv", torch::nn::Linear(d, 3 * d));
  proj = attn->register_module("proj", torch::nn::Linear(d, d));
  if (c.layerscale) {
    auto ls = register_module("ls1", std::make_shared<torch::nn::Module>());
    ls1 = ls->register_parameter("gamma", torch::ones({d}));
  }
  norm2 = register_module("norm2", layer_norm(d, c.norm_eps));
  auto mlp = register_module("mlp", std::make_shared<torch::nn::Module>());
  fc1 = mlp->register_module("fc1", torch::nn::Linear(d, c.mlp_hidden));
  fc2 = mlp->register_module("fc2", torch::nn::Linear(c.swiglu ? c.mlp_hidden / 2 : c.mlp_hidden, d));
  if (c.layerscale) {
    auto ls = register_module("ls2", std::make_shared<torch::nn::Module>());
    ls2 = ls->register_parameter("gamma", torch::ones({d}));
  }
}

torch::Tensor ViTBlockImpl::attention(const torch::Tensor& x) {
  const int64_t b = x.size(0), n = x.size(1), d = x.size(2), hd = d / num_heads;
  const auto qkv_heads = qkv(x).reshape({b, n, 3, num_heads, hd}).permute({2, 0, 3, 1, 4});  // [3, B, heads, N, hd]
  const torch::Tensor q = qkv_heads[0] * std::pow(static_cast<double>(hd), -0.5);
  const torch::Tensor attn = torch::softmax(torch::matmul(q, qkv_heads[1].transpose(-2, -1)), -1);
  return proj(torch::matmul(attn, qkv_heads[2]).transpose(1, 2).reshape({b, n, d}));
}

torch::Tensor ViTBlockImpl::mlp_forward(const torch::Tensor& x) {
  torch::Tensor h = fc1(x);
  if (swiglu) {
    auto halves = h.chunk(2, -1);
    h = torch::silu(halves[0]) * halves[1];
  } else {
    h = torch::gelu(h);
  }
  return fc2(h);
}

torch::Tensor ViTBlockImpl::forward(const torch::Tensor& x) {
  torch::Tensor a = attention(norm1(x));
  if (ls1.defined()) a = a * ls1;
  const torch::Tensor y = x + a;
  torch::Tensor m = mlp_forward(norm2(y));
  if (ls2.defined()) m = m * ls2;
  return y + m;
}

ViTImpl::ViTImpl(const ViTConfig& c) : config(c) {
  if (c.embed_dim % c.num_heads != 0)
    throw Error("ViT: embed_dim " + std::to_string(c.embed_dim) + " is not divisible by num_heads " + std::to_string(c.num_heads));
  const int64_t d = c.embed_dim;
  if (c.class_token) cls_token = register_parameter("cls_token", torch::zeros({1, 1, d}));
  if (c.reg_tokens > 0) reg_token = register_parameter("reg_token", torch::zeros({1, c.reg_tokens, d}));
  const int64_t table = c.pos_grid * c.pos_grid + (c.no_embed_class ? 0 : c.num_prefix_tokens());
  pos_embed = register_parameter("pos_embed", torch::randn({1, table, d}) * 0.02);
  auto pe = register_module("patch_embed", std::make_shared<torch::nn::Module>());
  proj = pe->register_module("proj", torch::nn::Conv2d(torch::nn::Conv2dOptions(c.in_chans, d, c.patch_size).stride(c.patch_size)));
  blocks = register_module("blocks", torch::nn::ModuleList());
  for (int64_t i = 0; i < c.depth; ++i) blocks->push_back(ViTBlock(c));
  norm = register_module("norm", layer_norm(d, c.norm_eps));
}

torch::Tensor ViTImpl::patch_embed(const torch::Tensor& x) {
  if (x.dim() != 4 || x.size(1) != config.in_chans)
    throw Error("ViT input must be [B," + std::to_string(config.in_chans) + ",H,W], got " + shape_string(x.sizes()));
  if (x.size(2) % config.patch_size != 0 || x.size(3) % config.patch_size != 0)
    throw Error("ViT input " + std::to_string(x.size(2)) + "x" + std::to_string(x.size(3)) +
                " is not divisible by the patch size " + std::to_string(config.patch_size));
  return proj(x).permute({0, 2, 3, 1});
}

torch::Tensor ViTImpl::resampled_pos_embed(int64_t h, int64_t w) const {
  if (h == config.pos_grid && w == config.pos_grid) return pos_embed;
  const int64_t prefix = config.no_embed_class ? 0 : config.num_prefix_tokens();
  const int64_t d = config.embed_dim;
  const torch::Tensor grid = pos_embed.slice(1, prefix).to(torch::kFloat32).reshape({1, config.pos_grid, config.pos_grid, d}).permute({0, 3, 1, 2});
  const torch::Tensor resized = F::interpolate(grid, F::InterpolateFuncOptions()
                                                         .size(std::vector<int64_t>{h, w})
                                                         .mode(torch::kBicubic)
                                                         .align_corners(false)
                                                         .antialias(true))
                                    .permute({0, 2, 3, 1})
                                    .reshape({1, h * w, d})
                                    .to(pos_embed.scalar_type());
  return prefix ? torch::cat({pos_embed.slice(1, 0, prefix), resized}, 1) : resized;
}

torch::Tensor ViTImpl::forward_features(const torch::Tensor& x) {
  const torch::Tensor patches = patch_embed(x);  // [B, h, w, D]
  const int64_t b = patches.size(0), h = patches.size(1), w = patches.size(2);
  torch::Tensor tokens = patches.reshape({b, h * w, config.embed_dim});
  const torch::Tensor pos = resampled_pos_embed(h, w);
  std::vector<torch::Tensor> prefix;
  if (cls_token.defined()) prefix.push_back(cls_token.expand({b, -1, -1}));
  if (reg_token.defined()) prefix.push_back(reg_token.expand({b, -1, -1}));
  if (config.no_embed_class) {
    tokens = tokens + pos;
    prefix.push_back(tokens);
    tokens = torch::cat(prefix, 1);
  } else {
    prefix.push_back(tokens);
    tokens = torch::cat(prefix, 1) + pos;
  }
  for (const auto& block : *blocks) tokens = block->as<ViTBlock>()->forward(tokens);
  return norm(tokens);
}

std::string vit_config_to_json(const ViTConfig& c) {
  return nlohmann::json{{"patch_size", c.patch_size},   {"embed_dim", c.embed_dim},     {"depth", c.depth},
                        {"num_heads", c.num_heads},     {"mlp_hidden", c.mlp_hidden},   {"swiglu", c.swiglu},
                        {"class_token", c.class_token}, {"reg_tokens", c.reg_tokens},   {"no_embed_class", c.no_embed_class},
                        {"layerscale", c.layerscale},   {"pos_grid", c.pos_grid},       {"norm_eps", c.norm_eps},
                        {"in_chans", c.in_chans}}
      .dump();
}

ViTConfig vit_config_from_json(const std::string& text, const std::string& source) {
  try {
    const auto j = nlohmann::json::parse(text);
    ViTConfig c;
    c.patch_size = j.at("patch_size"), c.embed_dim = j.at("embed_dim"), c.depth = j.at("depth");
    c.num_heads = j.at("num_heads"), c.mlp_hidden = j.at("mlp_hidden"), c.swiglu = j.at("swiglu");
    c.class_token = j.at("class_token"), c.reg_tokens = j.at("reg_tokens"), c.no_embed_class = j.at("no_embed_class");
    c.layerscale = j.at("layerscale"), c.pos_grid = j.at("pos_grid"), c.norm_eps = j.at("norm_eps");
    c.in_chans = j.at("in_chans");
    return c;
  } catch (const nlohmann::json::exception& e) {
    throw Error(source + ": bad ViT config in the metadata: " + e.what());
  }
}

io::NamedTensors to_timm_names(const io::NamedTensors& tensors) {
  // The official DINOv2 register models add pos_embed[:, 0] to the class token; timm folds it into
  // cls_token and keeps a table of the patch positions only (no_embed_class).
  torch::Tensor registers, cls, pos;
  for (const auto& [k, t] : tensors) {
    if (k == "register_tokens") registers = t;
    if (k == "cls_token") cls = t;
    if (k == "pos_embed") pos = t;
  }
  const bool fold_class_position = registers.defined() && cls.defined() && pos.defined() && pos.dim() == 3 &&
                                   std::lround(std::sqrt(static_cast<double>(pos.size(1) - 1))) *
                                           std::lround(std::sqrt(static_cast<double>(pos.size(1) - 1))) ==
                                       pos.size(1) - 1;
  io::NamedTensors out;
  for (const auto& [key, t] : tensors) {
    std::string k = key;
    if (k.rfind("model.", 0) == 0) k = k.substr(6);  // MAE / training-script checkpoints
    if (k == "mask_token") continue;  // DINOv2's iBOT mask embedding: not part of the encoder
    if (k == "register_tokens") k = "reg_token";
    if (fold_class_position && k == "cls_token") {
      out.emplace_back(k, t + pos.slice(1, 0, 1));
      continue;
    }
    if (fold_class_position && k == "pos_embed") {
      out.emplace_back(k, t.slice(1, 1));
      continue;
    }
    const auto w12 = k.find(".mlp.w12.");
    if (w12 != std::string::npos) k.replace(w12, 9, ".mlp.fc1.");
    const auto w3 = k.find(".mlp.w3.");
    if (w3 != std::string::npos) k.replace(w3, 8, ".mlp.fc2.");
    out.emplace_back(k, t);
  }
  return out;
}

}  // namespace vavae::nn
