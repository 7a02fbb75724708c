#include "vavae/config/dit_config.h"

#include <sstream>

#include "vavae/common/precision.h"
#include "vavae/config/config_file.h"
#include "vavae/config/schema.h"
#include "vavae/config/train_config.h"

namespace vavae::config {
namespace {

template <typename V>
void describe(DiTConfig& c, V& v) {
  v.key("data.data_path", c.data_path, "extract-latents' folder: latents_rank*_shard*.safetensors and latents_stats.pt");
  v.key("data.latent_norm", c.latent_norm, "normalise latents by latents_stats.pt (computed and cached when missing, as upstream)");
  v.key("data.latent_multiplier", c.latent_multiplier, "latents are multiplied by this after normalisation");
  v.key("data.num_classes", c.num_classes, "class labels 0..N-1; N is the null label of classifier-free guidance");
  v.ignored("data.image_size", "the image size follows from the latents and the tokenizer");
  v.ignored("data.num_workers", "latents are held in memory");
  v.ignored("data.fid_reference_file", "compute FID with vavae fid against reference images or their statistics");
  v.ignored("data.valid_path", "no validation loss here");
  v.ignored("vae.model_name", "vae.config and vae.weights name the tokenizer");
  v.ignored("vae.downsample_ratio", "follows from vae.config");
  v.key("vae.config", c.vae_config, "the tokenizer's config (a vavae run's config.yaml or an autoencoder config), to decode samples");
  v.key("vae.weights", c.vae_weights, "the tokenizer's weights (e.g. a run's autoencoder.safetensors)");
  v.key("model.model_type", c.model_type, "LightningDiT-{B,L,XL,1p0B,1p6B}/{1,2}: depth, width, heads and patch");
  v.key("model.depth", c.depth, "blocks (0: model_type's)");
  v.key("model.hidden_size", c.hidden_size, "width (0: model_type's)");
  v.key("model.num_heads", c.num_heads, "attention heads (0: model_type's)");
  v.key("model.patch_size", c.patch_size, "latent patch size (0: model_type's)");
  v.key("model.mlp_ratio", c.model.mlp_ratio, "MLP width over model width");
  v.key("model.class_dropout_prob", c.model.class_dropout_prob, "label dropout for classifier-free guidance");
  v.key("model.learn_sigma", c.model.learn_sigma, "predict 2C channels, use the first C");
  v.key("model.use_qknorm", c.model.use_qknorm, "normalise q and k per head");
  v.key("model.use_swiglu", c.model.use_swiglu, "SwiGLU MLP instead of GELU");
  v.key("model.use_rope", c.model.use_rope, "2-D rotary position embedding in attention");
  v.key("model.use_rmsnorm", c.model.use_rmsnorm, "RMSNorm instead of LayerNorm");
  v.key("model.wo_shift", c.model.wo_shift, "adaLN without the shift terms");
  v.key("model.in_chans", c.model.in_channels, "latent channels");
  v.key("train.max_steps", c.max_steps, "optimizer steps");
  v.key("train.global_batch_size", c.global_batch_size, "latents per step (split between ranks)");
  v.key("train.global_seed", c.global_seed, "seed of initialisation, data order, noise and t");
  v.key("train.log_every", c.log_every, "steps between metric lines");
  v.key("train.ckpt_every", c.ckpt_every, "steps between checkpoints");
  v.key("train.keep_checkpoints", c.keep_checkpoints, "checkpoints kept (the newest)");
  v.key("train.sample_every", c.sample_every, "steps between sample grids from the EMA model (0: at the end only; needs vae.*)");
  v.key("train.ema_decay", c.ema_decay, "EMA of the weights (upstream's update_ema)");
  v.key("train.threads", c.threads, "CPU threads (0: all cores)");
  v.key("train.device", c.device, "cpu, cuda or auto");
  v.key("train.mixed_precision", c.mixed_precision,
        "no, bf16 (autocast for the DiT's forward; loss, weights and optimizer in fp32) or auto: bf16 where the "
        "device computes it natively (CUDA, as upstream's run_train.sh, and CPUs with AVX512-BF16), fp32 elsewhere");
  v.key("train.dist_timeout", c.dist_timeout, "data parallel: seconds a rank waits for the others before failing");
  v.ignored("train.output_dir", "the run folder is --output");
  v.ignored("train.exp_name", "the run folder is --output");
  v.ignored("train.ckpt", "use --resume RUN or dit sample --weights");
  v.ignored("train.resume", "use --resume RUN");
  v.ignored("train.use_checkpoint", "gradient checkpointing does not change results; it is not available here");
  v.ignored("ckpt_path", "dit sample --weights names the checkpoint");
  v.key("optimizer.lr", c.lr, "AdamW learning rate (weight decay 0, betas 0.9 and beta2)");
  v.key("optimizer.beta2", c.beta2, "AdamW's second beta");
  v.key("optimizer.max_grad_norm", c.max_grad_norm, "clip the gradient norm to this (0: no clipping, upstream's default)");
  v.fixed("transport.path_type", "Linear", "rectified flow (upstream's released setting)");
  v.fixed("transport.prediction", "velocity", "the network predicts the velocity x1 - x0");
  v.fixed("transport.loss_weight", nullptr, "no loss weighting");
  v.fixed("transport.sample_eps", nullptr, "t covers [0, 1]");
  v.fixed("transport.train_eps", nullptr, "t covers [0, 1]");
  v.key("transport.use_cosine_loss", c.transport.use_cosine_loss, "add the cosine (velocity direction) loss");
  v.key("transport.use_lognorm", c.transport.use_lognorm, "logit-normal t (else uniform)");
  v.fixed("sample.mode", "ODE", "the ODE sampler");
  v.key("sample.sampling_method", c.sampler.method, "euler or heun2");
  v.ignored("sample.atol", "fixed-grid solvers have no tolerance");
  v.ignored("sample.rtol", "fixed-grid solvers have no tolerance");
  v.fixed("sample.reverse", false, "noise to data");
  v.fixed("sample.likelihood", false, "no likelihood");
  v.key("sample.num_sampling_steps", c.sampler.num_steps, "time points of the grid (N - 1 steps)");
  v.key("sample.cfg_scale", c.guidance.scale, "classifier-free guidance scale (1: none)");
  v.key("sample.cfg_interval", c.guidance.interval, "no guidance while t < cfg_interval_start (inference.py's FID sampling)");
  v.key("sample.cfg_interval_start", c.guidance.interval_start, "start of the guidance interval");
  v.key("sample.cfg_channels", c.guidance.channels, "latent channels guided: upstream guides the first 3 (inherited from DiT); 0: all");
  v.key("sample.timestep_shift", c.sampler.timestep_shift, "t -> s t / (1 + (s - 1) t); 0: none");
  v.key("sample.per_proc_batch_size", c.per_proc_batch_size, "samples per forward pass");
  v.key("sample.fid_num", c.fid_num, "samples dit sample writes for FID by default");
}

}  // namespace

DiTConfig dit_config_from_json(const nlohmann::json& root, const std::string& source) {
  if (!root.is_object()) throw Error(source + ": the config is not a mapping");
  DiTConfig c;
  SchemaReader reader(root, source, "file");
  describe(c, reader);
  c.ignored = reader.finish();
  auto where = [&](const std::string& key) { return source + ": " + key; };
  try {
    const dit::LightningDiTConfig preset = dit::lightningdit_preset(c.model_type);
    c.model.depth = c.depth > 0 ? c.depth : preset.depth;
    c.model.hidden_size = c.hidden_size > 0 ? c.hidden_size : preset.hidden_size;
    c.model.num_heads = c.num_heads > 0 ? c.num_heads : preset.num_heads;
    c.model.patch_size = c.patch_size > 0 ? c.patch_size : preset.patch_size;
    c.model.num_classes = c.num_classes;
    c.sampler.validate();
  } catch (const Error& e) {
    throw Error(where("model / sample") + ": " + e.what());
  }
  if (c.data_path.empty()) throw Error(where("data.data_path") + " is required (extract-latents' output folder)");
  if (c.global_batch_size <= 0) throw Error(where("train.global_batch_size") + " must be positive");
  if (c.max_steps <= 0) throw Error(where("train.max_steps") + " must be positive");
  if (c.log_every <= 0 || c.ckpt_every <= 0) throw Error(where("train.log_every / ckpt_every") + " must be positive");
  if (c.ema_decay < 0 || c.ema_decay >= 1) throw Error(where("train.ema_decay") + " must be in [0, 1)");
  if (c.lr <= 0 || c.beta2 <= 0 || c.beta2 >= 1) throw Error(where("optimizer.lr / beta2") + " out of range");
  parse_precision(c.mixed_precision, torch::kCPU, where("train.mixed_precision"));
  if (c.latent_multiplier <= 0) throw Error(where("data.latent_multiplier") + " must be positive");
  SchemaWriter writer;
  describe(c, writer);
  c.resolved = writer.tree;
  return c;
}

DiTConfig load_dit_config(const std::string& path, const std::vector<std::string>& set) {
  nlohmann::json root = load_config_file(path);
  apply_overrides(root, set);
  return dit_config_from_json(root, path);
}

std::string dit_keys_table() {
  DiTConfig defaults;
  SchemaLister lister;
  describe(defaults, lister);
  std::ostringstream out;
  out << "| key | type | default | meaning |\n|---|---|---|---|\n";
  for (const auto& r : lister.rows)
    out << "| `" << r.path << "` | " << r.type << " | `" << json_text(r.value) << "` | " << r.doc << " |\n";
  for (const auto& [path, reason] : lister.ignored_rows) out << "| `" << path << "` | ignored | | " << reason << " |\n";
  return out.str();
}

}  // namespace vavae::config
