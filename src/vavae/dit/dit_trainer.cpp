#include "vavae/dit/dit_trainer.h"

#include <chrono>
#include <filesystem>
#include <iostream>
#include <sstream>

#include "vavae/common/checked.h"
#include "vavae/common/error.h"
#include "vavae/common/progress.h"
#include "vavae/common/seed.h"
#include "vavae/common/runtime.h"
#include "vavae/common/stop_signal.h"
#include "vavae/config/model_config.h"
#include "vavae/dit/generate.h"
#include "vavae/dit/latent_set.h"
#include "vavae/dist/gradient_reducer.h"
#include "vavae/dist/process_group.h"
#include "vavae/io/weights.h"
#include "vavae/train/checkpoint.h"
#include "vavae/train/optimizer_step.h"
#include "vavae/train/run_folder.h"

namespace vavae::dit {
namespace {

namespace fs = std::filesystem;

const std::string kOptimizer = "optimizer";

std::string step_name(const char* pattern, int64_t step) {
  char buffer[64];
  std::snprintf(buffer, sizeof(buffer), pattern, static_cast<long long>(step));
  return buffer;
}

// The module's parameters and buffers under `prefix` + upstream's names.
void add_prefixed(const torch::nn::Module& module, const std::string& prefix, io::NamedTensors& out) {
  for (const auto& [name, tensor] : io::state_dict(module)) out.emplace_back(prefix + name, tensor);
}

// The part of a weight file under `prefix`, with it removed.
io::WeightFile strip_prefix(const io::WeightFile& file, const std::string& prefix) {
  io::WeightFile part = file;
  part.tensors.clear();
  for (const auto& [name, tensor] : file.tensors)
    if (name.rfind(prefix, 0) == 0) part.tensors.emplace_back(name.substr(prefix.size()), tensor);
  return part;
}

// ema = decay * ema + (1 - decay) * model, as two multi-tensor operations (two kernel launches per
// group of tensors on a GPU, not two per parameter).
void update_ema(LightningDiTImpl& ema, const LightningDiTImpl& model, double decay) {
  torch::NoGradGuard no_grad;
  const auto target = ema.named_parameters();
  std::vector<torch::Tensor> averages, values;
  for (const auto& item : model.named_parameters()) {
    averages.push_back(target[item.key()]);
    values.push_back(item.value());
  }
  at::_foreach_mul_(averages, decay);
  at::_foreach_add_(averages, values, 1 - decay);
}

void save_checkpoint(const std::string& folder, int64_t step, const LightningDiTImpl& model, const LightningDiTImpl& ema,
                     torch::optim::Adam& optimizer, const nlohmann::json& config, int64_t keep) {
  io::NamedTensors tensors;
  std::map<std::string, std::string> metadata = {{"step", std::to_string(step)}, {"config", config.dump()}, {"format", "vavae dit checkpoint"}};
  add_prefixed(model, "model.", tensors);
  add_prefixed(ema, "ema.", tensors);
  train::add_adam_state(optimizer, kOptimizer, tensors, metadata);
  io::write_safetensors((fs::path(folder) / step_name("step_%08lld.safetensors", step)).string(), tensors, metadata);
  train::prune_checkpoints(folder, keep);
}

int64_t load_checkpoint(const std::string& path, LightningDiTImpl& model, LightningDiTImpl& ema, torch::optim::Adam& optimizer) {
  const io::SafetensorsReader reader(path);
  const auto step = reader.metadata().find("step");
  if (step == reader.metadata().end()) throw Error(path + ": not a dit checkpoint (no 'step' in its metadata)");
  const io::WeightFile file = io::read_weights(path);
  io::load_into(model, strip_prefix(file, "model."));
  io::load_into(ema, strip_prefix(file, "ema."));
  train::restore_adam_state(optimizer, kOptimizer, reader);
  return parse_count(step->second, path + ": metadata 'step'");
}

}  // namespace

LightningDiTConfig model_config_for(const config::DiTConfig& c, int64_t channels, int64_t latent_size) {
  LightningDiTConfig m = c.model;
  if (m.in_channels != channels)
    throw Error("model.in_chans is " + std::to_string(m.in_channels) + " but the latents in " + c.data_path + " have " +
                std::to_string(channels) + " channels");
  m.input_size = latent_size;
  m.validate();
  return m;
}

io::WeightFile read_dit_weights(const std::string& path) {
  const io::WeightFile file = io::read_weights(path, {"ema"});  // inference.py: checkpoint["ema"] when there is one
  const bool checkpoint = std::any_of(file.tensors.begin(), file.tensors.end(), [](const auto& t) { return t.first.rfind("ema.", 0) == 0; });
  return checkpoint ? strip_prefix(file, "ema.") : file;
}

nn::AutoencoderKL load_tokenizer(const config::DiTConfig& c, torch::Device device) {
  if (c.vae_weights.empty()) return nullptr;
  nn::AutoencoderKL tokenizer(config::load_autoencoder_config(c.vae_config.empty() ? c.vae_weights : c.vae_config),
                              nn::AutoencoderParts::decoder);  // it decodes samples only
  io::load_into(*tokenizer, io::read_weights(c.vae_weights));
  tokenizer->to(device);
  tokenizer->eval();
  return tokenizer;
}

std::vector<io::Image> decode_samples(nn::AutoencoderKLImpl& tokenizer, const torch::Tensor& latents, const data::LatentStats& stats,
                                      bool normalized, double multiplier, torch::Device device) {
  torch::NoGradGuard no_grad;
  const torch::Tensor z = denormalize_latents(latents.to(device), stats, normalized, multiplier);
  return io::tensor_to_images(tokenizer.decode(z).clamp(-1, 1));
}

StepBatch prepare_step(const LightningDiTImpl& model, const torch::Tensor& x1, const torch::Tensor& y, const TransportConfig& transport,
                       at::Generator generator, int64_t first, int64_t local, torch::Device device) {
  const torch::Tensor kept = model.drop_labels(y, generator);
  const TransportDraws draws = draw_transport(x1, transport, generator);
  auto mine = [&](const torch::Tensor& t) { return t.narrow(0, first, local).to(device); };
  return {mine(x1), mine(kept), {mine(draws.t), mine(draws.x0)}};
}

TransportLoss train_step(LightningDiTImpl& model, LightningDiTImpl& ema, torch::optim::Adam& optimizer, const StepBatch& batch,
                         const config::DiTConfig& c, Precision precision, const std::function<void()>& reduce_gradients) {
  auto velocity = [&](const torch::Tensor& x, const torch::Tensor& t) {
    const AutocastScope autocast(x.device(), precision);
    return model.forward(x, t, batch.y);
  };
  const TransportLoss loss = transport_loss(velocity, batch.x1, batch.draws, c.transport);
  optimizer.zero_grad();
  loss.total.backward();
  if (reduce_gradients) reduce_gradients();
  if (c.max_grad_norm > 0) torch::nn::utils::clip_grad_norm_(model.parameters(), c.max_grad_norm);
  train::adam_step(optimizer);
  update_ema(ema, model, c.ema_decay);
  return loss;
}

DiTRunSummary run_dit_training(const config::DiTConfig& c, const DiTRunOptions& o) {
  if (o.output.empty()) throw Error("dit train needs an output folder");
  // Data parallelism as train.py under accelerate: each rank takes its share of every global batch,
  // gradients are averaged, and rank 0 alone writes.
  const dist::Launch launch = dist::launch_from_environment();
  const torch::Device device = dist::rank_device(resolve_device(c.device), launch);
  const int threads = configure_threads(dist::threads_per_rank(c.threads, launch));
  const Precision precision = parse_precision(c.mixed_precision, device, "train.mixed_precision");
  const auto group = dist::Group::connect(launch, device, std::chrono::milliseconds(static_cast<int64_t>(c.dist_timeout * 1000)));
  std::ostringstream discard;
  std::ostream& out = group->is_root() ? std::cout : discard;
  const LatentSet data(c.data_path, c.latent_norm, c.latent_multiplier, static_cast<uint64_t>(c.global_seed));
  const auto shape = data.latent_shape();
  if (shape[1] != shape[2]) throw Error(c.data_path + ": latents are " + std::to_string(shape[1]) + "x" + std::to_string(shape[2]) + ", not square");
  if (data.max_label() >= c.num_classes)
    throw Error(c.data_path + ": label " + std::to_string(data.max_label()) + " is not below data.num_classes " + std::to_string(c.num_classes));
  const int64_t batch = c.global_batch_size;
  if (batch % group->size() != 0)
    throw Error("train.global_batch_size " + std::to_string(batch) + " is not divisible by the " + std::to_string(group->size()) + " ranks");
  const int64_t local = batch / group->size(), first = local * group->rank();
  const int64_t per_epoch = data.batches_per_epoch(batch);
  if (per_epoch == 0) throw Error(c.data_path + ": " + std::to_string(data.size()) + " latents, fewer than one batch of " + std::to_string(batch));

  torch::manual_seed(static_cast<uint64_t>(c.global_seed));
  LightningDiT model(model_config_for(c, shape[0], shape[1]));
  LightningDiT ema(model->config);
  {
    torch::NoGradGuard no_grad;
    const auto source = model->named_parameters();
    for (auto& item : ema->named_parameters()) item.value().copy_(source[item.key()]);
  }
  dist::broadcast_module(*group, *model);
  dist::broadcast_module(*group, *ema);
  model->to(device), ema->to(device);
  model->train(), ema->eval();
  for (auto& p : ema->parameters()) p.requires_grad_(false);
  torch::optim::Adam optimizer(model->parameters(), torch::optim::AdamOptions(c.lr).betas({0.9, c.beta2}).weight_decay(0).eps(1e-8));

  train::RunFolder folder(o.output, group->is_root());
  folder.write_config(c.resolved);
  int64_t start = 0;
  if (!o.resume.empty()) {
    const std::string path = train::find_checkpoint(o.resume);
    start = load_checkpoint(path, *model, *ema, optimizer);
    folder.rewind_to(start);
    out << "resumed from " << path << " at step " << start << std::endl;
  }
  const int64_t total = o.max_steps > 0 ? o.max_steps : c.max_steps;
  int64_t parameters = 0;
  for (const auto& p : model->parameters()) parameters += p.numel();
  out << "training LightningDiT (" << model->config.depth << " blocks, width " << model->config.hidden_size << ", patch "
            << model->config.patch_size << ", " << parameters << " parameters) on " << data.size() << " latents of "
            << shape[0] << "x" << shape[1] << "x" << shape[2] << " from " << c.data_path << ": " << total << " steps of " << batch << ", "
            << threads << " threads, " << device.str() << ", " << precision_name(precision)
      << (group->distributed() ? ", " + std::to_string(group->size()) + " ranks of " + std::to_string(local) + " (" + group->backend() + ")" : "")
      << std::endl;

  nn::AutoencoderKL tokenizer = load_tokenizer(c, device);
  auto write_samples = [&](int64_t step) {
    if (!tokenizer || !group->is_root()) return;
    GenerateOptions g;
    g.count = 4 * std::min<int64_t>(c.num_classes, 10);
    g.labels.clear();
    for (int64_t i = 0; i < g.count; ++i) g.labels.push_back(i % std::min<int64_t>(c.num_classes, 10));
    g.seed = static_cast<uint64_t>(c.global_seed);
    g.batch_size = std::max<int64_t>(c.per_proc_batch_size, 10);
    g.sampler = c.sampler, g.guidance = c.guidance, g.precision = precision;
    const Generated samples = generate_latents(*ema, g, device);
    const auto images = decode_samples(*tokenizer, samples.latents, data.stats(), data.normalized(), data.multiplier(), device);
    std::vector<std::vector<io::Image>> rows(4);
    for (size_t i = 0; i < images.size(); ++i) rows[i / (images.size() / 4)].push_back(images[i]);
    const io::Image grid = io::make_grid(rows);
    io::write_png((fs::path(o.output) / "images" / step_name("samples_%08lld.png", step)).string(), grid);
    io::write_png((fs::path(o.output) / "images" / "samples_latest.png").string(), grid);
  };

  dist::GradientReducer reducer(group);
  StopSignalScope signals;
  Progress progress(std::max<int64_t>(0, total - start));
  DiTRunSummary summary;
  double window_mse = 0, window_cos = 0;
  int64_t window = 0;
  bool first_window = true;
  auto window_start = std::chrono::steady_clock::now();
  for (int64_t s = start; s < total; ++s) {
    const auto [x1, y] = data.batch(s / per_epoch, s % per_epoch, batch);
    // Every draw of step s comes from (seed, s): a resumed run repeats an uninterrupted one.
    at::Generator draws_rng = at::detail::createCPUGenerator(mix_seed(static_cast<uint64_t>(c.global_seed), static_cast<uint64_t>(s)));
    const StepBatch step_batch = prepare_step(*model, x1, y, c.transport, draws_rng, first, local, device);
    const TransportLoss loss = train_step(*model, *ema, optimizer, step_batch, c, precision, [&] {
      if (!group->distributed()) return;
      reducer.launch(model->parameters());
      reducer.finish();
    });

    window_mse += group->sum_across_ranks(loss.mse.mean().item<double>()) / group->size();
    if (loss.cosine.defined()) window_cos += group->sum_across_ranks(loss.cosine.mean().item<double>()) / group->size();
    ++window;
    const int64_t done = s + 1;
    if (done % c.log_every == 0 || done == total) {
      const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - window_start).count();
      const double mse = window_mse / static_cast<double>(window);
      nlohmann::json line = {{"step", done}, {"split", "train"}, {"epoch", s / per_epoch}, {"train/loss", mse},
                             {"steps_per_s", static_cast<double>(window) / seconds},
                             {"images_per_s", static_cast<double>(window * batch) / seconds}};
      if (loss.cosine.defined()) line["train/cos_loss"] = window_cos / static_cast<double>(window);
      folder.append_metrics(line);
      if (first_window) summary.first_loss = mse, first_window = false;
      summary.last_loss = mse;
      std::ostringstream values;
      values << "loss " << mse;
      if (loss.cosine.defined()) values << " | cos " << window_cos / static_cast<double>(window);
      if (group->is_root()) progress.report(done - start, (done - start) * batch, values.str());
      window_mse = window_cos = 0, window = 0, window_start = std::chrono::steady_clock::now();
    }
    const bool stop = group->any_rank(stop_requested.load());
    if ((done % c.ckpt_every == 0 || done == total || stop) && group->is_root()) {
      save_checkpoint(folder.checkpoints(), done, *model, *ema, optimizer, c.resolved, c.keep_checkpoints);
      io::write_safetensors((fs::path(o.output) / "ema.safetensors").string(), io::state_dict(*ema), {{"step", std::to_string(done)}});
    }
    if (c.sample_every > 0 && done % c.sample_every == 0 && done != total) write_samples(done);
    summary.steps = done;
    if (stop) {
      out << "stopped at step " << done << ": checkpoint saved, resume with --resume " << o.output << std::endl;
      summary.interrupted = true;
      return summary;
    }
  }
  if (start >= total) out << "nothing to do: the run already reached step " << total << std::endl;
  summary.steps = std::max(start, total);
  write_samples(summary.steps);
  return summary;
}

}  // namespace vavae::dit
