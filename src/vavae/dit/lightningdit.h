#pragma once
#include <torch/torch.h>

#include <cstdint>
#include <map>
#include <string>

// LightningDiT (hustvl/LightningDiT models/lightningdit.py at 2725fed) with upstream's parameter
// names, so its checkpoints load by name: a DiT over latent patches with adaLN-Zero conditioning
// on (timestep, class), and the options LightningDiT adds (SwiGLU, RMSNorm, 2-D RoPE, QK-norm,
// adaLN without shift). Time t in [0, 1] goes in as is: t = 0 is noise, t = 1 data.
namespace vavae::dit {

// Named intermediate tensors of one forward pass, for checking against upstream's (the names of
// fixtures/dit/model: patch_tokens, c, blk0.qkv, block_out.1, final.tokens, ...).
using Trace = std::map<std::string, torch::Tensor>;

struct LightningDiTConfig {  // LightningDiT.__init__'s arguments and defaults
  int64_t input_size = 32;   // latent height = width
  int64_t patch_size = 2;
  int64_t in_channels = 32;
  int64_t hidden_size = 1152;
  int64_t depth = 28;
  int64_t num_heads = 16;
  double mlp_ratio = 4.0;
  double class_dropout_prob = 0.1;  // > 0 adds the null-label row (label num_classes)
  int64_t num_classes = 1000;
  bool learn_sigma = false;  // 2C output channels, the first C returned
  bool use_qknorm = false;
  bool use_swiglu = false;
  bool use_rope = false;
  bool use_rmsnorm = false;
  bool wo_shift = false;
  bool use_checkpoint = false;  // gradient checkpointing: not available here (an error when set)

