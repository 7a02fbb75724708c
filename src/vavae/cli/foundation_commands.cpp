// vavae train-fm / probe: a foundation model of your own (MAE pre-training) and its linear probe.
#include <ATen/CPUGeneratorImpl.h>
#include <nlohmann/json.hpp>

#include <cmath>
#include <filesystem>
#include <iomanip>
#include <iostream>

#include "vavae/cli/common.h"
#include "vavae/common/error.h"
#include "vavae/common/progress.h"
#include "vavae/data/loader.h"
#include "vavae/eval/linear_probe.h"
#include "vavae/io/files.h"
#include "vavae/io/weights.h"
#include "vavae/nn/foundation_model.h"
#include "vavae/train/mae.h"

namespace vavae::cli {
namespace {

namespace fs = std::filesystem;

struct ProbeOptions {
  std::string train_data = "fashion-mnist:train", test_data = "fashion-mnist:test";
  size_t train_count = 5000, test_count = 5000;
  int64_t resolution = 32, pad = 2;
};

void add_probe_options(CLI::App& cmd, ProbeOptions& p) {
  cmd.add_option("--probe-train", p.train_data, "labelled data the probe is fitted on")->capture_default_str();
  cmd.add_option("--probe-test", p.test_data, "labelled data the probe is scored on")->capture_default_str();
  cmd.add_option("--probe-train-count", p.train_count, "images used for fitting (0 = all)")->capture_default_str();
  cmd.add_option("--probe-test-count", p.test_count, "images used for scoring (0 = all)")->capture_default_str();
}

// Mean of the patch tokens after the final norm: the pooled feature the probe sees.
torch::Tensor pooled(nn::ViTImpl& vit, const torch::Tensor& images) {
  return vit.forward_features(images).slice(1, vit.config.num_prefix_tokens()).mean(1);
}

// Test accuracy of raw pixels, a randomly initialised ViT of the same shape, and the given one.
nlohmann::json run_probes(nn::ViTImpl& trained, const ProbeOptions& p, torch::Device device) {
  const auto train_set = data::open_dataset(p.train_data), test_set = data::open_dataset(p.test_data);
  nlohmann::json out;
  auto probe = [&](const std::string& name, const std::function<torch::Tensor(const torch::Tensor&)>& embed) {
    const auto a = eval::embed_dataset(*train_set, p.train_count, p.resolution, p.pad, embed);
    const auto b = eval::embed_dataset(*test_set, p.test_count, p.resolution, p.pad, embed);
    const eval::ProbeResult r = eval::linear_probe(a.features, a.labels, b.features, b.labels);
    out[name] = {{"test_accuracy", r.test_accuracy}, {"train_accuracy", r.train_accuracy}, {"dims", r.dims}};
    std::cout << "linear probe " << std::left << std::setw(12) << name << std::right << std::fixed << std::setprecision(2)
              << std::setw(7) << 100 * r.test_accuracy << "% test accuracy (" << r.dims << " features)" << std::endl;
  };
  probe("pixels", [](const torch::Tensor& x) { return x.mean(1).flatten(1); });
  torch::manual_seed(12345);
  train::MAE random_init(train::MAEConfig{trained.config});
  random_init->encoder->to(device);
  random_init->encoder->eval();
  probe("random_vit", [&](const torch::Tensor& x) { return pooled(*random_init->encoder, x.to(device)); });
  trained.eval();
  probe("trained_vit", [&](const torch::Tensor& x) { return pooled(trained, x.to(device)); });
  out["setup"] = {{"train", p.train_data}, {"test", p.test_data}, {"train_count", p.train_count}, {"test_count", p.test_count}};
  return out;
}

struct TrainFMOptions {
  std::string data = "fashion-mnist:train";
  std::string output = "runs/fm";
  int64_t resolution = 32, pad = 2, patch = 4, dim = 128, depth = 4, heads = 4, batch_size = 256;
  double epochs = 2, lr = 1e-3, weight_decay = 0.05, warmup_epochs = 0.25;
  int64_t max_steps = 0;
  uint64_t seed = 0;
  bool probe = true;
  ProbeOptions probe_options;
  RuntimeOptions runtime;
};

void run_train_fm(TrainFMOptions o) {
  const torch::Device device = apply_runtime_options(o.runtime);
  if (o.resolution % o.patch != 0) throw Error("--resolution " + std::to_string(o.resolution) + " is not divisible by --patch");
  torch::manual_seed(o.seed);
  data::LoaderConfig lc;
  lc.batch_size = o.batch_size, lc.seed = o.seed, lc.workers = 2;
  lc.transform.resolution = o.resolution, lc.transform.pad = o.pad, lc.transform.random_crop = true, lc.transform.horizontal_flip = true;
  data::Loader loader(data::open_dataset(o.data), lc);
  const int64_t per_epoch = loader.batches_per_epoch();
  int64_t total = static_cast<int64_t>(std::ceil(o.epochs * static_cast<double>(per_epoch)));
  if (o.max_steps > 0) total = std::min(total, o.max_steps);

  train::MAEConfig mc;
  mc.encoder.patch_size = o.patch, mc.encoder.embed_dim = o.dim, mc.encoder.depth = o.depth, mc.encoder.num_heads = o.heads;
  mc.encoder.mlp_hidden = 4 * o.dim, mc.encoder.layerscale = false, mc.encoder.pos_grid = o.resolution / o.patch;
  train::MAE mae(mc);
  mae->to(device);
  mae->train();
  const double lr = o.lr * static_cast<double>(o.batch_size) / 256.0;
  torch::optim::AdamW optimizer(mae->parameters(), torch::optim::AdamWOptions(lr).betas({0.9, 0.95}).weight_decay(o.weight_decay));
  const int64_t warmup = static_cast<int64_t>(o.warmup_epochs * static_cast<double>(per_epoch));
  at::Generator masks = at::detail::createCPUGenerator(o.seed + 1);

  std::cout << "train-fm: MAE on " << loader.dataset().describe() << ", ViT patch " << o.patch << " dim " << o.dim << " depth "
            << o.depth << ", " << total << " steps of " << o.batch_size << std::endl;
  fs::create_directories(o.output);
  Progress progress(total);
  loader.start(0, 0);
  std::vector<double> losses;
  for (int64_t step = 1; step <= total; ++step) {
    const double factor = step <= warmup ? static_cast<double>(step) / std::max<int64_t>(1, warmup)
                                         : 0.5 * (1 + std::cos(M_PI * static_cast<double>(step - warmup) / std::max<int64_t>(1, total - warmup)));
    for (auto& group : optimizer.param_groups()) static_cast<torch::optim::AdamWOptions&>(group.options()).lr(lr * factor);
    const data::Batch batch = loader.next();
    optimizer.zero_grad();
    const torch::Tensor loss = mae->loss(batch.images.to(device), masks);
    loss.backward();
    optimizer.step();
    losses.push_back(loss.item<double>());
    if (step % 20 == 0 || step == total || step == 1) {
      std::ostringstream v;
      v << "loss " << std::fixed << std::setprecision(4) << losses.back();
      progress.report(step, step * o.batch_size, v.str());
    }
  }
  const std::string path = (fs::path(o.output) / "fm.safetensors").string();
  io::write_safetensors(path, io::state_dict(*mae->encoder),
                        {{"vavae_vit_config", nn::vit_config_to_json(mc.encoder)},
                         {"vavae_foundation", "mae"},
                         {"input_resolution", std::to_string(o.resolution)},
                         {"data", o.data}});
  nlohmann::json report = {{"steps", total}, {"first_loss", losses.front()}, {"last_loss", losses.back()}, {"seconds", progress.elapsed_seconds()}};
  if (o.probe) {
    o.probe_options.resolution = o.resolution, o.probe_options.pad = o.pad;  // probe what was trained
    report["probe"] = run_probes(*mae->encoder, o.probe_options, device);
  }
  io::write_file_atomically((fs::path(o.output) / "train_fm.json").string(), [&](std::ostream& out) { out << report.dump(2) << "\n"; });
  std::cout << "train-fm: wrote " << path << " (loss " << losses.front() << " -> " << losses.back() << ")" << std::endl;
}

void run_probe(const std::string& fm, ProbeOptions p, const RuntimeOptions& rt) {
  const torch::Device device = apply_runtime_options(rt);
  nn::FoundationModel model = nn::load_foundation_model(fm, "upstream");
  model->to(device);
  if (model->config.input_size > 0) p.resolution = model->config.input_size, p.pad = 0;
  const nlohmann::json result = run_probes(*model->vit, p, device);
  std::cout << result.dump(2) << std::endl;
}

}  // namespace

void add_foundation_commands(CLI::App& app) {
  {
    auto* cmd = app.add_subcommand("train-fm", "pre-train a small ViT foundation model (MAE) and linear-probe it");
    auto o = std::make_shared<TrainFMOptions>();
    cmd->add_option("--data", o->data, "training images (fashion-mnist, idx:DIR, an image folder or a .txt list)")->capture_default_str();
    cmd->add_option("--output", o->output, "output folder (fm.safetensors, train_fm.json)")->capture_default_str();
    cmd->add_option("--resolution", o->resolution, "image size after padding and cropping")->capture_default_str();
    cmd->add_option("--pad", o->pad, "zero padding on every side first (28 + 2*2 = 32 for Fashion-MNIST)")->capture_default_str();
    cmd->add_option("--patch", o->patch, "ViT patch size")->capture_default_str();
    cmd->add_option("--dim", o->dim, "ViT width")->capture_default_str();
    cmd->add_option("--depth", o->depth, "ViT blocks")->capture_default_str();
    cmd->add_option("--heads", o->heads, "attention heads")->capture_default_str();
    cmd->add_option("--batch-size", o->batch_size, "images per step")->capture_default_str()->check(CLI::PositiveNumber);
    cmd->add_option("--epochs", o->epochs, "passes over the data")->capture_default_str();
    cmd->add_option("--max-steps", o->max_steps, "stop after this many steps (0: no cap)")->capture_default_str();
    cmd->add_option("--lr", o->lr, "base learning rate per 256 images (AdamW, cosine after warm-up)")->capture_default_str();
    cmd->add_option("--seed", o->seed, "seed")->capture_default_str();
    cmd->add_flag("!--no-probe", o->probe, "skip the linear probe");
    add_probe_options(*cmd, o->probe_options);
    add_runtime_options(*cmd, o->runtime);
    cmd->callback([o] { run_train_fm(*o); });
  }
  {
    auto* cmd = app.add_subcommand("probe", "linear-probe a foundation model against raw pixels and a random ViT");
    auto fm = std::make_shared<std::string>();
    auto p = std::make_shared<ProbeOptions>();
    auto rt = std::make_shared<RuntimeOptions>();
    cmd->add_option("--fm", *fm, "a ViT checkpoint written by train-fm")->required();
    add_probe_options(*cmd, *p);
    add_runtime_options(*cmd, *rt);
    cmd->callback([=] { run_probe(*fm, *p, *rt); });
  }
}

}  // namespace vavae::cli
