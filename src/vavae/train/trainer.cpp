#include "vavae/train/trainer.h"

#include <ATen/CPUGeneratorImpl.h>
#include <nlohmann/json.hpp>

#include <atomic>
#include <chrono>
#include <cmath>
#include <csignal>
#include <iomanip>
#include <iostream>

#include "vavae/common/error.h"
#include "vavae/common/json.h"
#include "vavae/common/progress.h"
#include "vavae/common/runtime.h"
#include "vavae/common/stop_signal.h"
#include "vavae/data/loader.h"
#include "vavae/dist/gradient_reducer.h"
#include "vavae/dist/process_group.h"
#include "vavae/io/weights.h"
#include "vavae/loss/vf_loss.h"
#include "vavae/nn/convolution.h"
#include "vavae/nn/foundation_model.h"
#include "vavae/train/checkpoint.h"
#include "vavae/train/run_folder.h"
#include "vavae/train/schedule.h"

namespace vavae::train {
namespace {


std::string fmt(double v, int precision = 4) {
  std::ostringstream s;
  s << std::setprecision(precision) << v;
  return s.str();
}

// The foundation model's token grid must map onto the latent grid: checked once on a blank batch
// before training, so a mismatch is a config error rather than a failure at the first step.
void check_feature_grid(nn::FoundationModelImpl& foundation, const config::TrainConfig& c, torch::Device device) {
  const int64_t r = c.train.resolution, f = c.autoencoder.downsample_factor();
  try {
    torch::NoGradGuard no_grad;
    const torch::Tensor grid = foundation.features(torch::zeros({1, 3, r, r}, device));
    loss::align_features(grid, r / f, r / f);
  } catch (const Error& e) {
    throw Error("model.params.foundation (" + c.foundation.use_vf + ") cannot serve " + std::to_string(r) + "x" + std::to_string(r) +
                " images with a " + std::to_string(r / f) + "x" + std::to_string(r / f) + " latent grid: " + e.what());
  }
}

// A stream that drops what it is given: the log of data-parallel ranks other than 0.
std::ostream& silent() {
  static std::ostream stream(nullptr);
  return stream;
}

// The ranks' validation results as one: image-weighted means over the shards (rank 0's grid).
void reduce_evaluation(dist::Group& group, eval::EvalResult& r) {
  if (!group.distributed()) return;
  const double images = group.sum_across_ranks(static_cast<double>(r.images));
  auto mean = [&](double v) { return group.sum_across_ranks(v * static_cast<double>(r.images)) / std::max(images, 1.0); };
  r.psnr = mean(r.psnr), r.ssim = mean(r.ssim), r.l1 = mean(r.l1);
  if (r.lpips >= 0) r.lpips = mean(r.lpips);
  for (auto& [k, v] : r.losses) v = mean(v);
  r.images = static_cast<int64_t>(images);
}

}  // namespace

RunSummary run_training(const config::TrainConfig& c, const RunOptions& o) {
  const dist::Launch launch = dist::launch_from_environment();
  const torch::Device device = dist::rank_device(resolve_device(c.trainer.device), launch);
  const int threads = configure_threads(dist::threads_per_rank(static_cast<int>(c.trainer.threads), launch));
  const auto timeout = std::chrono::milliseconds(static_cast<int64_t>(c.trainer.dist_timeout * 1000));
  const std::shared_ptr<dist::Group> group = dist::Group::connect(launch, device, timeout);  // of one without a launcher
  std::ostream& out = group->is_root() ? std::cout : silent();
  RunFolder folder(o.output, group->is_root());
  folder.write_config(c.resolved);

  torch::manual_seed(c.trainer.seed);
  nn::AutoencoderKL autoencoder(c.autoencoder);
  loss::VAVAEObjective objective(c.objective);
  if (c.objective.perceptual_weight > 0 && !c.lpips_weights.empty()) nn::load_lpips(*objective->perceptual_loss, c.lpips_weights, c.lpips_heads);
  nn::VFHead vf_head{nullptr};
  if (c.use_vf) {
    nn::FoundationModel foundation = nn::make_foundation_model(c.foundation);
    foundation->to(device);
    check_feature_grid(*foundation, c, device);
    vf_head = nn::VFHead(foundation, c.autoencoder.embed_dim, c.reverse_proj, c.proj_fix);
  }
  autoencoder->to(device);
  objective->to(device);
  if (vf_head) vf_head->to(device);
  autoencoder->train();
  objective->train();
  OptimizerConfig oc;
  oc.learning_rate = c.learning_rate;
  TrainStep step(autoencoder, objective, vf_head, oc);
  step.precision = objective->precision = parse_precision(c.trainer.mixed_precision, device, "trainer.mixed_precision");
  // Starting weights in upstream's order: the model's ckpt_path (with ignore_keys), then weight_init.
  if (!c.ckpt_path.empty())
    out << "ckpt_path " << c.ckpt_path << ": "
              << load_upstream_state_dict(step, io::read_weights(c.ckpt_path), c.ignore_keys).summary() << std::endl;
  if (!c.weight_init.empty())
    out << "weight_init " << c.weight_init << ": " << load_upstream_state_dict(step, io::read_weights(c.weight_init)).summary()
              << std::endl;
  if (c.objective.perceptual_weight > 0 && !objective->perceptual_loss->has_weights())
    throw Error("model.params.lossconfig.params.perceptual_weight is " + std::to_string(c.objective.perceptual_weight) +
                " but model.params.lpips.weights is not set and weight_init holds no loss.perceptual_loss (LPIPS needs VGG16 + "
                "linear-head weights; or set the weight to 0)");

  data::LoaderConfig lc;
  lc.batch_size = c.batch_size, lc.seed = c.trainer.seed, lc.workers = std::max<int64_t>(1, c.num_workers);
  lc.rank = group->rank(), lc.world_size = group->size();
  lc.transform = {c.train.resolution, c.train.pad, c.train.random_crop, c.train.flip, c.train.jpeg_dct_scaling};
  data::Loader loader(data::subset(data::open_dataset(c.train.source), static_cast<size_t>(c.train.limit)), lc);
  const auto validation = data::open_dataset(c.validation.source);
  const int64_t per_epoch = loader.batches_per_epoch();
  const std::vector<Stage> stages = schedule(c, per_epoch, o.max_steps);
  const int64_t total = stages.back().end;

  at::Generator noise = at::detail::createCPUGenerator(c.trainer.seed + 1);
  int64_t start = 0;
  if (!o.resume.empty()) {
    const std::string ckpt = find_checkpoint(o.resume);
    start = load_checkpoint(ckpt, step, noise).step;
    folder.rewind_to(start);
    out << "resumed from " << ckpt << " at step " << start << std::endl;
    if (start > stage_at(stages, start).origin && c.objective.lpips_dropout == "upstream") objective->set_lpips_dropout(true);
  }
  // Data parallelism: rank 0's weights everywhere, gradients averaged in buckets (the decoder's
  // while the encoder's backward pass runs), skips and stops agreed by all ranks.
  dist::broadcast_module(*group, *autoencoder);
  dist::broadcast_module(*group, *objective->discriminator);
  if (vf_head) dist::broadcast_module(*group, *vf_head->linear_proj);
  dist::GradientReducer reducer(group);
  if (group->distributed()) {
    objective->decoder_gradients_ready = [&](const std::vector<torch::Tensor>& p) { reducer.launch(p); };
    step.after_backward = [&](const std::vector<torch::Tensor>& p) {
      reducer.launch(p);
      reducer.finish();
    };
    step.all_ranks_finite = [&](bool finite) { return group->all_ranks(finite); };
    step.noise_rank = group->rank(), step.noise_ranks = group->size();
    if (c.trainer.adaptive_weights == "global")
      objective->reduce_last_layer_gradient = [&](const torch::Tensor& g) { return group->mean_across_ranks(g); };
  }
  const int64_t global_batch = c.batch_size * group->size();
  out << "training on " << loader.dataset().describe() << ": " << total << " steps of " << global_batch;
  if (group->distributed())
    out << " (" << c.batch_size << " on each of " << group->size() << " ranks, " << group->backend() << ", adaptive weights "
        << c.trainer.adaptive_weights << ")";
  out << " (" << fmt(static_cast<double>(total) / static_cast<double>(per_epoch), 3) << " epochs), " << threads << " threads, "
      << device.str() << ", " << precision_name(step.precision) << (device.is_cpu() ? ", " + nn::convolution_algorithm_name() + " convolutions" + (huge_pages_in_effect() ? ", huge pages" : "") : "") << (c.use_vf ? ", VF loss against " + c.foundation.use_vf : ", no VF loss")
      << std::endl;

  StopSignalScope signals;
  auto save = [&](int64_t done, const std::string& stage) {
    folder.save(step, {done, stage, json_text(c.resolved)}, noise, c.trainer.keep_checkpoints);
  };
  auto validate = [&](int64_t done, const std::string& stage, bool final_pass) {
    nn::LPIPSImpl* lpips = c.objective.perceptual_weight > 0 ? objective->perceptual_loss.get() : nullptr;
    // Upstream's validation_step: the whole module in eval mode, a posterior sample, both loss
    // branches at the current global step (no autograd: the adaptive weights fall back to 0).
    const Stage& at = stage_at(stages, std::max<int64_t>(0, done - 1));
    const int64_t global_step = 2 * (done - at.origin);
    at::Generator val_noise = at::detail::createCPUGenerator(c.trainer.seed + 2 + static_cast<uint64_t>(done));
    eval::ValidationLosses losses = [&](const torch::Tensor& x) {
      const bool objective_training = objective->is_training();
      objective->eval();
      const loss::GeneratorInputs in = step.forward(x, val_noise);
      std::map<std::string, double> terms = objective->generator_loss(in, global_step).log;
      for (const auto& [k, v] : objective->discriminator_loss(x, in.reconstructions, global_step + 1).log) terms[k] = v;
      if (objective_training) objective->train();
      return terms;
    };
    // Each rank evaluates its contiguous share; rank 0's holds the first images, those of the grid.
    const auto evaluated = data::subset(validation, final_pass ? 0 : static_cast<size_t>(c.validation.limit));
    const auto [first, last] = dist::shard_range(static_cast<int64_t>(evaluated->size()), group->rank(), group->size());
    eval::EvalResult r = eval::evaluate(autoencoder, *data::slice(evaluated, static_cast<size_t>(first), static_cast<size_t>(last)),
                                        c.validation, 0, c.trainer.val_images, c.batch_size, device, lpips, losses);
    reduce_evaluation(*group, r);
    folder.write_grid(done, r.grid);
    nlohmann::json line = {{"step", done},        {"stage", stage},     {"split", final_pass ? "test" : "val"},
                           {"val/psnr", r.psnr},  {"val/ssim", r.ssim}, {"val/l1", r.l1},
                           {"val/images", r.images}};
    if (lpips) line["val/lpips"] = r.lpips;
    for (const auto& [k, v] : r.losses) line["val/" + k] = v;
    folder.append_metrics(line);
    out << (final_pass ? "evaluation" : "validation") << " at step " << done << " on " << r.images << " images: PSNR "
              << fmt(r.psnr) << " dB, SSIM " << fmt(r.ssim) << std::endl;
    return r;
  };

  Progress progress(std::max<int64_t>(0, total - start));
  RunSummary summary;
  loader.start(start / per_epoch, start % per_epoch);
  std::string current_stage;
  int64_t nonfinite_in_a_row = 0;
  double waited_s = 0, stepped_s = 0;  // since the last log: blocked on the loader, and in all
  for (int64_t s = start; s < total; ++s) {
    const Stage& stage = stage_at(stages, s);
    if (stage.config.name != current_stage) {
      const loss::ObjectiveConfig& oc2 = stage.config.objective;
      objective->set_config(oc2);
      current_stage = stage.config.name;
      const bool restarting = stage.config.restart && s == stage.begin;
      if (restarting) {
        // A new run, as upstream started each stage: Adam from scratch, LPIPS as built.
        step.generator_optimizer->state().clear();
        step.discriminator_optimizer->state().clear();
        objective->set_lpips_dropout(false);
      }
      out << "stage '" << current_stage << "' from step " << s << (restarting ? " (restarted)" : "") << ": vf_weight "
                << oc2.vf_weight << ", margins " << oc2.vf.cos_margin << "/" << oc2.vf.distmat_margin << ", disc_start "
                << oc2.disc_start << std::endl;
    }
    const auto step_began = std::chrono::steady_clock::now();
    data::Batch batch = loader.next();
    waited_s += std::chrono::duration<double>(std::chrono::steady_clock::now() - step_began).count();
    if (o.before_step) o.before_step(s, batch.images);
    // Upstream's global_step advances once per optimizer step: 2 per batch, from the last restart.
    const int64_t upstream_step = 2 * (s - stage.origin);
    const int64_t done = s + 1;
    const bool logged = done % c.trainer.log_every == 0 || done == total;
    const double lr = c.learning_rate * learning_rate_factor(c.trainer.lr_schedule, s, total);
    for (auto* optimizer : {step.generator_optimizer.get(), step.discriminator_optimizer.get()})
      for (auto& group : optimizer->param_groups()) static_cast<torch::optim::AdamOptions&>(group.options()).lr(lr);
    const IterationLog log = step.run(batch.images.to(device), upstream_step, upstream_step + 1, noise, logged);
    stepped_s += std::chrono::duration<double>(std::chrono::steady_clock::now() - step_began).count();
    if (log.skipped) {
      ++summary.skipped_steps;
      ++nonfinite_in_a_row;
      out << "step " << done << ": non-finite loss or gradient, update skipped (" << nonfinite_in_a_row << " in a row, "
                << summary.skipped_steps << " in all)" << std::endl;
      folder.append_metrics({{"step", done}, {"stage", current_stage}, {"split", "train"}, {"train/skipped", true},
                                 {"skipped_steps", summary.skipped_steps}});
      if (nonfinite_in_a_row >= c.trainer.max_nonfinite_steps) {
        throw Error(std::to_string(nonfinite_in_a_row) + " steps in a row (to step " + std::to_string(done) +
                    ") had non-finite losses or gradients: stopping (trainer.max_nonfinite_steps)" + folder.last_checkpoint_note());
      }
    } else {
      nonfinite_in_a_row = 0;
    }
    // Upstream's image logger first fires at the end of the first batch and then calls .train()
    // on the whole module, LPIPS included: from then on its dropout is active.
    if (s == stage.origin && stage.config.objective.lpips_dropout == "upstream") objective->set_lpips_dropout(true);
    if (!log.skipped && logged) {
      // What is logged is the global batch's: each value averaged over the ranks.
      const auto averaged = [&](const loss::LogValues& values) {
        loss::LogValues out;
        for (const auto& [k, v] : values) out[k] = group->sum_across_ranks(v) / group->size();
        return out;
      };
      nlohmann::json line = {{"step", done}, {"stage", current_stage}, {"split", "train"}, {"epoch", s / per_epoch},
                             {"images_per_s", static_cast<double>((done - start) * global_batch) / progress.elapsed_seconds()}};
      const loss::LogValues generator = averaged(log.generator), discriminator = averaged(log.discriminator);
      for (const auto& [k, v] : generator) line["train/" + k] = v;
      for (const auto& [k, v] : discriminator) line["train/" + k] = v;
      // The share of the steps' time spent waiting for the loader: 0 when decoding keeps up.
      const double data_wait = stepped_s > 0 ? waited_s / stepped_s : 0.0;
      waited_s = stepped_s = 0;
      line["data_wait"] = data_wait;
      line["skipped_images"] = loader.skipped();
      line["skipped_steps"] = summary.skipped_steps;
      line["lr"] = lr;
      folder.append_metrics(line);
      std::string values = "stage " + current_stage + " | nll " + fmt(generator.at("nll_loss"));
      if (generator.count("vf_loss")) values += " | vf " + fmt(generator.at("vf_loss")) + " (w " + fmt(generator.at("vf_weight"), 3) + ")";
      if (generator.count("g_loss")) values += " | g " + fmt(generator.at("g_loss"));
      values += " | data wait " + fmt(100 * data_wait, 2) + "%";
      if (group->is_root()) progress.report(done - start, (done - start) * global_batch, values);
    }
    if (done % c.trainer.val_every == 0 && done != total) validate(done, current_stage, false);
    // A step that changed nothing writes no checkpoint, so the last one written stays the last good one.
    // A signal to any rank stops them all at the same step.
    const bool stop = group->any_rank(stop_requested);
    if ((!log.skipped && (done % c.trainer.checkpoint_every == 0 || done == total)) || stop) save(done, current_stage);
    summary.steps = done;
    if (stop) {
      out << "stopped at step " << done << ": checkpoint saved, resume with --resume " << o.output << std::endl;
      summary.interrupted = true;
      return summary;
    }
  }
  if (start >= total) out << "nothing to do: the run already reached step " << total << std::endl;
  if (loader.skipped() > 0) out << "skipped " << loader.skipped() << " unreadable images" << std::endl;
  summary.steps = std::max(start, total);
  summary.final_eval = validate(summary.steps, current_stage.empty() ? "done" : current_stage, true);
  return summary;
}

}  // namespace vavae::train