  int64_t out_channels() const { return learn_sigma ? 2 * in_channels : in_channels; }
  int64_t grid() const { return input_size / patch_size; }
  int64_t head_dim() const { return hidden_size / num_heads; }
  int64_t null_label() const { return num_classes; }
  void validate() const;  // Error naming the argument at fault
};

// Upstream's size presets: LightningDiT-{B,L,XL,1p0B,1p6B}/{1,2} (depth, width, patch, heads).
LightningDiTConfig lightningdit_preset(const std::string& name);

// RMSNorm (computed in float32, then weight) or LayerNorm (eps, with or without affine) under one
// name, so both keep upstream's keys (`norm1.weight`, `q_norm.weight`/`.bias`).
struct TokenNormImpl : torch::nn::Module {
  TokenNormImpl(int64_t dim, bool rms, double eps, bool affine);
  torch::Tensor forward(const torch::Tensor& x);
  bool rms;
  double eps;
  torch::Tensor weight, bias;  // undefined without affine
};
TORCH_MODULE(TokenNorm);

// EVA-02's VisionRotaryEmbeddingFast(dim = head_dim / 2, pt_seq_len = grid): the first half of each
// head's dims rotates with the row, the second with the column; pairs are interleaved.
struct RotaryEmbeddingImpl : torch::nn::Module {
  RotaryEmbeddingImpl(int64_t head_dim, int64_t grid);
  torch::Tensor forward(const torch::Tensor& x);  // [..., T, head_dim]
  torch::Tensor freqs_cos, freqs_sin;             // [T, head_dim] buffers (in upstream's state dict)
};
TORCH_MODULE(RotaryEmbedding);

struct AttentionImpl : torch::nn::Module {
  AttentionImpl(const LightningDiTConfig& c);
  torch::Tensor forward(const torch::Tensor& x, RotaryEmbedding& rope, Trace* trace = nullptr);  // [B, T, D] -> [B, T, D]
  int64_t num_heads, head_dim;
  torch::nn::Linear qkv{nullptr}, proj{nullptr};
  TokenNorm q_norm{nullptr}, k_norm{nullptr};  // with use_qknorm
};
TORCH_MODULE(Attention);

// SwiGLUFFN (w12 -> silu(first half) * second half -> w3) or timm's Mlp (fc1 -> GELU tanh -> fc2).
struct FeedForwardImpl : torch::nn::Module {
  FeedForwardImpl(const LightningDiTConfig& c);
  torch::Tensor forward(const torch::Tensor& x, Trace* trace = nullptr);
  torch::nn::Linear w12{nullptr}, w3{nullptr}, fc1{nullptr}, fc2{nullptr};
};
TORCH_MODULE(FeedForward);

struct LightningDiTBlockImpl : torch::nn::Module {
  LightningDiTBlockImpl(const LightningDiTConfig& c);
  // x [B, T, D], c [B, D]: x + gate_msa * attn(modulate(norm1 x)), then the same with the MLP.
  torch::Tensor forward(const torch::Tensor& x, const torch::Tensor& c, RotaryEmbedding& rope, Trace* trace = nullptr);
  bool wo_shift;
  TokenNorm norm1{nullptr}, norm2{nullptr};
  Attention attn{nullptr};
  FeedForward mlp{nullptr};
  torch::nn::Sequential adaLN_modulation{nullptr};  // SiLU, Linear(D, 6D or 4D)
};
TORCH_MODULE(LightningDiTBlock);

struct FinalLayerImpl : torch::nn::Module {
  FinalLayerImpl(const LightningDiTConfig& c);
  torch::Tensor forward(const torch::Tensor& x, const torch::Tensor& c, Trace* trace = nullptr);  // [B, T, D] -> [B, T, p*p*Co]
  TokenNorm norm_final{nullptr};
  torch::nn::Linear linear{nullptr};
  torch::nn::Sequential adaLN_modulation{nullptr};  // SiLU, Linear(D, 2D): shift, scale
};
TORCH_MODULE(FinalLayer);

// timm's PatchEmbed: [B, C, S, S] -> [B, T, D], tokens row-major.
struct PatchEmbedImpl : torch::nn::Module {
  PatchEmbedImpl(const LightningDiTConfig& c);
  torch::Tensor forward(const torch::Tensor& x);
  torch::nn::Conv2d proj{nullptr};
};
TORCH_MODULE(PatchEmbed);

// Sinusoidal features of t (256, cos first), then Linear -> SiLU -> Linear.
struct TimestepEmbedderImpl : torch::nn::Module {
  explicit TimestepEmbedderImpl(int64_t hidden_size);
  torch::Tensor forward(const torch::Tensor& t);  // [B] -> [B, D]
  torch::nn::Sequential mlp{nullptr};
};
TORCH_MODULE(TimestepEmbedder);

struct LabelEmbedderImpl : torch::nn::Module {
  explicit LabelEmbedderImpl(const LightningDiTConfig& c);
  torch::Tensor forward(const torch::Tensor& y) { return embedding_table(y); }  // [B] -> [B, D]
  torch::nn::Embedding embedding_table{nullptr};
};
TORCH_MODULE(LabelEmbedder);

// Classifier-free guidance as upstream's forward_with_cfg: the batch is [cond half, uncond half]
// (only the first half of x is used), guidance applies to the first `channels` output channels
// (upstream: 3, inherited from DiT; <= 0: all), and with `interval` no guidance while t[0] < start.
struct Guidance {
  double scale = 1.0;
  bool interval = false;
  double interval_start = 0.0;
  int64_t channels = 3;
};

struct LightningDiTImpl : torch::nn::Module {
  explicit LightningDiTImpl(const LightningDiTConfig& c);
  // x [B, C, S, S], t [B] in [0, 1], y [B] int64 (num_classes = the null label) -> [B, C, S, S].
  // `trace` receives the intermediates (block 0's in detail, every block's output).
  torch::Tensor forward(const torch::Tensor& x, const torch::Tensor& t, const torch::Tensor& y, Trace* trace = nullptr);
  torch::Tensor forward_with_cfg(const torch::Tensor& x, const torch::Tensor& t, const torch::Tensor& y, const Guidance& g);
  // Training's label dropout: each label becomes the null label with probability class_dropout_prob.
  torch::Tensor drop_labels(const torch::Tensor& y, at::Generator generator) const;

  torch::Tensor unpatchify(const torch::Tensor& tokens) const;  // [B, T, p*p*Co] -> [B, Co, S, S]
  // Upstream's initialize_weights: xavier-uniform linears, zero adaLN and output layers.
  void initialize_weights();

  LightningDiTConfig config;
  PatchEmbed x_embedder{nullptr};
  TimestepEmbedder t_embedder{nullptr};
  LabelEmbedder y_embedder{nullptr};
  torch::Tensor pos_embed;  // [1, T, D] fixed 2-D sincos (a frozen parameter upstream; in its state dict)
  RotaryEmbedding feat_rope{nullptr};
  torch::nn::ModuleList blocks;
  FinalLayer final_layer{nullptr};
};
TORCH_MODULE(LightningDiT);

// The MAE/DiT 2-D sincos table [G*G, D] in float64 (first D/2 channels: the column, then the row).
torch::Tensor sincos_pos_embed_2d(int64_t dim, int64_t grid);
// DiT's sinusoidal timestep features [B, dim]: cos first, then sin, float32 frequencies.
torch::Tensor timestep_features(const torch::Tensor& t, int64_t dim = 256);

}  // namespace vavae::dit
