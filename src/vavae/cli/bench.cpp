// vavae bench: inference, training-step, loader and DiT-step speed and peak memory, one JSON line like torch_ref.py.
#include <nlohmann/json.hpp>

#include <algorithm>
#include <chrono>
#include <iostream>
#include <limits>

#include "vavae/cli/common.h"
#include "vavae/common/error.h"
#include "vavae/common/runtime.h"
#include "vavae/common/precision.h"
#include "vavae/config/dit_config.h"
#include "vavae/config/model_config.h"
#include "vavae/data/loader.h"
#include "vavae/dit/dit_trainer.h"
#include "vavae/nn/convolution.h"
#include "vavae/nn/foundation_model.h"
#include "vavae/train/train_step.h"

namespace vavae::cli {
namespace {

struct BenchOptions {
  std::string what;
  std::string config;  // a file, or one of the reference's names: tiny, small, f16d32 (default)
  bool no_lpips = false, no_disc = false, no_vf = false;
  int64_t disc_start = 0;  // train-step: upstream global step at which the GAN starts
  int64_t feature_dim = 1024;  // vf-loss: D (DINOv2 ViT-L)
  bool explicit_gram = false;  // vf-loss: upstream's full N x N matrices instead of row blocks
  int64_t batch = 1, resolution = 256, steps = 5, warmup = 1;
  int64_t channels = 0;  // dit-step: latent channels (0: the config's model.in_chans)
  std::string data;  // loader: a folder of images
  bool jpeg_dct_scaling = false;
  std::string mixed_precision = "no";  // train-step, encode, decode: no or bf16 autocast (as trainer.mixed_precision)
  double winograd_band_mib = 0;        // > 0: the Winograd band size (nn::set_winograd_band_bytes)
  RuntimeOptions runtime;
};

// The architectures ../shared/bench/torch_ref.py names, so both sides build the same model.
nn::AutoencoderConfig bench_config(const std::string& name) {
  nn::AutoencoderConfig c;  // f16d32
  if (name.empty() || name == "f16d32") return c;
  if (name == "tiny") {
    c.ch = 32, c.ch_mult = {1, 2, 2}, c.num_res_blocks = 1, c.attn_resolutions = {8};
    c.z_channels = c.embed_dim = 8, c.resolution = 32;
    return c;
  }
  if (name == "small") {
    c.ch = 64, c.ch_mult = {1, 1, 2, 2, 4}, c.num_res_blocks = 1, c.attn_resolutions = {4};
    c.z_channels = c.embed_dim = 32, c.resolution = 64;
    return c;
  }
  return config::load_autoencoder_config(name);
}

// LPIPS with random weights of the released magnitudes (He-scaled VGG, non-negative heads), as the
// reference benchmark uses: the speed does not depend on the values.
void randomize_lpips(nn::LPIPSImpl& lpips) {
  torch::NoGradGuard no_grad;
  for (auto& slice : lpips.slices)
    for (auto& conv : slice->convs) {
      torch::nn::init::kaiming_normal_(conv->weight);
      conv->bias.zero_();
    }
  for (auto& lin : lpips.lins) {
    auto& w = lin->model[1]->as<torch::nn::Conv2d>()->weight;
    w.uniform_(0.0, 2.0 / static_cast<double>(w.size(1)));
  }
}

template <typename Step>
std::vector<double> time_steps(const BenchOptions& o, torch::Device device, Step&& step) {
  for (int64_t i = 0; i < o.warmup; ++i) step();
  std::vector<double> seconds;
  for (int64_t i = 0; i < o.steps; ++i) {
    const auto t0 = std::chrono::steady_clock::now();
    step();
    if (device.is_cuda()) torch::cuda::synchronize();
    seconds.push_back(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
  }
  std::sort(seconds.begin(), seconds.end());
  return seconds;
}

void print_result(const BenchOptions& o, torch::Device device, const std::vector<double>& sorted_seconds, const nlohmann::json& extra) {
  const double median = sorted_seconds[sorted_seconds.size() / 2];
  nlohmann::json out = {{"impl", "vavae"},       {"bench", o.what},
                        {"batch", o.batch},      {"res", o.resolution},
                        {"threads", at::get_num_threads()}, {"device", device.str()},
                        {"s_per_step", median},  {"images_per_s", static_cast<double>(o.batch) / median},
                        {"peak_rss_mb", peak_rss_mib()}, {"convolutions", nn::convolution_algorithm_name()},
                        {"huge_pages", huge_pages_in_effect()}, {"glibc_tunables", glibc_tunables()}};
  out.update(extra);
  std::cout << out.dump() << std::endl;
}

// The reference's stand-in foundation model: a random frozen ViT whose patch is the autoencoder's
// downsampling factor, so its token grid is the latent grid (width/depth/heads per config).
nn::FoundationModel bench_foundation_model(const std::string& name, const nn::AutoencoderConfig& ae) {
  nn::FoundationModelConfig c;
  c.family = "vit";
  c.input_size = 0;
  const int64_t width = name == "tiny" ? 64 : name == "small" ? 128 : 384;
  c.vit.embed_dim = width;
  c.vit.depth = name == "tiny" ? 2 : name == "small" ? 4 : 12;
  c.vit.num_heads = name == "tiny" ? 2 : name == "small" ? 4 : 6;
  c.vit.mlp_hidden = 4 * width;
  c.vit.patch_size = ae.downsample_factor();
  c.vit.pos_grid = ae.resolution / ae.downsample_factor();
  c.vit.layerscale = false;
  return nn::FoundationModel(c);
}

void run_train_step_bench(const BenchOptions& o, const nn::AutoencoderConfig& config, torch::Device device, Precision precision) {
  loss::ObjectiveConfig oc;  // the reference's LOSS settings, steady state after disc_start
  oc.kl_weight = 1e-6;
  oc.disc_weight = 0.5;
  oc.perceptual_weight = o.no_lpips ? 0.0 : 1.0;
  oc.disc_factor = o.no_disc ? 0.0 : 1.0;
  // --no-disc: no GAN term and no discriminator passes (the reference builds no discriminator);
  // the phase before disc_start is exactly that, with Adam's idle step on zero gradients.
  oc.disc_start = o.no_disc ? std::numeric_limits<int64_t>::max() / 4 : o.disc_start;
  oc.vf_weight = 0.1;
  oc.adaptive_vf = true;
  oc.vf.cos_margin = 0.5;
  oc.vf.distmat_margin = 0.25;
  loss::VAVAEObjective objective(oc);
  randomize_lpips(*objective->perceptual_loss);
  nn::AutoencoderKL autoencoder(config);
  autoencoder->to(device);
  objective->to(device);
  autoencoder->train();
  objective->train();
  nn::VFHead vf_head{nullptr};
  if (!o.no_vf) {
    vf_head = nn::VFHead(bench_foundation_model(o.config, config), config.embed_dim, /*reverse_proj=*/true, /*proj_fix=*/false);
    vf_head->to(device);
  }
  train::TrainStep step(autoencoder, objective, vf_head, {});
  step.precision = objective->precision = precision;
  const torch::Tensor x = torch::rand({o.batch, 3, o.resolution, o.resolution}, device) * 2 - 1;
  int64_t batch = 0;
  train::IterationLog last;
  const auto seconds = time_steps(o, device, [&] {
    last = step.run(x, 2 * batch, 2 * batch + 1);
    ++batch;
  });
  print_result(o, device, seconds, {{"lpips", !o.no_lpips}, {"disc", !o.no_disc}, {"vf", !o.no_vf}, {"disc_start", o.disc_start},
                                    {"precision", precision_name(step.precision)}, {"last_losses", last.generator}});
}

// The distance-matrix term of the VF loss, forward + backward, on a latent grid of --res / 16
// (N = grid^2 positions): row blocks against upstream's full N x N matrices.
void run_vf_loss_bench(const BenchOptions& o, torch::Device device) {
  const int64_t grid = o.resolution / 16, d = o.feature_dim;
  const torch::Tensor z = torch::randn({o.batch, d, grid, grid}, device).requires_grad_(true);
  const torch::Tensor f = torch::randn({o.batch, d, grid, grid}, device);
  loss::VFLossConfig c;
  c.cos_margin = 0.5, c.distmat_margin = 0.25;
  auto step = [&] {
    const auto zn = torch::nn::functional::normalize(z, torch::nn::functional::NormalizeFuncOptions().dim(1)).flatten(2);
    const auto fn = torch::nn::functional::normalize(f, torch::nn::functional::NormalizeFuncOptions().dim(1)).flatten(2);
    const torch::Tensor mdms =
        o.explicit_gram  // upstream's formula
            ? torch::relu((torch::bmm(zn.transpose(1, 2), zn) - torch::bmm(fn.transpose(1, 2), fn)).abs() - c.distmat_margin).mean()
            : loss::marginal_distance_matrix_loss(zn, fn, c.distmat_margin);
    mdms.backward();
  };
  print_result(o, device, time_steps(o, device, step),
               {{"n", grid * grid}, {"feature_dim", d}, {"explicit_gram", o.explicit_gram}});
}

// dit train's optimizer step (dit::train_step: loss, backward, Adam, EMA) for a DiT config's model,
// transport and precision on random latents [--batch, C, --res, --res]; bench/dit_ref.py times
// the same step in PyTorch.
void run_dit_step_bench(const BenchOptions& o, torch::Device device) {
  if (o.config.empty()) throw Error("bench dit-step needs --config (a dit train config: model, transport, optimizer)");
  const config::DiTConfig c = config::load_dit_config(o.config);
  const int64_t channels = o.channels > 0 ? o.channels : c.model.in_channels;
  torch::manual_seed(0);
  dit::LightningDiT model(dit::model_config_for(c, channels, o.resolution));
  dit::LightningDiT ema(model->config);
  model->to(device), ema->to(device);
  for (auto& p : ema->parameters()) p.requires_grad_(false);
  torch::optim::Adam optimizer(model->parameters(), torch::optim::AdamOptions(c.lr).betas({0.9, c.beta2}).weight_decay(0).eps(1e-8));
  const Precision precision = parse_precision(c.mixed_precision, device, o.config + ": train.mixed_precision");
  const torch::Tensor x1 = torch::randn({o.batch, channels, o.resolution, o.resolution});
  const torch::Tensor labels = torch::arange(o.batch) % c.num_classes;
  uint64_t step = 0;
  dit::TransportLoss last;
  const auto seconds = time_steps(o, device, [&] {
    at::Generator rng = at::detail::createCPUGenerator(step++);
    const dit::StepBatch batch = dit::prepare_step(*model, x1, labels, c.transport, rng, 0, o.batch, device);
    last = dit::train_step(*model, *ema, optimizer, batch, c, precision, {});
  });
  int64_t parameters = 0;
  for (const auto& p : model->parameters()) parameters += p.numel();
  print_result(o, device, seconds, {{"channels", channels}, {"parameters", parameters}, {"precision", precision_name(precision)},
                                    {"last_loss", last.total.item<double>()}});
}

// One loader worker's pipeline (read, decode, shorter-side resize, random crop, flip, to tensor)
// over every whole batch of --batch images of --data, on the calling thread: a step is one pass.
void run_loader_bench(const BenchOptions& o) {
  if (o.data.empty()) throw Error("bench loader needs --data FOLDER");
  data::LoaderConfig c;
  c.batch_size = o.batch;
  c.transform.resolution = o.resolution;
  c.transform.random_crop = c.transform.horizontal_flip = true;
  c.transform.jpeg_dct_scaling = o.jpeg_dct_scaling;
  const data::Loader loader(data::image_folder(o.data), c);
  int64_t epoch = 0;
  BenchOptions per_pass = o;
  per_pass.batch = loader.batches_per_epoch() * o.batch;  // images per step
  print_result(per_pass, torch::kCPU, time_steps(o, torch::kCPU, [&] {
                 for (int64_t i = 0; i < loader.batches_per_epoch(); ++i) loader.batch(epoch, i);
                 ++epoch;
               }),
               {{"data", o.data}, {"loader_batch", o.batch}, {"jpeg_dct_scaling", o.jpeg_dct_scaling}});
}

void run_bench(const BenchOptions& o) {
  if (o.what == "loader") return run_loader_bench(o);
  if (o.what == "dit-step") return run_dit_step_bench(o, apply_runtime_options(o.runtime));
  const torch::Device device = apply_runtime_options(o.runtime);
  const nn::AutoencoderConfig config = bench_config(o.config);
  if (o.resolution % config.downsample_factor() != 0)
    throw Error("--res " + std::to_string(o.resolution) + " is not divisible by " + std::to_string(config.downsample_factor()));
  const Precision precision = parse_precision(o.mixed_precision, device, "--mixed-precision");
  if (o.winograd_band_mib > 0) nn::set_winograd_band_bytes(static_cast<int64_t>(o.winograd_band_mib * (1 << 20)));
  torch::manual_seed(0);
  if (o.what == "train-step") return run_train_step_bench(o, config, device, precision);
  if (o.what == "vf-loss") return run_vf_loss_bench(o, device);
  // The half it runs, as the encode, extract-latents and decode commands build it.
  nn::AutoencoderKL model(config, o.what == "encode" ? nn::AutoencoderParts::encoder : nn::AutoencoderParts::decoder);
  model->to(device);
  model->eval();
  torch::NoGradGuard no_grad;
  const int64_t latent = o.resolution / config.downsample_factor();
  const torch::Tensor input = o.what == "encode"
                                  ? torch::rand({o.batch, config.in_channels, o.resolution, o.resolution}, device) * 2 - 1
                                  : torch::randn({o.batch, config.embed_dim, latent, latent}, device);
  auto step = [&] {
    const AutocastScope autocast(device, precision);
    if (o.what == "encode") model->encode(input).sample();
    else model->decode(input);
  };
  print_result(o, device, time_steps(o, device, step), {{"precision", precision_name(precision)}});
}

}  // namespace

void add_bench_command(CLI::App& app) {
  auto* cmd = app.add_subcommand("bench", "time encode, decode or a training iteration with random weights");
  auto o = std::make_shared<BenchOptions>();
  cmd->add_option("what", o->what, "encode, decode, train-step (generator + discriminator step), vf-loss, loader or dit-step")
      ->required()
      ->check(CLI::IsMember({"encode", "decode", "train-step", "vf-loss", "loader", "dit-step"}));
  cmd->add_option("--data", o->data, "loader: a folder of images (one pass over it is a step)");
  cmd->add_flag("--jpeg-dct-scaling", o->jpeg_dct_scaling, "loader: decode JPEGs DCT-scaled (the training default)");
  cmd->add_option("--config", o->config, "tiny, small, f16d32 (default: the released model) or a config file; dit-step: a dit train config");
  cmd->add_option("--channels", o->channels, "dit-step: latent channels (default: the config's model.in_chans)");
  cmd->add_flag("--no-lpips", o->no_lpips, "train-step without the perceptual loss");
  cmd->add_flag("--no-disc", o->no_disc, "train-step without the GAN term and discriminator step");
  cmd->add_flag("--no-vf", o->no_vf, "train-step without the VF loss and its foundation model");
  cmd->add_option("--feature-dim", o->feature_dim, "vf-loss: foundation feature width")->capture_default_str();
  cmd->add_flag("--explicit-gram", o->explicit_gram, "vf-loss: upstream's full N x N Gram matrices (for comparison)");
  cmd->add_option("--mixed-precision", o->mixed_precision, "train-step, encode, decode: no, bf16 or auto (as trainer.mixed_precision)")
      ->capture_default_str();
  cmd->add_option("--winograd-band-mib", o->winograd_band_mib, "train-step, encode, decode: the Winograd band size in MiB (default 4)")
      ->check(CLI::PositiveNumber);
  cmd->add_option("--disc-start", o->disc_start, "train-step: GAN start (default 0: the steady state; large: the phase before it)");
  cmd->add_option("--batch", o->batch, "batch size")->capture_default_str()->check(CLI::PositiveNumber);
  cmd->add_option("--res", o->resolution, "image resolution (dit-step: latent size)")->capture_default_str()->check(CLI::PositiveNumber);
  cmd->add_option("--steps", o->steps, "timed iterations (median reported)")->capture_default_str()->check(CLI::PositiveNumber);
  cmd->add_option("--warmup", o->warmup, "untimed iterations first")->capture_default_str();
  add_runtime_options(*cmd, o->runtime);
  cmd->callback([o] { run_bench(*o); });
}

}  // namespace vavae::cli
