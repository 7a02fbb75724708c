#include "vavae/train/mae.h"

#include <ATen/CPUGeneratorImpl.h>

#include <cmath>
#include <filesystem>
#include <iomanip>
#include <iostream>
#include <sstream>

#include "vavae/common/error.h"
#include "vavae/common/precision.h"
#include "vavae/common/progress.h"
#include "vavae/data/loader.h"
#include "vavae/io/weights.h"
#include "vavae/train/schedule.h"

namespace vavae::train {
namespace {

// Xavier-uniform linear weights, zero biases, small normal tokens: MAE's initialisation.
void initialise(torch::nn::Module& m) {
  torch::NoGradGuard no_grad;
  for (auto& child : m.modules(/*include_self=*/false)) {
    if (auto* linear = child->as<torch::nn::Linear>()) {
      torch::nn::init::xavier_uniform_(linear->weight);
      if (linear->bias.defined()) linear->bias.zero_();
    } else if (auto* conv = child->as<torch::nn::Conv2d>()) {
      torch::nn::init::xavier_uniform_(conv->weight.view({conv->weight.size(0), -1}));
      if (conv->bias.defined()) conv->bias.zero_();
    }
  }
}

}  // namespace

MAEImpl::MAEImpl(const MAEConfig& c) : config(c) {
  if (!c.encoder.class_token || c.encoder.reg_tokens != 0 || c.encoder.no_embed_class)
    throw Error("MAE pre-training needs a ViT with a class token and no registers");
  encoder = register_module("encoder", nn::ViT(c.encoder));
  const int64_t n = c.encoder.pos_grid * c.encoder.pos_grid;
  nn::ViTConfig dec = c.encoder;
  dec.embed_dim = c.decoder_dim, dec.depth = c.decoder_depth, dec.num_heads = c.decoder_heads;
  dec.mlp_hidden = 4 * c.decoder_dim, dec.layerscale = false, dec.swiglu = false;
  decoder_embed = register_module("decoder_embed", torch::nn::Linear(c.encoder.embed_dim, c.decoder_dim));
  mask_token = register_parameter("mask_token", torch::randn({1, 1, c.decoder_dim}) * 0.02);
  decoder_pos_embed = register_parameter("decoder_pos_embed", torch::randn({1, 1 + n, c.decoder_dim}) * 0.02);
  decoder_blocks = register_module("decoder_blocks", torch::nn::ModuleList());
  for (int64_t i = 0; i < c.decoder_depth; ++i) decoder_blocks->push_back(nn::ViTBlock(dec));
  decoder_norm = register_module("decoder_norm", torch::nn::LayerNorm(torch::nn::LayerNormOptions({c.decoder_dim}).eps(1e-6)));
  const int64_t p = c.encoder.patch_size;
  decoder_pred = register_module("decoder_pred", torch::nn::Linear(c.decoder_dim, p * p * c.encoder.in_chans));
  initialise(*this);
  torch::NoGradGuard no_grad;
  encoder->cls_token.normal_(0, 0.02);
  encoder->pos_embed.normal_(0, 0.02);
}

torch::Tensor MAEImpl::patchify(const torch::Tensor& x) const {
  const int64_t p = config.encoder.patch_size, b = x.size(0), c = x.size(1), h = x.size(2) / p, w = x.size(3) / p;
  return x.reshape({b, c, h, p, w, p}).permute({0, 2, 4, 3, 5, 1}).reshape({b, h * w, p * p * c});
}

torch::Tensor MAEImpl::loss(const torch::Tensor& images, c10::optional<torch::Generator> generator) {
  const torch::Tensor patches = encoder->patch_embed(images);  // [B, h, w, D]
  const int64_t b = patches.size(0), h = patches.size(1), w = patches.size(2), n = h * w, d = patches.size(3);
  if (h != config.encoder.pos_grid || w != config.encoder.pos_grid)
    throw Error("MAE: images give a " + std::to_string(h) + "x" + std::to_string(w) + " token grid, the model was built for " +
                std::to_string(config.encoder.pos_grid) + "x" + std::to_string(config.encoder.pos_grid));
  const torch::Tensor pos = encoder->pos_embed;  // [1, 1 + N, D]
  const torch::Tensor tokens = patches.reshape({b, n, d}) + pos.slice(1, 1);

  // Random masking: keep the first n_keep of a random permutation per image.
  const int64_t n_keep = std::max<int64_t>(1, static_cast<int64_t>(n * (1.0 - config.mask_ratio)));
  const torch::Tensor noise = at::rand({b, n}, generator, torch::TensorOptions().dtype(torch::kFloat32)).to(images.device());
  const torch::Tensor shuffle = noise.argsort(int64_t{1}), restore = shuffle.argsort(int64_t{1});
  const torch::Tensor keep = shuffle.slice(1, 0, n_keep);
  torch::Tensor x = tokens.gather(1, keep.unsqueeze(-1).expand({b, n_keep, d}));
  x = torch::cat({(encoder->cls_token + pos.slice(1, 0, 1)).expand({b, -1, -1}), x}, 1);
  for (const auto& block : *encoder->blocks) x = block->as<nn::ViTBlock>()->forward(x);
  x = encoder->norm(x);

  // Decoder over all positions: encoded visible tokens, mask tokens elsewhere, back in order.
  torch::Tensor y = decoder_embed(x);  // [B, 1 + n_keep, Dd]
  const int64_t dd = y.size(2);
  torch::Tensor filled = torch::cat({y.slice(1, 1), mask_token.expand({b, n - n_keep, dd})}, 1);
  filled = filled.gather(1, restore.unsqueeze(-1).expand({b, n, dd}));
  y = torch::cat({y.slice(1, 0, 1), filled}, 1) + decoder_pos_embed;
  for (const auto& block : *decoder_blocks) y = block->as<nn::ViTBlock>()->forward(y);
  const torch::Tensor prediction = decoder_pred(decoder_norm(y)).slice(1, 1);  // [B, N, p*p*3]

  torch::Tensor target = patchify(images);
  if (config.norm_pix_loss) {
    const torch::Tensor mean = target.mean(-1, true), var = target.var(-1, /*unbiased=*/true, true);
    target = (target - mean) / (var + 1e-6).sqrt();
  }
  const torch::Tensor per_patch = (prediction - target).pow(2).mean(-1);  // [B, N]
  const torch::Tensor masked = torch::ones({b, n}, images.options()).scatter_(1, keep, 0.0);
  return (per_patch * masked).sum() / masked.sum();
}

MAETrainingResult train_mae(const MAETrainingOptions& o, torch::Device device) {
  if (o.resolution % o.patch != 0) throw Error("--resolution " + std::to_string(o.resolution) + " is not divisible by --patch");
  const Precision precision = parse_precision(o.mixed_precision, device, "--mixed-precision");
  torch::manual_seed(o.seed);
  data::LoaderConfig lc;
  lc.batch_size = o.batch_size, lc.seed = o.seed, lc.workers = 2;
  lc.transform.resolution = o.resolution, lc.transform.pad = o.pad, lc.transform.random_crop = true, lc.transform.horizontal_flip = true;
  data::Loader loader(data::open_dataset(o.data), lc);
  const int64_t per_epoch = loader.batches_per_epoch();
  int64_t total = static_cast<int64_t>(std::ceil(o.epochs * static_cast<double>(per_epoch)));
  if (o.max_steps > 0) total = std::min(total, o.max_steps);

  MAEConfig mc;
  mc.encoder.patch_size = o.patch, mc.encoder.embed_dim = o.dim, mc.encoder.depth = o.depth, mc.encoder.num_heads = o.heads;
  mc.encoder.mlp_hidden = 4 * o.dim, mc.encoder.layerscale = false, mc.encoder.pos_grid = o.resolution / o.patch;
  MAE mae(mc);
  mae->to(device);
  mae->train();
  const double lr = o.lr * static_cast<double>(o.batch_size) / 256.0;
  torch::optim::AdamW optimizer(mae->parameters(), torch::optim::AdamWOptions(lr).betas({0.9, 0.95}).weight_decay(o.weight_decay));
  const int64_t warmup = static_cast<int64_t>(o.warmup_epochs * static_cast<double>(per_epoch));
  at::Generator masks = at::detail::createCPUGenerator(o.seed + 1);

  std::cout << "train-fm: MAE on " << loader.dataset().describe() << ", ViT patch " << o.patch << " dim " << o.dim << " depth "
            << o.depth << ", " << total << " steps of " << o.batch_size << ", " << precision_name(precision) << std::endl;
  std::filesystem::create_directories(o.output);
  Progress progress(total);
  loader.start(0, 0);
  std::vector<double> losses;
  for (int64_t step = 1; step <= total; ++step) {
    const double factor = step <= warmup ? static_cast<double>(step) / std::max<int64_t>(1, warmup)
                                         : learning_rate_factor("cosine", step - warmup, total - warmup);
    for (auto& group : optimizer.param_groups()) static_cast<torch::optim::AdamWOptions&>(group.options()).lr(lr * factor);
    const data::Batch batch = loader.next();
    optimizer.zero_grad();
    torch::Tensor loss;
    {
      const AutocastScope autocast(device, precision);
      loss = mae->loss(batch.images.to(device), masks);
    }
    loss.backward();
    optimizer.step();
    losses.push_back(loss.item<double>());
    if (step % 20 == 0 || step == total || step == 1) {
      std::ostringstream v;
      v << "loss " << std::fixed << std::setprecision(4) << losses.back();
      progress.report(step, step * o.batch_size, v.str());
    }
  }
  MAETrainingResult r;
  r.path = (std::filesystem::path(o.output) / "fm.safetensors").string();
  io::write_safetensors(r.path, io::state_dict(*mae->encoder),
                        {{"vavae_vit_config", nn::vit_config_to_json(mc.encoder)},
                         {"vavae_foundation", "mae"},
                         {"input_resolution", std::to_string(o.resolution)},
                         {"data", o.data}});
  r.steps = total;
  r.first_loss = losses.front();
  r.last_loss = losses.back();
  r.seconds = progress.elapsed_seconds();
  r.mae = mae;
  return r;
}

}  // namespace vavae::train
