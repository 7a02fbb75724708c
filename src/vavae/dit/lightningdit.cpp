#include "vavae/dit/lightningdit.h"

#include <cmath>
#include <map>

#include "vavae/common/error.h"

namespace vavae::dit {
namespace {

namespace F = torch::nn::functional;

torch::Tensor modulate(const torch::Tensor& x, const torch::Tensor& shift, const torch::Tensor& scale) {
  torch::Tensor out = x * (1 + scale.unsqueeze(1));
  return shift.defined() ? out + shift.unsqueeze(1) : out;
}

torch::nn::Sequential modulation(int64_t hidden, int64_t chunks) {
  return torch::nn::Sequential(torch::nn::SiLU(), torch::nn::Linear(hidden, chunks * hidden));
}

const torch::Tensor& record(Trace* trace, const std::string& name, const torch::Tensor& value) {
  if (trace) (*trace)[name] = value;
  return value;
}

// Pairs (x0, x1) -> (-x1, x0) along the last dim.
torch::Tensor rotate_half(const torch::Tensor& x) {
  const torch::Tensor pairs = x.unflatten(-1, {x.size(-1) / 2, 2});
  return torch::stack({-pairs.select(-1, 1), pairs.select(-1, 0)}, -1).flatten(-2);
}

}  // namespace

void LightningDiTConfig::validate() const {
  auto require = [](bool ok, const std::string& what) {
    if (!ok) throw Error("LightningDiT: " + what);
  };
  require(input_size > 0 && patch_size > 0 && input_size % patch_size == 0,
          "input_size " + std::to_string(input_size) + " is not a positive multiple of patch_size " + std::to_string(patch_size));
  require(in_channels > 0 && depth > 0 && num_classes > 0, "in_channels, depth and num_classes must be positive");
  require(num_heads > 0 && hidden_size % num_heads == 0,
          "hidden_size " + std::to_string(hidden_size) + " is not divisible by num_heads " + std::to_string(num_heads));
  require(hidden_size % 4 == 0, "hidden_size " + std::to_string(hidden_size) + " must be a multiple of 4 (2-D sincos positions)");
  require(!use_rope || head_dim() % 4 == 0, "use_rope needs head_dim (hidden_size / num_heads = " + std::to_string(head_dim()) +
                                                ") divisible by 4");
  require(mlp_ratio > 0, "mlp_ratio must be positive");
  require(class_dropout_prob >= 0 && class_dropout_prob < 1, "class_dropout_prob must be in [0, 1)");
  require(!use_checkpoint, "use_checkpoint (gradient checkpointing) is not available; set it to false (it does not change results)");
}

LightningDiTConfig lightningdit_preset(const std::string& name) {
  struct Size {
    int64_t depth, hidden, heads;
  };
  static const std::map<std::string, Size> sizes = {
      {"B", {12, 768, 12}}, {"L", {24, 1024, 16}}, {"XL", {28, 1152, 16}}, {"1p0B", {24, 1536, 24}}, {"1p6B", {28, 1792, 28}}};
  const std::string prefix = "LightningDiT-";
  const auto slash = name.rfind('/');
  const std::string size = name.rfind(prefix, 0) == 0 && slash != std::string::npos ? name.substr(prefix.size(), slash - prefix.size()) : "";
  const std::string patch = slash != std::string::npos ? name.substr(slash + 1) : "";
  if (!sizes.count(size) || (patch != "1" && patch != "2") || (size == "L" && patch == "1"))
    throw Error("unknown LightningDiT model '" + name + "' (upstream's: LightningDiT-B/1, B/2, L/2, XL/1, XL/2, 1p0B/1, 1p0B/2, 1p6B/1, 1p6B/2)");
  LightningDiTConfig c;
  c.depth = sizes.at(size).depth, c.hidden_size = sizes.at(size).hidden, c.num_heads = sizes.at(size).heads;
  c.patch_size = std::stoi(patch);
  return c;
}

torch::Tensor sincos_pos_embed_2d(int64_t dim, int64_t grid) {
  const int64_t quarter = dim / 4;
  const torch::Tensor omega = 1.0 / torch::pow(10000.0, torch::arange(quarter, torch::kFloat64) / static_cast<double>(quarter));
  auto axis = [&](const torch::Tensor& pos) {  // [G*G] -> [G*G, D/2]: sin, then cos
    const torch::Tensor angles = pos.unsqueeze(1) * omega.unsqueeze(0);
    return torch::cat({angles.sin(), angles.cos()}, 1);
  };
  const torch::Tensor index = torch::arange(grid, torch::kFloat64);
  const torch::Tensor column = index.repeat({grid});                        // token h*G + w -> w
  const torch::Tensor row = index.repeat_interleave(grid);                  // -> h
  return torch::cat({axis(column), axis(row)}, 1);
}

torch::Tensor timestep_features(const torch::Tensor& t, int64_t dim) {
  const int64_t half = dim / 2;
  const torch::Tensor freqs =
      torch::exp(torch::arange(0, half, torch::TensorOptions().dtype(torch::kFloat32)) * -std::log(10000.0) / half).to(t.device());
  const torch::Tensor args = t.unsqueeze(1).to(torch::kFloat32) * freqs.unsqueeze(0);
  torch::Tensor embedding = torch::cat({torch::cos(args), torch::sin(args)}, -1);
  if (dim % 2) embedding = torch::cat({embedding, torch::zeros_like(embedding.narrow(1, 0, 1))}, -1);
  return embedding;
}

TokenNormImpl::TokenNormImpl(int64_t dim, bool rms_norm, double epsilon, bool affine) : rms(rms_norm), eps(epsilon) {
  if (rms || affine) weight = register_parameter("weight", torch::ones({dim}));
  if (!rms && affine) bias = register_parameter("bias", torch::zeros({dim}));
}

torch::Tensor TokenNormImpl::forward(const torch::Tensor& x) {
  if (rms) {
    const torch::Tensor xf = x.to(torch::kFloat32);
    return (xf * torch::rsqrt(xf.pow(2).mean(-1, true) + eps)).to(x.scalar_type()) * weight;
  }
  return F::layer_norm(x, F::LayerNormFuncOptions({x.size(-1)}).weight(weight).bias(bias).eps(eps));
}

RotaryEmbeddingImpl::RotaryEmbeddingImpl(int64_t head_dim, int64_t grid) {
  const int64_t dim = head_dim / 2;  // per axis
  const torch::Tensor freqs = torch::reciprocal(torch::pow(10000.0, torch::arange(0, dim, 2).narrow(0, 0, dim / 2).to(torch::kFloat32) / dim));
  const torch::Tensor positions = torch::arange(grid).to(torch::kFloat32) / grid * grid;
  const torch::Tensor angles = (positions.unsqueeze(1) * freqs.unsqueeze(0)).repeat_interleave(2, 1);  // [G, dim], pairs
  const torch::Tensor table = torch::cat({angles.unsqueeze(1).expand({grid, grid, dim}), angles.unsqueeze(0).expand({grid, grid, dim})}, -1)
                                  .reshape({grid * grid, head_dim});  // row h*G + w: [angles(h), angles(w)]
  freqs_cos = register_buffer("freqs_cos", table.cos());
  freqs_sin = register_buffer("freqs_sin", table.sin());
}

torch::Tensor RotaryEmbeddingImpl::forward(const torch::Tensor& x) { return x * freqs_cos + rotate_half(x) * freqs_sin; }

AttentionImpl::AttentionImpl(const LightningDiTConfig& c) : num_heads(c.num_heads), head_dim(c.head_dim()) {
  qkv = register_module("qkv", torch::nn::Linear(c.hidden_size, 3 * c.hidden_size));
  if (c.use_qknorm) {
    // RMSNorm(head_dim) with use_rmsnorm, else nn.LayerNorm(head_dim): eps 1e-5, affine.
    q_norm = register_module("q_norm", TokenNorm(head_dim, c.use_rmsnorm, c.use_rmsnorm ? 1e-6 : 1e-5, true));
    k_norm = register_module("k_norm", TokenNorm(head_dim, c.use_rmsnorm, c.use_rmsnorm ? 1e-6 : 1e-5, true));
  }
  proj = register_module("proj", torch::nn::Linear(c.hidden_size, c.hidden_size));
}

torch::Tensor AttentionImpl::forward(const torch::Tensor& x, RotaryEmbedding& rope, Trace* trace) {
  const int64_t b = x.size(0), n = x.size(1), d = x.size(2);
  const torch::Tensor packed = record(trace, "qkv", qkv(x));
  const auto qkv_heads = packed.reshape({b, n, 3, num_heads, head_dim}).permute({2, 0, 3, 1, 4}).unbind(0);  // 3 x [B, H, T, hd]
  torch::Tensor q = qkv_heads[0], k = qkv_heads[1];
  if (q_norm) q = q_norm(q), k = k_norm(k);
  record(trace, "q_normed", q), record(trace, "k_normed", k);
  if (rope) q = record(trace, "q_rope", rope(q)), k = record(trace, "k_rope", rope(k));
  const torch::Tensor attn = torch::matmul(q * std::pow(static_cast<double>(head_dim), -0.5), k.transpose(-2, -1)).softmax(-1);
  return record(trace, "attn_out", proj(record(trace, "attn_core", torch::matmul(attn, qkv_heads[2]).transpose(1, 2).reshape({b, n, d}))));
}

FeedForwardImpl::FeedForwardImpl(const LightningDiTConfig& c) {
  const int64_t hidden = static_cast<int64_t>(static_cast<double>(c.hidden_size) * c.mlp_ratio);
  if (c.use_swiglu) {
    const auto swiglu_hidden = static_cast<int64_t>(2.0 / 3.0 * static_cast<double>(hidden));  // no rounding to 8, as upstream
    w12 = register_module("w12", torch::nn::Linear(c.hidden_size, 2 * swiglu_hidden));
    w3 = register_module("w3", torch::nn::Linear(swiglu_hidden, c.hidden_size));
  } else {
    fc1 = register_module("fc1", torch::nn::Linear(c.hidden_size, hidden));
    fc2 = register_module("fc2", torch::nn::Linear(hidden, c.hidden_size));
  }
}

torch::Tensor FeedForwardImpl::forward(const torch::Tensor& x, Trace* trace) {
  if (w12) {
    const auto halves = record(trace, "mlp_w12", w12(x)).chunk(2, -1);
    return record(trace, "mlp_out", w3(record(trace, "mlp_hidden", F::silu(halves[0]) * halves[1])));
  }
  const torch::Tensor hidden = F::gelu(record(trace, "mlp_fc1", fc1(x)), F::GELUFuncOptions().approximate("tanh"));
  return record(trace, "mlp_out", fc2(record(trace, "mlp_hidden", hidden)));
}

LightningDiTBlockImpl::LightningDiTBlockImpl(const LightningDiTConfig& c) : wo_shift(c.wo_shift) {
  norm1 = register_module("norm1", TokenNorm(c.hidden_size, c.use_rmsnorm, 1e-6, c.use_rmsnorm));
  norm2 = register_module("norm2", TokenNorm(c.hidden_size, c.use_rmsnorm, 1e-6, c.use_rmsnorm));
  attn = register_module("attn", Attention(c));
  mlp = register_module("mlp", FeedForward(c));
  adaLN_modulation = register_module("adaLN_modulation", modulation(c.hidden_size, c.wo_shift ? 4 : 6));
}

torch::Tensor LightningDiTBlockImpl::forward(const torch::Tensor& x, const torch::Tensor& c, RotaryEmbedding& rope, Trace* trace) {
  // Chunks: shift_msa, scale_msa, gate_msa, shift_mlp, scale_mlp, gate_mlp (without the shifts: 4).
  const auto m = record(trace, "mod", adaLN_modulation->forward(c)).chunk(wo_shift ? 4 : 6, 1);
  const torch::Tensor none;
  const torch::Tensor &shift_msa = wo_shift ? none : m[0], &scale_msa = m[wo_shift ? 0 : 1], &gate_msa = m[wo_shift ? 1 : 2];
  const torch::Tensor &shift_mlp = wo_shift ? none : m[3], &scale_mlp = m[wo_shift ? 2 : 4], &gate_mlp = m[wo_shift ? 3 : 5];
  const torch::Tensor attn_in = record(trace, "attn_in", modulate(record(trace, "norm1", norm1(x)), shift_msa, scale_msa));
  const torch::Tensor mid = record(trace, "x_mid", x + gate_msa.unsqueeze(1) * attn->forward(attn_in, rope, trace));
  const torch::Tensor mlp_in = record(trace, "mlp_in", modulate(record(trace, "norm2", norm2(mid)), shift_mlp, scale_mlp));
  return mid + gate_mlp.unsqueeze(1) * mlp->forward(mlp_in, trace);
}

FinalLayerImpl::FinalLayerImpl(const LightningDiTConfig& c) {
  norm_final = register_module("norm_final", TokenNorm(c.hidden_size, c.use_rmsnorm, 1e-6, c.use_rmsnorm));
  linear = register_module("linear", torch::nn::Linear(c.hidden_size, c.patch_size * c.patch_size * c.out_channels()));
  adaLN_modulation = register_module("adaLN_modulation", modulation(c.hidden_size, 2));
}

torch::Tensor FinalLayerImpl::forward(const torch::Tensor& x, const torch::Tensor& c, Trace* trace) {
  const auto m = record(trace, "final.mod", adaLN_modulation->forward(c)).chunk(2, 1);  // shift, scale (always with the shift)
  return record(trace, "final.tokens", linear(modulate(record(trace, "final.norm", norm_final(x)), m[0], m[1])));
}

PatchEmbedImpl::PatchEmbedImpl(const LightningDiTConfig& c) {
  proj = register_module("proj", torch::nn::Conv2d(torch::nn::Conv2dOptions(c.in_channels, c.hidden_size, c.patch_size).stride(c.patch_size)));
}

torch::Tensor PatchEmbedImpl::forward(const torch::Tensor& x) { return proj(x).flatten(2).transpose(1, 2); }

TimestepEmbedderImpl::TimestepEmbedderImpl(int64_t hidden_size) {
  mlp = register_module("mlp", torch::nn::Sequential(torch::nn::Linear(256, hidden_size), torch::nn::SiLU(),
                                                     torch::nn::Linear(hidden_size, hidden_size)));
}

torch::Tensor TimestepEmbedderImpl::forward(const torch::Tensor& t) { return mlp->forward(timestep_features(t, 256)); }

LabelEmbedderImpl::LabelEmbedderImpl(const LightningDiTConfig& c) {
  embedding_table = register_module("embedding_table", torch::nn::Embedding(c.num_classes + (c.class_dropout_prob > 0 ? 1 : 0), c.hidden_size));
}

LightningDiTImpl::LightningDiTImpl(const LightningDiTConfig& c) : config(c) {
  c.validate();
  x_embedder = register_module("x_embedder", PatchEmbed(c));
  t_embedder = register_module("t_embedder", TimestepEmbedder(c.hidden_size));
  y_embedder = register_module("y_embedder", LabelEmbedder(c));
  pos_embed = register_buffer("pos_embed", sincos_pos_embed_2d(c.hidden_size, c.grid()).to(torch::kFloat32).unsqueeze(0));
  if (c.use_rope) feat_rope = register_module("feat_rope", RotaryEmbedding(c.head_dim(), c.grid()));
  blocks = register_module("blocks", torch::nn::ModuleList());
  for (int64_t i = 0; i < c.depth; ++i) blocks->push_back(LightningDiTBlock(c));
  final_layer = register_module("final_layer", FinalLayer(c));
  initialize_weights();
}

void LightningDiTImpl::initialize_weights() {
  torch::NoGradGuard no_grad;
  for (auto& module : modules(/*include_self=*/false))
    if (auto* linear = module->as<torch::nn::Linear>()) {
      torch::nn::init::xavier_uniform_(linear->weight);
      if (linear->bias.defined()) linear->bias.zero_();
    }
  const torch::Tensor w = x_embedder->proj->weight;  // like a Linear over the flattened patch
  w.view({w.size(0), -1}).copy_(torch::nn::init::xavier_uniform_(torch::empty({w.size(0), w[0].numel()})));
  x_embedder->proj->bias.zero_();
  y_embedder->embedding_table->weight.normal_(0, 0.02);
  t_embedder->mlp[0]->as<torch::nn::Linear>()->weight.normal_(0, 0.02);
  t_embedder->mlp[2]->as<torch::nn::Linear>()->weight.normal_(0, 0.02);
  auto zero = [](torch::nn::Linear& l) {
    l->weight.zero_();
    l->bias.zero_();
  };
  for (const auto& block : *blocks) {
    auto layer = block->as<LightningDiTBlock>()->adaLN_modulation[1]->as<torch::nn::Linear>();
    layer->weight.zero_(), layer->bias.zero_();
  }
  auto final_mod = final_layer->adaLN_modulation[1]->as<torch::nn::Linear>();
  final_mod->weight.zero_(), final_mod->bias.zero_();
  zero(final_layer->linear);
}

torch::Tensor LightningDiTImpl::unpatchify(const torch::Tensor& tokens) const {
  const int64_t b = tokens.size(0), g = config.grid(), p = config.patch_size, co = config.out_channels();
  // (B, G, G, p, p, Co) -> (B, Co, G, p, G, p): a token's features are channel-last per pixel.
  return tokens.reshape({b, g, g, p, p, co}).permute({0, 5, 1, 3, 2, 4}).reshape({b, co, g * p, g * p});
}

torch::Tensor LightningDiTImpl::forward(const torch::Tensor& x, const torch::Tensor& t, const torch::Tensor& y, Trace* trace) {
  if (x.dim() != 4 || x.size(1) != config.in_channels || x.size(2) != config.input_size || x.size(3) != config.input_size)
    throw Error("LightningDiT expects latents [B, " + std::to_string(config.in_channels) + ", " + std::to_string(config.input_size) + ", " +
                std::to_string(config.input_size) + "], got [" + std::to_string(x.size(0)) + (x.dim() > 1 ? ", " + std::to_string(x.size(1)) : "") +
                (x.dim() == 4 ? ", " + std::to_string(x.size(2)) + ", " + std::to_string(x.size(3)) : "") + "]");
  torch::Tensor tokens = record(trace, "tokens_in", record(trace, "patch_tokens", x_embedder(x)) + record(trace, "pos_embed", pos_embed));
  if (trace) record(trace, "t_freq", timestep_features(t, 256));
  const torch::Tensor c = record(trace, "c", record(trace, "t_emb", t_embedder(t)) + record(trace, "y_emb", y_embedder(y)));  // [B, D]
  if (trace && feat_rope) record(trace, "rope_cos", feat_rope->freqs_cos), record(trace, "rope_sin", feat_rope->freqs_sin);
  for (size_t i = 0; i < blocks->size(); ++i) {
    Trace block_trace;
    tokens = blocks[i]->as<LightningDiTBlock>()->forward(tokens, c, feat_rope, trace && i == 0 ? &block_trace : nullptr);
    for (const auto& [name, value] : block_trace) record(trace, "blk0." + name, value);
    record(trace, "block_out." + std::to_string(i), tokens);
  }
  // Under autocast the last linear gives bf16: the velocity comes back in the latents' dtype, as
  // accelerate's convert_to_fp32 hands it to the loss and the sampler.
  const torch::Tensor out = record(trace, "unpatchified", unpatchify(final_layer->forward(tokens, c, trace))).to(x.scalar_type());
  return config.learn_sigma ? out.narrow(1, 0, config.in_channels) : out;
}

torch::Tensor LightningDiTImpl::forward_with_cfg(const torch::Tensor& x, const torch::Tensor& t, const torch::Tensor& y, const Guidance& g) {
  const int64_t n = x.size(0) / 2;
  const torch::Tensor half = x.narrow(0, 0, n);
  const torch::Tensor out = forward(torch::cat({half, half}), t, y);
  const int64_t guided = g.channels > 0 ? std::min<int64_t>(g.channels, out.size(1)) : out.size(1);
  const torch::Tensor cond = out.narrow(0, 0, n).narrow(1, 0, guided), uncond = out.narrow(0, n, n).narrow(1, 0, guided);
  const bool off = g.interval && t[0].item<float>() < static_cast<float>(g.interval_start);
  const torch::Tensor half_eps = off ? cond : uncond + g.scale * (cond - uncond);
  const torch::Tensor eps = torch::cat({half_eps, half_eps});
  return guided == out.size(1) ? eps : torch::cat({eps, out.narrow(1, guided, out.size(1) - guided)}, 1);
}

torch::Tensor LightningDiTImpl::drop_labels(const torch::Tensor& y, at::Generator generator) const {
  if (config.class_dropout_prob <= 0) return y;
  const torch::Tensor drop = torch::rand({y.size(0)}, generator, torch::TensorOptions().device(y.device())) < config.class_dropout_prob;
  return torch::where(drop, torch::full_like(y, config.null_label()), y);
}

}  // namespace vavae::dit
