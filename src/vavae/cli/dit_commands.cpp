// vavae dit train / sample: LightningDiT on extract-latents folders, and generation through the tokenizer.
#include <filesystem>
#include <fstream>
#include <iostream>

#include "vavae/cli/common.h"
#include "vavae/common/error.h"
#include "vavae/common/precision.h"
#include "vavae/common/runtime.h"
#include "vavae/config/dit_config.h"
#include "vavae/config/model_config.h"
#include "vavae/dit/dit_trainer.h"
#include "vavae/dit/generate.h"
#include "vavae/dit/latent_set.h"
#include "vavae/dist/process_group.h"
#include "vavae/io/weights.h"

namespace vavae::cli {
namespace {

namespace fs = std::filesystem;

struct DiTTrainOptions {
  std::string config, output, resume;
  std::vector<std::string> overrides;
  bool resume_given = false, keys = false;
  int64_t max_steps = 0;
  int nproc = 1;
};

void run_dit_train(const DiTTrainOptions& o) {
  if (o.keys) {
    std::cout << config::dit_keys_table();
    return;
  }
  if (o.config.empty()) throw Error("dit train: --config is required");
  const config::DiTConfig c = config::load_dit_config(o.config, o.overrides);
  if (run_as_local_ranks(o.nproc)) return;
  const bool root = dist::launch_from_environment().rank == 0;
  if (root)
    for (const auto& [path, reason] : c.ignored) std::cout << "ignored " << path << ": " << reason << "\n";
  dit::DiTRunOptions ro;
  ro.output = o.output.empty() ? "runs/" + fs::path(o.config).stem().string() : o.output;
  ro.resume = o.resume_given ? (o.resume.empty() ? ro.output : o.resume) : "";
  ro.max_steps = o.max_steps;
  const dit::DiTRunSummary s = dit::run_dit_training(c, ro);
  if (!s.interrupted && root)
    std::cout << "run folder " << ro.output << ": metrics.jsonl, checkpoints/, ema.safetensors"
              << (c.vae_weights.empty() ? "" : ", images/samples_latest.png") << std::endl;
}

struct DiTSampleOptions {
  std::string run, config, weights, output, grid, npz, latents_out;
  std::vector<std::string> overrides;
  std::vector<int64_t> labels;
  int64_t count = 0;
  uint64_t seed = 0;
  double cfg_scale = -1;
  int64_t steps = 0;
  std::string mixed_precision;
  RuntimeOptions runtime;
};

void run_dit_sample(const DiTSampleOptions& o) {
  const std::string config_path = !o.config.empty() ? o.config : o.run.empty() ? "" : (fs::path(o.run) / "config.yaml").string();
  const std::string weights = !o.weights.empty() ? o.weights : o.run.empty() ? "" : (fs::path(o.run) / "ema.safetensors").string();
  if (config_path.empty() || weights.empty()) throw Error("dit sample: give --run RUN_DIR, or --config and --weights");
  if (o.output.empty() && o.grid.empty() && o.npz.empty() && o.latents_out.empty())
    throw Error("dit sample: give --output, --grid, --npz or --latents-out");
  config::DiTConfig c = config::load_dit_config(config_path, o.overrides);
  if (o.cfg_scale >= 0) c.guidance.scale = o.cfg_scale;
  if (o.steps > 0) c.sampler.num_steps = o.steps;
  const torch::Device device = apply_runtime_options(o.runtime);
  const auto stats = data::read_latent_stats(c.data_path);
  if (c.latent_norm && !stats) throw Error(c.data_path + ": no latents_stats.pt to de-normalise samples with (data.data_path)");
  const data::LatentStats s = stats ? *stats : data::LatentStats{};
  const int64_t channels = c.model.in_channels;
  // The latent size follows from the weights' pos_embed ([1, T, D], T = (size / patch)^2).
  const io::WeightFile file = dit::read_dit_weights(weights);
  int64_t tokens = 0;
  for (const auto& [name, t] : file.tensors)
    if (name == "pos_embed" && t.dim() == 3) tokens = t.size(1);
  const int64_t patch = c.patch_size > 0 ? c.patch_size : dit::lightningdit_preset(c.model_type).patch_size;
  const auto grid_side = static_cast<int64_t>(std::llround(std::sqrt(static_cast<double>(tokens))));
  if (tokens == 0 || grid_side * grid_side != tokens) throw Error(weights + ": no square pos_embed to read the latent size from");
  dit::LightningDiT model(dit::model_config_for(c, channels, grid_side * patch));
  io::load_into(*model, file);
  model->to(device);
  dit::GenerateOptions g;
  g.count = o.count > 0 ? o.count : c.fid_num;
  g.labels = o.labels;
  g.seed = o.seed;
  g.batch_size = c.per_proc_batch_size;
  g.sampler = c.sampler, g.guidance = c.guidance;
  g.precision = o.mixed_precision.empty() ? parse_precision(c.mixed_precision, device, config_path + ": train.mixed_precision")
                                          : parse_precision(o.mixed_precision, device, "--mixed-precision");
  std::cout << "sampling " << g.count << " latents (" << g.sampler.method << ", " << g.sampler.num_steps << " time points, shift "
            << g.sampler.timestep_shift << ", cfg " << g.guidance.scale << ", " << precision_name(g.precision) << ")" << std::endl;
  const dit::Generated samples = dit::generate_latents(*model, g, device);
  if (!o.latents_out.empty()) {
    io::write_safetensors(o.latents_out, {{"latents", dit::denormalize_latents(samples.latents, s, c.latent_norm, c.latent_multiplier)},
                                          {"labels", samples.labels}});
    std::cout << "wrote " << o.latents_out << std::endl;
  }
  if (o.output.empty() && o.grid.empty() && o.npz.empty()) return;
  if (c.vae_weights.empty()) throw Error(config_path + ": vae.weights is empty: no tokenizer to decode the samples with");
  nn::AutoencoderKL tokenizer = dit::load_tokenizer(c, device);
  std::vector<io::Image> images;
  for (int64_t first = 0; first < g.count; first += 64) {
    const auto part = dit::decode_samples(*tokenizer, samples.latents.narrow(0, first, std::min<int64_t>(64, g.count - first)), s, c.latent_norm,
                                          c.latent_multiplier, device);
    images.insert(images.end(), part.begin(), part.end());
  }
  if (!o.output.empty()) {
    fs::create_directories(o.output);
    for (size_t i = 0; i < images.size(); ++i) {
      char name[32];
      std::snprintf(name, sizeof(name), "%06zu.png", i);  // inference.py's names, which tools/save_npz.py reads
      io::write_png((fs::path(o.output) / name).string(), images[i]);
    }
    std::ofstream labels(fs::path(o.output) / "labels.txt");
    for (int64_t i = 0; i < samples.labels.size(0); ++i) labels << samples.labels[i].item<int64_t>() << "\n";
    std::cout << "wrote " << images.size() << " PNGs and labels.txt to " << o.output << std::endl;
  }
  if (!o.npz.empty()) {
    io::write_npz_images(o.npz, images);
    std::cout << "wrote " << o.npz << " (arr_0: " << images.size() << " images, for ADM's evaluation suite)" << std::endl;
  }
  if (!o.grid.empty()) {
    const size_t columns = static_cast<size_t>(std::ceil(std::sqrt(static_cast<double>(images.size()))));
    std::vector<std::vector<io::Image>> rows;
    for (size_t i = 0; i < images.size(); ++i) {
      if (i % columns == 0) rows.emplace_back();
      rows.back().push_back(images[i]);
    }
    io::write_png(o.grid, io::make_grid(rows));
    std::cout << "wrote " << o.grid << std::endl;
  }
}

}  // namespace

void add_dit_commands(CLI::App& app) {
  auto* dit = app.add_subcommand("dit", "LightningDiT: train a diffusion model on extract-latents folders, sample through the tokenizer");
  dit->require_subcommand(1);
  {
    auto* cmd = dit->add_subcommand("train", "train LightningDiT (upstream's config layout: data, vae, model, train, optimizer, transport, sample)");
    auto o = std::make_shared<DiTTrainOptions>();
    cmd->add_option("--config", o->config, "config (YAML or JSON; upstream's configs/lightningdit_*.yaml load as they are)");
    cmd->add_flag("--keys", o->keys, "print the table of every config key");
    cmd->add_option("--set", o->overrides, "override a config value: key.path=value (repeatable)");
    cmd->add_option("--output", o->output, "run folder (default runs/<config name>)");
    cmd->add_option("--resume", o->resume, "continue from the newest checkpoint of a run folder (default: --output)")->expected(0, 1);
    cmd->add_option("--max-steps", o->max_steps, "cap the run at this many steps");
    add_nproc_option(*cmd, o->nproc);
    cmd->callback([o, cmd] {
      if (cmd->count("--resume") > 0) o->resume_given = true;
      run_dit_train(*o);
    });
  }
  {
    auto* cmd = dit->add_subcommand("sample", "generate latents with a trained LightningDiT and decode them with the tokenizer");
    auto o = std::make_shared<DiTSampleOptions>();
    cmd->add_option("--run", o->run, "a dit train run folder (its config.yaml and ema.safetensors)");
    cmd->add_option("--config", o->config, "config instead of the run's");
    cmd->add_option("--weights", o->weights, "weights instead of the run's EMA: ema.safetensors, a checkpoint, or upstream's .pt");
    cmd->add_option("--set", o->overrides, "override a config value: key.path=value (repeatable)");
    cmd->add_option("--num", o->count, "samples (default sample.fid_num)");
    cmd->add_option("--labels", o->labels, "class labels, cycled over the samples (default: 0, 1, 2, ...)")->delimiter(',');
    cmd->add_option("--seed", o->seed, "seed: sample i's noise comes from (seed, i)")->capture_default_str();
    cmd->add_option("--cfg-scale", o->cfg_scale, "guidance scale (default sample.cfg_scale)");
    cmd->add_option("--steps", o->steps, "time points of the sampler (default sample.num_sampling_steps)");
    cmd->add_option("--mixed-precision", o->mixed_precision, "no, bf16 or auto (default train.mixed_precision)");
    cmd->add_option("--output", o->output, "a folder for one PNG per sample (NNNNNN.png) and labels.txt");
    cmd->add_option("--npz", o->npz, "an ADM-style .npz (arr_0: uint8 [N, H, W, 3]) for FID tools");
    cmd->add_option("--grid", o->grid, "one PNG with all samples in a grid");
    cmd->add_option("--latents-out", o->latents_out, "a .safetensors of the de-normalised latents and labels");
    add_runtime_options(*cmd, o->runtime);
    cmd->callback([o] { run_dit_sample(*o); });
  }
}

}  // namespace vavae::cli
