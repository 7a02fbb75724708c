// The trainer end to end on small data: learning, resume, stages, checkpoints, signals, report.
#include <signal.h>
#include <sys/wait.h>
#include <torch/version.h>
#include <unistd.h>

#include <chrono>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <thread>

#include "chromium.h"
#include "fixtures.h"
#include "tiny_run.h"
#include "vavae/common/error.h"
#include "vavae/config/config_file.h"
#include "vavae/config/train_config.h"
#include "vavae/io/files.h"
#include "vavae/io/weights.h"
#include "vavae/nn/foundation_model.h"
#include "vavae/nn/vit.h"
#include "vavae/train/adam_state.h"
#include "vavae/train/checkpoint.h"
#include "vavae/train/trainer.h"
#include "vavae/eval/report.h"

namespace vavae::test {
namespace {

namespace fs = std::filesystem;

config::TrainConfig parse(const std::string& yaml) {
  nlohmann::json tree = config::load_config_text(yaml);
  return config::train_config_from_json(tree, "test.yaml");
}

std::vector<nlohmann::json> train_lines(const std::string& run) {
  std::vector<nlohmann::json> out;
  std::ifstream in(run + "/metrics.jsonl");
  std::string line;
  while (std::getline(in, line))
    if (!line.empty()) {
      auto j = nlohmann::json::parse(line);
      if (j.at("split") == "train") out.push_back(j);
    }
  return out;
}

TEST(Training, LossFallsStagesSwitchAndTheRunFolderIsComplete) {
  const std::string images = make_images("train_images");
  const auto c = parse(tiny_config(images, R"(stages:
  - {name: first, steps: 24, lossconfig: {kl_weight: 1.0e-06}}
  - {name: second, steps: 6, lossconfig: {disc_weight: 0.25}}
)"));
  const std::string run = scratch_dir("run_basic");
  const train::RunSummary s = train::run_training(c, {run, "", 0});
  EXPECT_EQ(s.steps, 30);
  const auto lines = train_lines(run);
  ASSERT_EQ(lines.size(), 30u);
  EXPECT_EQ(lines[23].at("stage"), "first");
  EXPECT_EQ(lines[24].at("stage"), "second");
  auto mean_nll = [&](size_t from, size_t to) {
    double sum = 0;
    for (size_t i = from; i < to; ++i) sum += lines[i].at("train/nll_loss").get<double>();
    return sum / static_cast<double>(to - from);
  };
  EXPECT_LT(mean_nll(14, 20), 0.7 * mean_nll(0, 6));
  // The GAN enters at upstream global step 40 = batch 20. Every key upstream logs is there on every
  // logged step, the GAN terms before disc_start included (with disc_factor 0).
  for (size_t i : {size_t{0}, size_t{19}, size_t{20}})
    for (const char* key : {"total_loss", "logvar", "kl_loss", "nll_loss", "rec_loss", "d_weight", "disc_factor", "g_loss",
                            "disc_loss", "logits_real", "logits_fake"})
      EXPECT_TRUE(lines[i].contains(std::string("train/") + key)) << "line " << i << " " << key;
  for (const auto& line : lines) {  // the share of step time spent waiting for the loader
    EXPECT_GE(line.at("data_wait").get<double>(), 0.0);
    EXPECT_LE(line.at("data_wait").get<double>(), 1.0);
  }
  EXPECT_EQ(lines[20].at("train/disc_factor"), 1.0);
  EXPECT_EQ(lines[19].at("train/disc_factor"), 0.0);
  EXPECT_EQ(lines[19].at("train/disc_loss"), 0.0);
  EXPECT_GT(lines[20].at("train/disc_loss").get<double>(), 0.0);
  // Validation as upstream's validation_step: its loss terms beside PSNR and SSIM.
  std::vector<nlohmann::json> validations;
  {
    std::ifstream in(run + "/metrics.jsonl");
    std::string line;
    while (std::getline(in, line))
      if (auto j = nlohmann::json::parse(line); j.at("split") == "val") validations.push_back(j);
  }
  ASSERT_FALSE(validations.empty());
  for (const char* key : {"val/rec_loss", "val/total_loss", "val/nll_loss", "val/kl_loss", "val/g_loss", "val/disc_loss",
                          "val/logits_real", "val/logits_fake", "val/psnr", "val/ssim"})
    EXPECT_TRUE(validations.back().contains(key)) << key;
  EXPECT_EQ(validations.back().at("val/d_weight"), 0.0) << "no autograd in validation: upstream's fallback";
  for (const char* f : {"config.yaml", "metrics.jsonl", "autoencoder.safetensors", "images/latest.png"})
    EXPECT_TRUE(fs::exists(run + "/" + f)) << f;
  EXPECT_EQ(std::distance(fs::directory_iterator(run + "/checkpoints"), fs::directory_iterator{}), 2);  // keep_checkpoints
  EXPECT_GT(s.final_eval.psnr, 0);
}

// Upstream ran each stage of the released recipe as a new run; `restart: true` does the same.
TEST(Training, RestartedStagesBeginAsNewRuns) {
  const std::string images = make_images("restart_images");
  TinyRun r;
  r.disc_start = 4;  // upstream steps: the GAN term from the third batch of a run
  for (const bool restart : {true, false}) {
    SCOPED_TRACE(restart ? "restart" : "continuous");
    const auto c = parse(tiny_config(images, std::string("stages:\n  - {name: a, steps: 5}\n  - {name: b, steps: 4") +
                                                 (restart ? ", restart: true" : "") + "}\n", r));
    const std::string run = scratch_dir(restart ? "run_restart" : "run_continuous");
    train::run_training(c, {run});
    const auto lines = train_lines(run);
    ASSERT_EQ(lines.size(), 9u);
    auto gan_on = [&](size_t i) { return lines[i].at("train/disc_factor").get<double>() > 0; };
    EXPECT_FALSE(gan_on(1));
    EXPECT_TRUE(gan_on(2));
    EXPECT_EQ(gan_on(5), !restart) << "the second stage counts disc_start from its start";
    EXPECT_EQ(gan_on(6), !restart);
    EXPECT_TRUE(gan_on(7));
    io::SafetensorsReader last(train::find_checkpoint(run));
    EXPECT_EQ(last.tensor("optimizer.generator.state.0.step").item<float>(), restart ? 4.0f : 9.0f) << "Adam restarted";
    EXPECT_EQ(last.tensor("optimizer.discriminator.state.0.step").item<float>(), restart ? 4.0f : 9.0f);
  }
}

// A small ViT written as train-fm writes it: 4-pixel patches on 16-pixel images, width 16.
std::string write_small_foundation_model(const std::string& dir) {
  nn::ViTConfig vc;
  vc.patch_size = 4, vc.embed_dim = 16, vc.depth = 1, vc.num_heads = 2, vc.mlp_hidden = 32, vc.pos_grid = 4;
  torch::manual_seed(21);
  nn::ViT vit(vc);
  const std::string path = dir + "/fm.safetensors";
  io::write_safetensors(path, io::state_dict(*vit), {{"vavae_vit_config", nn::vit_config_to_json(vc)}, {"input_resolution", "16"}});
  return path;
}

std::string with_vf(std::string yaml, const std::string& fm, const std::string& more_params = "") {
  yaml.replace(yaml.find("    embed_dim: 4"), 16, "    embed_dim: 4\n    use_vf: " + fm + more_params);
  yaml.replace(yaml.find("kl_weight"), 9, "vf_weight: 0.1, adaptive_vf: true, kl_weight");
  return yaml;
}

// The VF head's options and starting weights: reverse_proj false, proj_fix, weight_init and
// ckpt_path (with ignore_keys) from an upstream-layout state dict.
TEST(Training, TheVfHeadAndStartingWeightsFollowUpstream) {
  const std::string images = make_images("vf_head_images");
  const std::string dir = scratch_dir("vf_head");
  const std::string fm = write_small_foundation_model(dir);
  const std::string two_steps = "stages:\n  - {name: only, steps: 2}\n";

  const std::string first = dir + "/first";
  train::run_training(parse(with_vf(tiny_config(images, two_steps), fm)), {first});
  // An upstream-layout state dict: the model under upstream's names, plus keys the model does not own.
  io::SafetensorsReader trained(train::find_checkpoint(first));
  io::NamedTensors state;
  for (const auto& e : trained.entries())
    if (e.name.rfind("optimizer.", 0) != 0 && e.name.rfind("trainer.", 0) != 0) state.emplace_back(e.name, trained.tensor(e.name));
  for (auto& [name, t] : state)  // the discriminator has not moved before disc_start: make it recognisable
    if (name == "loss.discriminator.main.0.weight") t = t + 1;
  state.emplace_back("foundation_model.model.cls_token", torch::zeros({1, 1, 16}));
  const std::string init = dir + "/init.safetensors";
  io::write_safetensors(init, state);
  auto tensor_of = [](const std::string& file, const std::string& name) { return io::SafetensorsReader(file).tensor(name); };

  // weight_init with a zero learning rate: the first checkpoint holds exactly what was loaded.
  std::string frozen = with_vf(tiny_config(images, "weight_init: " + init + "\n" + two_steps), fm);
  frozen.replace(frozen.find("base_learning_rate: 1.0e-03"), 27, "base_learning_rate: 0.0");
  train::run_training(parse(frozen), {dir + "/init_run"});
  const std::string loaded = train::find_checkpoint(dir + "/init_run");
  for (const char* name : {"linear_proj.weight", "loss.discriminator.main.0.weight", "encoder.conv_in.weight", "decoder.conv_out.bias"})
    EXPECT_TRUE(torch::equal(tensor_of(loaded, name), tensor_of(init, name))) << name;

  // ckpt_path with ignore_keys: the discriminator is not taken from the file.
  std::string partial = with_vf(tiny_config(images, two_steps), fm, "\n    ckpt_path: " + init + "\n    ignore_keys: [loss.discriminator]");
  partial.replace(partial.find("base_learning_rate: 1.0e-03"), 27, "base_learning_rate: 0.0");
  train::run_training(parse(partial), {dir + "/ckpt_run"});
  const std::string from_ckpt = train::find_checkpoint(dir + "/ckpt_run");
  EXPECT_TRUE(torch::equal(tensor_of(from_ckpt, "encoder.conv_in.weight"), tensor_of(init, "encoder.conv_in.weight")));
  EXPECT_FALSE(torch::equal(tensor_of(from_ckpt, "loss.discriminator.main.0.weight"), tensor_of(init, "loss.discriminator.main.0.weight")));

  // reverse_proj false: features projected down to embed_dim, with bias.
  train::run_training(parse(with_vf(tiny_config(images, two_steps), fm, "\n    reverse_proj: false")), {dir + "/forward_proj"});
  const std::string forward = train::find_checkpoint(dir + "/forward_proj");
  EXPECT_EQ(tensor_of(forward, "linear_proj.weight").sizes(), (std::vector<int64_t>{4, 16, 1, 1}));
  EXPECT_EQ(tensor_of(forward, "linear_proj.bias").sizes(), (std::vector<int64_t>{4}));
  EXPECT_TRUE(train_lines(dir + "/forward_proj").back().contains("train/vf_loss"));

  // proj_fix: linear_proj is in no optimizer and keeps its initial value.
  train::run_training(parse(with_vf(tiny_config(images, two_steps), fm, "\n    proj_fix: true")), {dir + "/fixed"});
  io::SafetensorsReader fixed(train::find_checkpoint(dir + "/fixed"));
  const auto groups = nlohmann::json::parse(fixed.metadata().at("optimizer.generator.param_groups"));
  nn::AutoencoderKL shape_only(parse(tiny_config(images)).autoencoder);
  EXPECT_EQ(groups.at(0).at("params").get<size_t>(), shape_only->parameters().size());
}

// trainer.mixed_precision: bf16 through the whole step (autoencoder, VF head with its ViT, GAN
// after disc_start): it learns as the fp32 run does, every logged value is finite, and the weights
// stay fp32.
TEST(Training, Bf16AutocastTrainsWithTheVfLossAndTheGan) {
  SKIP_WITHOUT_BF16();
  const std::string images = make_images("bf16_images");
  const std::string dir = scratch_dir("bf16_run");
  TinyRun r;
  r.disc_start = 20;
  r.trainer_extra = ", mixed_precision: bf16";
  const std::string yaml = with_vf(tiny_config(images, "stages:\n  - {name: only, steps: 20}\n", r), write_small_foundation_model(dir));
  const train::RunSummary s = train::run_training(parse(yaml), {dir + "/run"});
  EXPECT_EQ(s.steps, 20);
  const auto lines = train_lines(dir + "/run");
  ASSERT_EQ(lines.size(), 20u);
  double first = 0, last = 0;
  for (size_t i = 0; i < 5; ++i) first += lines[i].at("train/nll_loss").get<double>(), last += lines[15 + i].at("train/nll_loss").get<double>();
  EXPECT_LT(last, 0.8 * first);
  for (const auto& line : lines)
    for (const auto& [key, value] : line.items())
      if (value.is_number()) {
        EXPECT_TRUE(std::isfinite(value.get<double>())) << key;
      }
  EXPECT_GT(lines.back().at("train/disc_factor").get<double>(), 0.0) << "the GAN ran";
  EXPECT_TRUE(lines.back().contains("train/vf_loss"));
  io::SafetensorsReader weights(dir + "/run/autoencoder.safetensors");
  for (const auto& e : weights.entries()) EXPECT_EQ(weights.tensor(e.name).scalar_type(), torch::kFloat) << e.name;
}

// trainer.lr_schedule: cosine takes both optimizers from the base rate at the first step towards 0
// (logged as lr, step by step as the formula says); the first step equals a constant-rate run's,
// later ones move the weights less. A bad name is refused by key.
TEST(Training, CosineScheduleLowersTheLearningRateOverTheRun) {
  const std::string images = make_images("lr_images");
  const std::string dir = scratch_dir("lr_runs");
  auto run = [&](const std::string& schedule, int64_t steps) {
    TinyRun r;
    r.trainer_extra = ", lr_schedule: " + schedule;
    const config::TrainConfig c = parse(tiny_config(images, "stages:\n  - {name: only, steps: " + std::to_string(steps) + "}\n", r));
    const std::string out = dir + "/" + schedule + std::to_string(steps);
    train::run_training(c, {out});
    return std::make_pair(c.learning_rate, out);
  };
  const auto [base, cosine] = run("cosine", 8);
  const auto lines = train_lines(cosine);
  ASSERT_EQ(lines.size(), 8u);
  for (size_t i = 0; i < lines.size(); ++i)
    EXPECT_NEAR(lines[i].at("lr").get<double>(), base * 0.5 * (1 + std::cos(M_PI * static_cast<double>(i) / 8.0)), 1e-12 * base) << i;
  for (const auto& line : train_lines(run("constant", 8).second)) EXPECT_EQ(line.at("lr").get<double>(), base);

  auto weight = [](const std::string& out) { return io::SafetensorsReader(out + "/autoencoder.safetensors").tensor("encoder.conv_in.weight"); };
  // Adam's first step moves every weight by about lr, so a factor below 1 would show at that scale;
  // the CPU kernels are deterministic, CUDA's atomics may round the same sum apart.
  const double first_step_tolerance = test_device().is_cpu() ? 0.0 : 1e-3 * base;
  const torch::Tensor first_cosine = weight(run("cosine", 1).second), first_constant = weight(run("constant", 1).second);
  EXPECT_LE((first_cosine - first_constant).abs().max().item<double>(), first_step_tolerance) << "factor 1 at the first step";
  const torch::Tensor start = weight(run("constant", 1).second);  // the same first step in every run
  const double moved_cosine = (weight(cosine) - start).norm().item<double>();
  const double moved_constant = (weight(dir + "/constant8") - start).norm().item<double>();
  EXPECT_LT(moved_cosine, moved_constant);

  TinyRun bad;
  bad.trainer_extra = ", lr_schedule: linear";
  try {
    parse(tiny_config(images, "", bad));
    ADD_FAILURE() << "accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("trainer.lr_schedule"), std::string::npos) << e.what();
  }
}

// Each stage's VF settings are the ones in force: a fixed vf_weight is logged as the stage's, and
// margins of 2 (beyond any cosine distance) make the VF loss exactly 0.
TEST(Training, EachStageTrainsWithItsOwnVfWeightAndMargins) {
  const std::string images = make_images("vf_stage_images");
  const std::string dir = scratch_dir("vf_stages");
  std::string yaml = with_vf(tiny_config(images, R"(stages:
  - {name: align, steps: 3, lossconfig: {vf_weight: 0.5, cos_margin: 0.0, distmat_margin: 0.0}}
  - {name: weaker, steps: 3, lossconfig: {vf_weight: 0.1}}
  - {name: margins, steps: 3, lossconfig: {vf_weight: 0.1, cos_margin: 2.0, distmat_margin: 2.0}}
)"), write_small_foundation_model(dir));
  yaml.replace(yaml.find("adaptive_vf: true"), 17, "adaptive_vf: false");
  train::run_training(parse(yaml), {dir + "/run"});
  const auto lines = train_lines(dir + "/run");
  ASSERT_EQ(lines.size(), 9u);
  for (size_t i = 0; i < 9; ++i) {
    const double expected_weight = i < 3 ? 0.5 : 0.1;
    EXPECT_FLOAT_EQ(lines[i].at("train/vf_weight").get<float>(), static_cast<float>(expected_weight)) << "step " << i + 1;
    if (i < 6) EXPECT_GT(lines[i].at("train/vf_loss").get<double>(), 0.0) << "step " << i + 1;
    else EXPECT_EQ(lines[i].at("train/vf_loss").get<double>(), 0.0) << "step " << i + 1;
  }
}

// The Lightning checkpoint fixture (upstream layout, a state dict under `state_dict`) seeds the
// autoencoder and linear_proj; what the model does not own is reported, not loaded.
TEST(Training, AnUpstreamLightningCheckpointSeedsTheModel) {
  const io::WeightFile ckpt = io::read_weights(fixture("checkpoints/lightning.ckpt"));
  // The layout its tensors imply: ch from conv_in, one width throughout (norm_out), z from quant_conv.
  nn::AutoencoderConfig ae;
  for (const auto& [k, t] : ckpt.tensors) {
    if (k == "encoder.conv_in.weight") ae.ch = t.size(0);
    if (k == "quant_conv.weight") ae.z_channels = ae.embed_dim = t.size(0) / 2;
  }
  ae.ch_mult = {1, 1}, ae.num_res_blocks = 1, ae.attn_resolutions = {}, ae.resolution = 32;
  torch::Tensor projection;
  for (const auto& [k, t] : ckpt.tensors)
    if (k == "linear_proj.weight") projection = t;
  ASSERT_TRUE(projection.defined());
  nn::FoundationModelConfig fc;
  fc.family = "vit", fc.input_size = 0;
  fc.vit.patch_size = 4, fc.vit.embed_dim = projection.size(0), fc.vit.depth = 1, fc.vit.num_heads = 1;
  fc.vit.mlp_hidden = 2 * projection.size(0), fc.vit.pos_grid = 4;
  train::TrainStep step(nn::AutoencoderKL(ae), loss::VAVAEObjective(loss::ObjectiveConfig{}),
                        nn::VFHead(nn::FoundationModel(fc), ae.embed_dim, true, false), {});
  const io::LoadReport report = train::load_upstream_state_dict(step, ckpt);
  EXPECT_TRUE(torch::equal(step.vf_head->linear_proj->weight, projection));
  for (const auto& [k, t] : ckpt.tensors)
    if (k == "encoder.conv_in.weight") {
      EXPECT_TRUE(torch::equal(step.autoencoder->encoder->conv_in->weight, t));
    }
  EXPECT_EQ(report.ignored.count("foundation_model"), 1u) << report.summary();
  EXPECT_GE(report.loaded, 7u) << report.summary();
}

TEST(Training, ResumingEqualsAnUninterruptedRun) {
  const std::string images = make_images("resume_images");
  const auto c = parse(tiny_config(images, "stages:\n  - {name: only, steps: 12}\n"));
  const std::string whole = scratch_dir("run_whole"), split = scratch_dir("run_split");
  train::run_training(c, {whole, "", 0});
  train::run_training(c, {split, "", 6});
  // An interruption after the checkpoint: what was logged since is dropped on resume.
  std::ofstream(split + "/metrics.jsonl", std::ios::app) << R"({"step": 7, "split": "train", "train/nll_loss": 1})" << "\n";
  train::run_training(c, {split, split, 0});
  const auto a = train_lines(whole), b = train_lines(split);
  ASSERT_EQ(a.size(), 12u);
  ASSERT_EQ(b.size(), 12u);
  for (size_t i = 6; i < 12; ++i)
    for (const char* key : {"train/total_loss", "train/nll_loss", "train/kl_loss", "train/disc_loss"})
      if (a[i].contains(key)) {
        if (test_device().is_cpu()) {
          EXPECT_EQ(a[i].at(key), b[i].at(key)) << "step " << i + 1 << " " << key;  // bitwise on CPU
        } else {
          // cuDNN's backward passes accumulate in no fixed order, so two uninterrupted CUDA runs
          // drift apart too: ~1e-5 relative on the first step after the checkpoint, growing after.
          // A resume that lost optimizer state or generators would be off by far more at once.
          const double expected = a[i].at(key).get<double>();
          const double rtol = i == 6 ? 1e-4 : 1e-2;
          EXPECT_NEAR(b[i].at(key).get<double>(), expected, rtol * std::abs(expected)) << "step " << i + 1 << " " << key;
        }
      }
}

TEST(Training, AnInterruptedWriteLeavesThePreviousCheckpoint) {
  const std::string dir = scratch_dir("atomic");
  const std::string path = dir + "/step_00000001.safetensors";
  io::write_safetensors(path, {{"x", torch::ones({3})}});
  EXPECT_THROW(io::write_file_atomically(path, [](std::ostream& out) {
                 out << "partial";
                 throw Error("killed mid-write");
               }),
               Error);
  EXPECT_TRUE(torch::equal(io::SafetensorsReader(path).tensor("x"), torch::ones({3})));
  EXPECT_EQ(train::find_checkpoint(dir), path);
}

TEST(Training, ConfigErrorsNameTheKey) {
  const std::string images = make_images("config_images");
  auto expect = [&](const std::string& yaml, const std::string& needle) {
    try {
      parse(yaml);
      ADD_FAILURE() << "accepted";
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
    }
  };
  expect(tiny_config(images, "trainer_x: 1\n"), "unknown key 'trainer_x' (did you mean 'trainer'?)");
  std::string typo = tiny_config(images);
  typo.replace(typo.find("log_every"), 9, "log_evry");
  expect(typo, "unknown key 'trainer.log_evry' (did you mean 'log_every'?)");
  expect(tiny_config(images, "stages:\n  - {name: s, steps: 5, lossconfig: {vf_wieght: 1}}\n"), "stages[0]: unknown key 'lossconfig.vf_wieght' (did you mean 'vf_weight'?)");
  expect(tiny_config(images, "stages:\n  - {name: s, steps: 5, lossconfig: {disc_num_layers: 2}}\n"),
         "lossconfig.disc_num_layers cannot change between stages");
  std::string lpips = tiny_config(images);
  lpips.replace(lpips.find("perceptual_weight: 0.0"), 22, "perceptual_weight: 1.0");
  try {
    train::run_training(parse(lpips), {scratch_dir("run_no_lpips")});
    ADD_FAILURE() << "trained without LPIPS weights";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("model.params.lpips.weights is not set"), std::string::npos) << e.what();
  }
  nlohmann::json tree = config::load_config_text(tiny_config(images));
  config::apply_overrides(tree, {"trainer.seed=9", "model.params.ddconfig.ch_mult=[1, 1]"});
  const auto c = config::train_config_from_json(tree, "override");
  EXPECT_EQ(c.trainer.seed, 9u);
  EXPECT_EQ(c.autoencoder.ch_mult, (std::vector<int64_t>{1, 1}));
  config::TrainConfig with_init = c;
  with_init.weight_init = "/no/such/weights.safetensors";
  EXPECT_THROW(train::run_training(with_init, {scratch_dir("run_init"), "", 1}), Error);
}

TEST(Training, ShippedConfigsParse) {
  for (const std::string name : {"fashion_mnist_vf.yaml", "f16d32_vfdinov2.yaml", "f16d32_vfdinov2_released.yaml", "f16d32_ldm.yaml"}) {
    const std::string path = std::string(VAVAE_SOURCE_DIR) + "/configs/" + name;
    const config::TrainConfig c = config::train_config_from_json(config::load_config_file(path), path);
    EXPECT_GT(c.batch_size, 0) << name;
  }
  const std::string path = std::string(VAVAE_SOURCE_DIR) + "/configs/f16d32_vfdinov2_released.yaml";
  const config::TrainConfig released = config::train_config_from_json(config::load_config_file(path), path);
  EXPECT_EQ(released.objective.disc_start, 5001);  // upstream global steps: the GAN term from batch 2501
  ASSERT_EQ(released.stages.size(), 3u);
  EXPECT_EQ(released.stages[0].objective.vf_weight, 0.5);
  EXPECT_EQ(released.stages[2].objective.vf.distmat_margin, 0.25);
}

TEST(Training, WithLpipsWeightsTheObjectiveAndValidationUseThem) {
  const std::string images = make_images("lpips_images");
  std::string yaml = tiny_config(images, "stages:\n  - {name: only, steps: 5}\n");
  yaml.replace(yaml.find("perceptual_weight: 0.0"), 22, "perceptual_weight: 1.0");
  yaml.replace(yaml.find("    embed_dim: 4\n"), 17, "    embed_dim: 4\n    lpips: {weights: " + fixture("lpips/weights.safetensors") + "}\n");
  const std::string run = scratch_dir("run_lpips");
  const train::RunSummary s = train::run_training(parse(yaml), {run, "", 0});
  EXPECT_GT(s.final_eval.lpips, 0.0);
  std::ifstream in(run + "/metrics.jsonl");
  std::string line, last;
  while (std::getline(in, line)) last = line;
  EXPECT_TRUE(nlohmann::json::parse(last).contains("val/lpips")) << last;
}

TEST(Training, CorruptImagesAreSkippedAndCounted) {
  const std::string images = make_images("corrupt_images");
  std::ofstream(images + "/a/zz_broken.png") << "garbage";
  const auto c = parse(tiny_config(images, "stages:\n  - {name: only, steps: 24}\n"));
  const std::string run = scratch_dir("run_corrupt");
  train::run_training(c, {run, "", 0});
  EXPECT_GT(train_lines(run).back().at("skipped_images").get<int64_t>(), 0);
}

TEST(Training, SigtermSavesACheckpointAndExitsZero) {
  const std::string images = make_images("signal_images");
  const std::string dir = scratch_dir("signal");
  std::ofstream(dir + "/config.yaml") << tiny_config(images, "stages:\n  - {name: only, steps: 100000}\n");
  const pid_t child = fork();
  if (child == 0) {
    execl(VAVAE_EXE, VAVAE_EXE, "train", "--config", (dir + "/config.yaml").c_str(), "--output", (dir + "/run").c_str(),
          static_cast<char*>(nullptr));
    _exit(127);
  }
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(120);
  while (train_lines(dir + "/run").size() < 2 && std::chrono::steady_clock::now() < deadline)
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  kill(child, SIGTERM);
  int status = 0;
  waitpid(child, &status, 0);
  ASSERT_TRUE(WIFEXITED(status));
  EXPECT_EQ(WEXITSTATUS(status), 0);
  const std::string ckpt = train::find_checkpoint(dir + "/run");
  EXPECT_LT(std::stoll(io::SafetensorsReader(ckpt).metadata().at("step")), 100000);
}

TEST(Training, ReportRendersInHeadlessChromium) {
  const std::string images = make_images("report_images");
  const std::string run = scratch_dir("run_report");
  train::run_training(parse(tiny_config(images, "stages:\n  - {name: only, steps: 10}\n")), {run, "", 0});
  const std::string page = vavae::eval::write_report(run);
  std::ifstream in(page);
  const std::string html((std::istreambuf_iterator<char>(in)), {});
  EXPECT_NE(html.find("<svg"), std::string::npos);
  EXPECT_NE(html.find("data:image/png;base64,"), std::string::npos);
  if (!have_chromium()) GTEST_SKIP() << "chromium is not installed";
  const RenderedPage rendered = render_in_chromium(page, run);
  ASSERT_EQ(rendered.exit_code, 0);
  EXPECT_NE(rendered.dom.find("<svg"), std::string::npos);
  EXPECT_EQ(rendered.log.find("CONSOLE"), std::string::npos) << rendered.log;
  EXPECT_EQ(rendered.log.find("Uncaught"), std::string::npos) << rendered.log;
}

TEST(TrainFM, ShortRunLowersTheLossAndWritesALoadableModel) {
  const std::string images = make_images("fm_images");
  const std::string out = scratch_dir("fm_out");
  const std::string command = std::string(VAVAE_EXE) + " train-fm --data " + images + " --resolution 16 --patch 4 --dim 32 --depth 1 " +
                              "--heads 2 --batch-size 16 --epochs 20 --no-probe --threads 1 --output " + out + " > " + out + "/log 2>&1";
  ASSERT_EQ(std::system(command.c_str()), 0);
  std::ifstream in(out + "/train_fm.json");
  const auto report = nlohmann::json::parse(in);
  EXPECT_LT(report.at("last_loss").get<double>(), report.at("first_loss").get<double>());
  nn::FoundationModel fm = nn::load_foundation_model(out + "/fm.safetensors", "upstream");
  EXPECT_EQ(fm->features(torch::zeros({2, 3, 16, 16})).sizes(), (std::vector<int64_t>{2, 32, 4, 4}));
  EXPECT_THROW(nn::load_foundation_model(fixture("vit/mae_weights.safetensors"), "upstream"), Error);  // no vavae metadata
}

// train-fm --mixed-precision bf16: the forward pass under bf16 autocast learns as well, and the
// written weights stay fp32.
TEST(TrainFM, Bf16AutocastLearnsAndWritesFp32Weights) {
  SKIP_WITHOUT_BF16();
  const std::string images = make_images("fm_images_bf16");
  const std::string out = scratch_dir("fm_out_bf16");
  const std::string command = std::string(VAVAE_EXE) + " train-fm --data " + images + " --resolution 16 --patch 4 --dim 32 --depth 1 " +
                              "--heads 2 --batch-size 16 --epochs 20 --no-probe --threads 1 --mixed-precision bf16 --output " + out +
                              " > " + out + "/log 2>&1";
  ASSERT_EQ(std::system(command.c_str()), 0);
  std::ifstream log(out + "/log");
  const std::string text((std::istreambuf_iterator<char>(log)), std::istreambuf_iterator<char>());
  EXPECT_NE(text.find("bf16 autocast"), std::string::npos) << text;
  std::ifstream in(out + "/train_fm.json");
  const auto report = nlohmann::json::parse(in);
  EXPECT_LT(report.at("last_loss").get<double>(), 0.8 * report.at("first_loss").get<double>());
  const io::SafetensorsReader weights(out + "/fm.safetensors");
  for (const auto& e : weights.entries()) EXPECT_EQ(weights.tensor(e.name).scalar_type(), torch::kFloat) << e.name;
}

}  // namespace
}  // namespace vavae::test

namespace vavae::test {
namespace {

// Parameters of the sizes given (the last without a gradient), their gradients drawn anew each step.
std::vector<torch::Tensor> adam_parameters(const std::vector<int64_t>& sizes) {
  std::vector<torch::Tensor> out;
  for (int64_t n : sizes) out.push_back(torch::randn({n}).requires_grad_(true));
  return out;
}

TEST(AdamStep, OnePassEqualsLibTorchsAdamStepByStep) {
  torch::manual_seed(5);
  // Several parallel chunks (the pass splits 2^15 elements at a time) across small and large tensors.
  const std::vector<int64_t> sizes{1, 3, 70001, 17, 40000, 5};
  std::vector<torch::Tensor> reference = adam_parameters(sizes), fused;
  for (const auto& p : reference) fused.push_back(p.detach().clone().requires_grad_(true));
  const auto options = torch::optim::AdamOptions(1e-3).betas({0.5, 0.9});
  torch::optim::Adam reference_adam(reference, options), fused_adam(fused, options);
  for (int step = 0; step < 4; ++step) {
    for (size_t i = 0; i + 1 < sizes.size(); ++i) {
      const torch::Tensor g = torch::randn({sizes[i]}) * std::pow(10.0, static_cast<double>(i) - 3);
      reference[i].mutable_grad() = g.clone();
      fused[i].mutable_grad() = g.clone();
    }
    reference_adam.step();
    ASSERT_EQ(train::adam_step(fused_adam), train::AdamUpdate::one_pass);
    for (size_t i = 0; i < sizes.size(); ++i) {
      SCOPED_TRACE("step " + std::to_string(step) + ", parameter " + std::to_string(i));
      // Bit for bit against the kernels the pass reproduces (Debian's LibTorch 1.13 on AVX2 and
      // later, which fuse the same multiply-adds); other builds' kernels round the moments their own
      // way (LibTorch 2.11 from PyTorch's wheel differs here): within two ulps of the largest parameter.
      if (TORCH_VERSION_MAJOR < 2 && __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) {
        EXPECT_TRUE(torch::equal(fused[i], reference[i])) << (fused[i] - reference[i]).abs().max().item<double>();
      } else {
        EXPECT_TRUE(torch::allclose(fused[i], reference[i], 0, 2.4e-7 * reference[i].abs().max().item<double>()));
      }
    }
  }
  const auto key = train::adam_state_key(fused_adam.state(), fused[0]);
  EXPECT_EQ(static_cast<torch::optim::AdamParamState&>(*fused_adam.state().at(key)).step(), 4);
  EXPECT_EQ(fused_adam.state().size(), reference_adam.state().size()) << "no state for the parameter without a gradient";
  EXPECT_TRUE(torch::equal(fused.back(), reference.back()));
}

// Where the one-pass update does not apply (float64 on the CPU here; float32 on a GPU), the
// multi-tensor update takes LibTorch's steps: bit for bit on the CPU, where ATen runs its
// operations tensor by tensor; on a GPU, whose multi-tensor kernels round their own way, within two
// ulps of the largest parameter. A parameter that misses its gradient on some steps keeps its own
// step count; weight decay goes to LibTorch's step.
TEST(AdamStep, MultiTensorUpdateEqualsLibTorchsAdamStepByStep) {
  torch::manual_seed(7);
  const torch::Device device = test_device();
  const torch::Dtype dtype = device.is_cpu() ? torch::kFloat64 : torch::kFloat32;
  const std::vector<int64_t> sizes{1, 3, 70001, 17, 5};
  std::vector<torch::Tensor> reference, multi;
  for (int64_t n : sizes) {
    const torch::Tensor start = torch::randn({n}, torch::dtype(dtype)).to(device);
    reference.push_back(start.clone().requires_grad_(true));
    multi.push_back(start.clone().requires_grad_(true));
  }
  const auto options = torch::optim::AdamOptions(1e-3).betas({0.5, 0.9});
  torch::optim::Adam reference_adam(reference, options), multi_adam(multi, options);
  for (int step = 0; step < 4; ++step) {
    for (size_t i = 0; i < sizes.size(); ++i) {
      // Parameter 1 has a gradient every other step; the last one never has.
      const bool has_gradient = i + 1 < sizes.size() && (i != 1 || step % 2 == 0);
      const torch::Tensor g =
          has_gradient ? (torch::randn({sizes[i]}, torch::dtype(dtype)) * std::pow(10.0, static_cast<double>(i) - 3)).to(device)
                       : torch::Tensor();
      reference[i].mutable_grad() = has_gradient ? g.clone() : g;
      multi[i].mutable_grad() = has_gradient ? g.clone() : g;
    }
    reference_adam.step();
    ASSERT_EQ(train::adam_step(multi_adam), train::AdamUpdate::multi_tensor);
    for (size_t i = 0; i < sizes.size(); ++i) {
      SCOPED_TRACE("step " + std::to_string(step) + ", parameter " + std::to_string(i));
      if (device.is_cpu()) {
        EXPECT_TRUE(torch::equal(multi[i], reference[i])) << (multi[i] - reference[i]).abs().max().item<double>();
      } else {
        EXPECT_TRUE(torch::allclose(multi[i], reference[i], 0, 2.4e-7 * reference[i].abs().max().item<double>()));
      }
    }
  }
  for (size_t i = 0; i + 1 < sizes.size(); ++i) {
    const auto& expected = train::adam_param_state(reference_adam.state(), reference[i]);
    EXPECT_EQ(train::adam_param_state(multi_adam.state(), multi[i]).step(), expected.step()) << "parameter " << i;
  }
  EXPECT_EQ(multi_adam.state().size(), reference_adam.state().size()) << "no state for the parameter without a gradient";

  torch::optim::Adam decaying(multi, torch::optim::AdamOptions(1e-3).weight_decay(0.1));
  EXPECT_EQ(train::adam_step(decaying), train::AdamUpdate::per_parameter);
}

TEST(AdamStep, NonContiguousMomentsGiveLibTorchsStep) {
  // A state whose moments are transposed views (a state set from other code): the one-pass update
  // reads them flat, so it must lay them out first and still compute LibTorch's step.
  torch::manual_seed(6);
  const torch::Tensor start = torch::randn({5, 7}), m = torch::rand({7, 5}), v = torch::rand({7, 5});
  std::vector<torch::Tensor> reference{start.clone().requires_grad_(true)}, fused{start.clone().requires_grad_(true)};
  torch::optim::Adam reference_adam(reference, torch::optim::AdamOptions(1e-2)), fused_adam(fused, torch::optim::AdamOptions(1e-2));
  for (auto* adam : {&reference_adam, &fused_adam}) {
    auto& s = train::adam_param_state(adam->state(), adam->param_groups()[0].params()[0]);
    s.exp_avg(m.clone().t());
    s.exp_avg_sq(v.clone().t());
    ASSERT_FALSE(s.exp_avg().is_contiguous());
  }
  const torch::Tensor g = torch::randn({5, 7});
  reference[0].mutable_grad() = g.clone();
  fused[0].mutable_grad() = g.clone();
  reference_adam.step();
  train::adam_step(fused_adam);
  const auto& r = train::adam_param_state(reference_adam.state(), reference[0]);
  const auto& f = train::adam_param_state(fused_adam.state(), fused[0]);
  EXPECT_EQ(f.step(), 1);
  EXPECT_TRUE(torch::allclose(f.exp_avg(), r.exp_avg(), 0, 0)) << "first moment";
  EXPECT_TRUE(torch::allclose(f.exp_avg_sq(), r.exp_avg_sq(), 0, 0)) << "second moment";
  EXPECT_TRUE(torch::allclose(fused[0], reference[0], 0, 2.4e-7 * reference[0].abs().max().item<double>()));
}

// One inf or nan anywhere (in a float32 gradient's sixteen-lane body or its tail on the CPU, in any
// gradient on a GPU, or in a float64 gradient) makes the gradients non-finite; finite ones of any
// size, however large, pass, and the check leaves them as they were.
TEST(AdamStep, GradientsFiniteFindsOneBadElementAnywhere) {
  std::vector<torch::Tensor> parameters = adam_parameters({10, 100003, 7});
  for (auto& p : parameters) {
    p = p.detach().to(test_device()).requires_grad_(true);
    p.mutable_grad() = torch::randn_like(p) * 1e30;
  }
  std::vector<torch::Tensor> before;
  for (const auto& p : parameters) before.push_back(p.grad().clone());
  EXPECT_TRUE(train::gradients_finite(parameters));
  for (size_t i = 0; i < parameters.size(); ++i) EXPECT_TRUE(torch::equal(parameters[i].grad(), before[i])) << "gradient " << i;
  for (const float bad : {std::numeric_limits<float>::infinity(), -std::numeric_limits<float>::infinity(), std::nanf("")}) {
    for (size_t tensor = 0; tensor < parameters.size(); ++tensor) {
      torch::Tensor g = parameters[tensor].grad();
      for (const int64_t at : {int64_t{0}, g.numel() / 2 + 1, g.numel() - 1}) {
        const float kept = g[at].item<float>();
        g[at] = bad;
        EXPECT_FALSE(train::gradients_finite(parameters)) << bad << " at " << at << " of gradient " << tensor;
        g[at] = kept;
      }
    }
  }
  EXPECT_TRUE(train::gradients_finite(parameters));
  torch::Tensor wide = torch::zeros({2}, torch::dtype(torch::kFloat64).device(test_device())).requires_grad_(true);
  wide.mutable_grad() = torch::tensor({1.0, std::nan("")}, torch::kFloat64).to(test_device());
  parameters.push_back(wide);
  EXPECT_FALSE(train::gradients_finite(parameters)) << "a float64 gradient";
}

}  // namespace
}  // namespace vavae::test
