// vavae train-fm / probe: a foundation model of your own (MAE pre-training) and its linear probe.
#include <ATen/CPUGeneratorImpl.h>
#include <nlohmann/json.hpp>

#include <cmath>
#include <filesystem>
#include <iomanip>
#include <iostream>

#include "vavae/cli/common.h"
#include "vavae/eval/feature_net.h"
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
  train::MAETrainingOptions training;
  bool probe = true;
  ProbeOptions probe_options;
  RuntimeOptions runtime;
};

void run_train_fm(TrainFMOptions o) {
  const torch::Device device = apply_runtime_options(o.runtime);
  train::MAETrainingResult trained = train::train_mae(o.training, device);
  nlohmann::json report = {
      {"steps", trained.steps}, {"first_loss", trained.first_loss}, {"last_loss", trained.last_loss}, {"seconds", trained.seconds}};
  if (o.probe) {
    o.probe_options.resolution = o.training.resolution, o.probe_options.pad = o.training.pad;  // probe what was trained
    report["probe"] = run_probes(*trained.mae->encoder, o.probe_options, device);
  }
  io::write_file_atomically((fs::path(o.training.output) / "train_fm.json").string(),
                            [&](std::ostream& out) { out << report.dump(2) << "\n"; });
  std::cout << "train-fm: wrote " << trained.path << " (loss " << trained.first_loss << " -> " << trained.last_loss << ")" << std::endl;
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
    cmd->add_option("--data", o->training.data, "training images (fashion-mnist, idx:DIR, an image folder or a .txt list)")->capture_default_str();
    cmd->add_option("--output", o->training.output, "output folder (fm.safetensors, train_fm.json)")->capture_default_str();
    cmd->add_option("--resolution", o->training.resolution, "image size after padding and cropping")->capture_default_str();
    cmd->add_option("--pad", o->training.pad, "zero padding on every side first (28 + 2*2 = 32 for Fashion-MNIST)")->capture_default_str();
    cmd->add_option("--patch", o->training.patch, "ViT patch size")->capture_default_str();
    cmd->add_option("--dim", o->training.dim, "ViT width")->capture_default_str();
    cmd->add_option("--depth", o->training.depth, "ViT blocks")->capture_default_str();
    cmd->add_option("--heads", o->training.heads, "attention heads")->capture_default_str();
    cmd->add_option("--batch-size", o->training.batch_size, "images per step")->capture_default_str()->check(CLI::PositiveNumber);
    cmd->add_option("--epochs", o->training.epochs, "passes over the data")->capture_default_str();
    cmd->add_option("--max-steps", o->training.max_steps, "stop after this many steps (0: no cap)")->capture_default_str();
    cmd->add_option("--lr", o->training.lr, "base learning rate per 256 images (AdamW, cosine after warm-up)")->capture_default_str();
    cmd->add_option("--seed", o->training.seed, "seed")->capture_default_str();
    cmd->add_option("--mixed-precision", o->training.mixed_precision,
                    "no, bf16 (the forward pass under bf16 autocast; loss and AdamW in fp32) or auto (bf16 where native)")
        ->capture_default_str();
    cmd->add_flag("!--no-probe", o->probe, "skip the linear probe");
    add_probe_options(*cmd, o->probe_options);
    add_runtime_options(*cmd, o->runtime);
    cmd->callback([o] { run_train_fm(*o); });
  }
  {
    auto* cmd = app.add_subcommand("train-feature-net",
                                   "train the classifier whose features stand in for Inception's in Frechet distances (vavae fid --feature-net)");
    auto o = std::make_shared<eval::FeatureNetTraining>();
    auto rt = std::make_shared<RuntimeOptions>();
    cmd->add_option("--data", o->data, "labelled training images (fashion-mnist:train, an ImageFolder, ...)")->capture_default_str();
    cmd->add_option("--test", o->test, "labelled images for the accuracy report (empty: none)")->capture_default_str();
    cmd->add_option("--output", o->output, "output folder (feature_net.safetensors)")->capture_default_str();
    cmd->add_option("--resolution", o->net.resolution, "image size the network sees")->capture_default_str();
    cmd->add_option("--pad", o->net.pad, "zero padding on every side first")->capture_default_str();
    cmd->add_option("--width", o->net.width, "channels of the first stage (a multiple of 8)")->capture_default_str();
    cmd->add_option("--classes", o->net.num_classes, "classes")->capture_default_str();
    cmd->add_option("--steps", o->steps, "training steps")->capture_default_str();
    cmd->add_option("--batch-size", o->batch_size, "images per step")->capture_default_str()->check(CLI::PositiveNumber);
    cmd->add_option("--lr", o->lr, "Adam learning rate (cosine decay)")->capture_default_str();
    cmd->add_option("--seed", o->seed, "seed")->capture_default_str();
    add_runtime_options(*cmd, *rt);
    cmd->callback([o, rt] {
      const eval::FeatureNetResult r = eval::train_feature_net(*o, apply_runtime_options(*rt));
      std::cout << "train-feature-net: wrote " << r.path << " (loss " << r.first_loss << " -> " << r.last_loss << ", test accuracy "
                << r.test_accuracy << ")" << std::endl;
    });
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
