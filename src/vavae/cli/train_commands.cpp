// vavae train / report / export: the training run and what it leaves behind.
#include <iostream>

#include "vavae/cli/common.h"
#include "vavae/common/error.h"
#include "vavae/common/runtime.h"
#include "vavae/config/config_file.h"
#include "vavae/config/train_config.h"
#include "vavae/dist/process_group.h"
#include "vavae/eval/report.h"
#include "vavae/io/weights.h"
#include "vavae/train/checkpoint.h"
#include "vavae/train/trainer.h"

namespace vavae::cli {
namespace {

struct TrainOptions {
  std::string config;
  std::vector<std::string> overrides;
  std::string output;
  std::string resume;
  bool resume_given = false;
  int64_t max_steps = 0;
  bool dry_run = false;
  bool keys = false;
  int nproc = 1;
};

void run_train(const TrainOptions& o) {
  if (o.keys) {
    std::cout << config::keys_table();
    return;
  }
  if (o.config.empty()) throw Error("train: --config is required");
  nlohmann::json tree = config::load_config_file(o.config);
  const auto set_paths = config::apply_overrides(tree, o.overrides);
  const config::TrainConfig c = config::train_config_from_json(tree, o.config, set_paths);
  if (o.dry_run) {
    std::cout << config::describe_resolved(c);
    return;
  }
  if (run_as_local_ranks(o.nproc)) return;
  const bool root = dist::launch_from_environment().rank == 0;
  if (root)
    for (const auto& [path, reason] : c.ignored) std::cout << "ignored " << path << ": " << reason << "\n";
  train::RunOptions ro;
  ro.output = o.output.empty() ? "runs/" + std::filesystem::path(o.config).stem().string() : o.output;
  ro.resume = o.resume_given ? (o.resume.empty() ? ro.output : o.resume) : "";
  ro.max_steps = o.max_steps;
  const train::RunSummary s = train::run_training(c, ro);
  if (!s.interrupted && root) {
    eval::write_report(ro.output);
    std::cout << "run folder " << ro.output << ": metrics.jsonl, images/, checkpoints/, autoencoder.safetensors, report.html"
              << std::endl;
  }
}

}  // namespace

void add_train_commands(CLI::App& app) {
  {
    auto* cmd = app.add_subcommand("train", "train a VA-VAE (upstream config layout)");
    auto o = std::make_shared<TrainOptions>();
    cmd->add_option("--config", o->config, "training config (YAML or JSON; upstream's files load as they are)");
    cmd->add_flag("--dry-run", o->dry_run, "validate and print every key with its value and origin; load no weights or data");
    cmd->add_flag("--keys", o->keys, "print the table of every config key (type, default, meaning)");
    cmd->add_option("--set", o->overrides, "override a config value: key.path=value (repeatable)");
    cmd->add_option("--output", o->output, "run folder (default runs/<config name>)");
    cmd->add_option("--resume", o->resume, "continue from the newest checkpoint of a run folder (default: --output) or a checkpoint")
        ->expected(0, 1)
        ->each([o](const std::string&) { o->resume_given = true; });
    cmd->add_option("--max-steps", o->max_steps, "cap the run at this many steps (batches)")->capture_default_str();
    add_nproc_option(*cmd, o->nproc);
    cmd->callback([o, cmd] {
      if (cmd->count("--resume") > 0) o->resume_given = true;
      run_train(*o);
    });
  }
  {
    auto* cmd = app.add_subcommand("report", "write RUN_DIR/report.html: loss curves, adaptive weights, reconstructions, config");
    auto dir = std::make_shared<std::string>();
    cmd->add_option("run", *dir, "run folder")->required();
    cmd->callback([dir] { std::cout << "wrote " << eval::write_report(*dir) << std::endl; });
  }
  {
    auto* cmd = app.add_subcommand("export", "write the inference weights of a training checkpoint (upstream names)");
    auto in = std::make_shared<std::string>();
    auto out = std::make_shared<std::string>();
    cmd->add_option("checkpoint", *in, "a training checkpoint or run folder")->required();
    cmd->add_option("output", *out, "output .safetensors")->required();
    cmd->callback([in, out] {
      const std::string path = train::find_checkpoint(*in);
      const size_t n = train::export_autoencoder(*out, io::read_weights(path).tensors, path);
      std::cout << "exported " << n << " tensors from " << printable(path, 4096) << " to " << *out << std::endl;
    });
  }
}

}  // namespace vavae::cli
