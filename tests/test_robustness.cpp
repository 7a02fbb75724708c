// Training survives what long runs meet: NaN batches, SIGKILL at any moment (also mid-write), a
// full disk, damaged and exotic images, and checkpoints in a format it no longer executes.
#include <ATen/CPUGeneratorImpl.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <random>

#include "fixtures.h"
#include "process.h"
#include "tiny_run.h"
#include "vavae/common/error.h"
#include "vavae/config/config_file.h"
#include "vavae/config/train_config.h"
#include "vavae/train/adam_state.h"
#include "vavae/io/image.h"
#include "vavae/io/weights.h"
#include "vavae/nn/vit.h"
#include "vavae/train/checkpoint.h"
#include "vavae/train/train_step.h"
#include "vavae/train/trainer.h"

namespace vavae::test {
namespace {

namespace fs = std::filesystem;

std::string hostile(const std::string& name) { return std::string(VAVAE_SOURCE_DIR) + "/tests/hostile/" + name; }

// The robustness runs: GAN from batch 3, a checkpoint every step, no validation on the way.
std::string config_text(const std::string& images, int64_t steps, const std::string& trainer_extra = "") {
  TinyRun r;
  r.disc_start = 6, r.val_every = 1000, r.checkpoint_every = 1, r.num_workers = 1, r.trainer_extra = trainer_extra;
  return tiny_config(images, "stages:\n  - {name: only, steps: " + std::to_string(steps) + "}\n", r);
}

config::TrainConfig parse(const std::string& yaml) {
  return config::train_config_from_json(config::load_config_text(yaml), "test.yaml");
}

std::vector<nlohmann::json> metric_lines(const std::string& run, const std::string& split) {
  std::vector<nlohmann::json> out;
  std::ifstream in(run + "/metrics.jsonl");
  std::string line;
  while (std::getline(in, line)) {
    const auto j = nlohmann::json::parse(line, nullptr, false);
    if (j.is_object() && j.value("split", "") == split) out.push_back(j);
  }
  return out;
}

// Parameters and both optimizers' moments, copied.
std::vector<torch::Tensor> snapshot(train::TrainStep& step) {
  std::vector<torch::Tensor> out;
  for (const auto& b : step.objective->discriminator->buffers()) out.push_back(b.clone());  // BatchNorm statistics
  for (auto* optimizer : {step.generator_optimizer.get(), step.discriminator_optimizer.get()})
    for (const auto& p : optimizer->param_groups()[0].params()) {
      out.push_back(p.detach().clone());
      for (const auto& [key, state] : optimizer->state()) {
        (void)key;
        const auto& adam = static_cast<const torch::optim::AdamParamState&>(*state);
        out.push_back(adam.exp_avg().clone());
        out.push_back(torch::tensor(static_cast<double>(adam.step())));
      }
    }
  return out;
}

TEST(Robustness, ANonFiniteBatchLeavesModelAndBothOptimizersUntouched) {
  const auto c = parse(config_text("unused", 1));
  torch::manual_seed(1);
  loss::ObjectiveConfig oc = c.objective;
  oc.disc_start = 0;  // both branches active
  train::TrainStep step(nn::AutoencoderKL(c.autoencoder), loss::VAVAEObjective(oc), nullptr, {});
  step.autoencoder->train();
  step.objective->train();
  const torch::Tensor images = torch::rand({2, 3, 16, 16}) * 2 - 1;
  EXPECT_FALSE(step.run(images, 0, 1).skipped);
  const auto before = snapshot(step);
  torch::Tensor poisoned = images.clone();
  poisoned[1][0][3][3] = std::numeric_limits<float>::quiet_NaN();
  EXPECT_TRUE(step.run(poisoned, 2, 3).skipped);
  poisoned[1][0][3][3] = std::numeric_limits<float>::infinity();
  EXPECT_TRUE(step.run(poisoned, 4, 5).skipped);
  const auto after = snapshot(step);
  ASSERT_EQ(before.size(), after.size());
  for (size_t i = 0; i < before.size(); ++i) EXPECT_TRUE(torch::equal(before[i], after[i])) << "tensor " << i;
  EXPECT_FALSE(step.run(images, 6, 7).skipped);  // and training goes on
}

// Before disc_start the discriminator's Adam only counts steps; doing just that must leave every
// parameter, moment and step count exactly as the full update on zero gradients does, then and
// once the GAN is on.
TEST(Robustness, TheIdleDiscriminatorUpdateIsExactlyAdamOnZeroGradients) {
  const auto c = parse(config_text("unused", 1));
  loss::ObjectiveConfig oc = c.objective;
  oc.disc_start = 6;  // upstream steps: the discriminator branch (odd steps) trains from step 7
  auto make = [&](bool skip) {
    torch::manual_seed(1);
    auto step = std::make_unique<train::TrainStep>(nn::AutoencoderKL(c.autoencoder), loss::VAVAEObjective(oc), nullptr,
                                                   train::OptimizerConfig{});
    step->skip_idle_discriminator_update = skip;
    step->autoencoder->train();
    step->objective->train();
    return step;
  };
  auto fast = make(true), full = make(false);
  torch::manual_seed(2);
  const torch::Tensor images = torch::rand({2, 3, 16, 16}) * 2 - 1;
  for (int64_t s = 0; s < 5; ++s) {
    at::Generator a = at::detail::createCPUGenerator(s), b = at::detail::createCPUGenerator(s);
    fast->run(images, 2 * s, 2 * s + 1, a);
    full->run(images, 2 * s, 2 * s + 1, b);
    // Parameters, moments and step counts, parameter by parameter.
    for (const bool generator : {true, false}) {
      torch::optim::Adam& x = generator ? *fast->generator_optimizer : *fast->discriminator_optimizer;
      torch::optim::Adam& y = generator ? *full->generator_optimizer : *full->discriminator_optimizer;
      const auto& px = x.param_groups()[0].params();
      const auto& py = y.param_groups()[0].params();
      ASSERT_EQ(px.size(), py.size());
      for (size_t i = 0; i < px.size(); ++i) {
        ASSERT_TRUE(torch::equal(px[i], py[i])) << "step " << s << ", parameter " << i;
        const auto& sx = static_cast<const torch::optim::AdamParamState&>(*x.state().at(train::adam_state_key(x.state(), px[i])));
        const auto& sy = static_cast<const torch::optim::AdamParamState&>(*y.state().at(train::adam_state_key(y.state(), py[i])));
        ASSERT_EQ(sx.step(), sy.step()) << "step " << s << ", parameter " << i;
        ASSERT_TRUE(torch::equal(sx.exp_avg(), sy.exp_avg()) && torch::equal(sx.exp_avg_sq(), sy.exp_avg_sq()))
            << "step " << s << ", parameter " << i;
      }
    }
  }
}

TEST(Robustness, NanBatchesAreCountedAndTooManyInARowStopAtTheLastGoodCheckpoint) {
  const std::string images = make_images("nan_images");
  const std::string run = scratch_dir("nan_run");
  const auto c = parse(config_text(images, 12, ", max_nonfinite_steps: 3"));
  train::RunOptions o{run, "", 0};
  o.before_step = [](int64_t s, torch::Tensor& batch) {
    if (s == 2 || s >= 6) batch.fill_(std::numeric_limits<float>::quiet_NaN());
  };
  std::string message;
  try {
    train::run_training(c, o);
  } catch (const Error& e) {
    message = e.what();
  }
  EXPECT_NE(message.find("3 steps in a row (to step 9)"), std::string::npos) << message;
  EXPECT_NE(message.find("step_00000006.safetensors"), std::string::npos) << "names the last good checkpoint: " << message;
  const auto lines = metric_lines(run, "train");
  int64_t skipped = 0;
  for (const auto& l : lines) skipped += l.value("train/skipped", false);
  EXPECT_EQ(skipped, 4);  // step 3, then 7, 8, 9
  EXPECT_EQ(lines.back().at("skipped_steps"), 4);
  // The checkpoint the message names holds finite weights and resumes.
  io::SafetensorsReader last(train::find_checkpoint(run));
  for (const auto& e : last.entries())
    if (e.dtype == "F32") {
      EXPECT_TRUE(last.tensor(e.name).isfinite().all().item<bool>()) << e.name;
    }
}

// SIGKILL at random moments and right when a checkpoint file is being written; every restart
// resumes from a complete checkpoint and the run ends at its step count with one log line a step.
TEST(Robustness, SurvivesSigkillAtRandomMomentsAndMidWrite) {
  const std::string images = make_images("kill_images");
  const std::string dir = scratch_dir("kill");
  std::ofstream(dir + "/config.yaml") << config_text(images, 100000);  // ended by the kills, then capped
  const std::string run = dir + "/run";
  // Lines in metrics.jsonl, re-counted only when the file grew (it is polled continuously).
  uintmax_t counted_size = ~uintmax_t{0};
  size_t counted_lines = 0;
  auto logged_steps = [&] {
    std::error_code ec;
    const uintmax_t size = fs::file_size(run + "/metrics.jsonl", ec);
    if (ec) return size_t{0};
    if (size != counted_size) counted_size = size, counted_lines = metric_lines(run, "train").size();
    return counted_lines;
  };
  std::mt19937 rng(1234);
  std::uniform_int_distribution<size_t> steps_until_kill(1, 6);
  std::uniform_int_distribution<int> extra_microseconds(0, 20000);
  int killed = 0, killed_mid_write = 0, resumed = 0;
  for (int trial = 0; trial < 24; ++trial) {
    std::vector<std::string> args{"train", "--config", dir + "/config.yaml", "--output", run};
    const bool has_checkpoint = fs::exists(run + "/checkpoints") && !fs::is_empty(run + "/checkpoints");
    if (has_checkpoint) args.insert(args.end(), {"--resume", run});
    // Kills land once training is under way (start-up time varies by machine): after a random
    // number of new steps plus a random fraction of one, or the moment a temporary checkpoint
    // file appears (a write in progress).
    const size_t before = logged_steps(), target = before + steps_until_kill(rng);
    const int extra = extra_microseconds(rng);
    const bool mid_write = trial % 2 == 1;
    std::chrono::steady_clock::time_point reached{};
    bool progressed = false;
    ProcessOptions o;
    o.timeout_s = 120;
    o.kill_when = [&] {
      if (mid_write) {
        if (!progressed) progressed = logged_steps() > before;
        if (!progressed) return false;
        std::error_code ec;
        for (const std::string& folder : {run + "/checkpoints", run})
          for (const auto& e : fs::directory_iterator(folder, ec))
            if (e.path().filename().string().find(".tmp.") != std::string::npos) return true;
        return false;
      }
      if (reached == std::chrono::steady_clock::time_point{}) {
        if (logged_steps() < target) return false;
        reached = std::chrono::steady_clock::now();
      }
      return std::chrono::steady_clock::now() - reached >= std::chrono::microseconds(extra);
    };
    const ProcessResult r = run_vavae(args, o);
    ASSERT_FALSE(r.exited) << "trial " << trial << " ended by itself: " << r.err;
    ASSERT_EQ(r.signal, SIGKILL) << r.err;
    ASSERT_FALSE(r.timed_out);
    ++killed;
    killed_mid_write += mid_write;
    resumed += r.out.find("resumed from") != std::string::npos;
    // Whatever the moment, the newest checkpoint is complete.
    if (fs::exists(run + "/checkpoints") && !fs::is_empty(run + "/checkpoints")) {
      try {
        io::SafetensorsReader(train::find_checkpoint(run));
      } catch (const Error& e) {
        ADD_FAILURE() << "trial " << trial << ": " << e.what();
      }
    }
  }
  EXPECT_GE(killed, 20);
  EXPECT_GE(killed_mid_write, 12) << "kills while a checkpoint was being written";
  EXPECT_GE(resumed, 20) << "kills after a resume had loaded its checkpoint";
  // The run then ends a few steps past its newest checkpoint, each step logged exactly once.
  io::SafetensorsReader newest(train::find_checkpoint(run));
  const int64_t steps = std::stoll(newest.metadata().at("step")) + 3;
  const ProcessResult finish = run_vavae(
      {"train", "--config", dir + "/config.yaml", "--output", run, "--resume", run, "--max-steps", std::to_string(steps)});
  ASSERT_TRUE(finish.exited && finish.code == 0) << finish.err;
  EXPECT_NE(finish.out.find("resumed from"), std::string::npos);
  const auto lines = metric_lines(run, "train");
  ASSERT_EQ(lines.size(), static_cast<size_t>(steps));
  for (int64_t i = 0; i < steps; ++i) EXPECT_EQ(lines[i].at("step"), i + 1);
  for (const auto& e : fs::directory_iterator(run + "/checkpoints"))
    EXPECT_EQ(e.path().filename().string().find(".tmp."), std::string::npos) << "stale " << e.path();
}

TEST(Robustness, AFullDiskDuringACheckpointKeepsThePreviousOneAndStopsClearly) {
  const std::string images = make_images("disk_images");
  const std::string dir = scratch_dir("disk");
  std::ofstream(dir + "/first.yaml") << config_text(images, 2);
  std::ofstream(dir + "/second.yaml") << config_text(images, 4);
  const std::string run = dir + "/run";
  ASSERT_EQ(run_vavae({"train", "--config", dir + "/first.yaml", "--output", run}).code, 0);
  const std::string previous = train::find_checkpoint(run);
  const auto previous_bytes = fs::file_size(previous);
  ProcessOptions o;
  o.file_size_limit = previous_bytes / 2;  // metrics and config fit, a checkpoint does not
  const ProcessResult r = run_vavae({"train", "--config", dir + "/second.yaml", "--output", run, "--resume", run}, o);
  ASSERT_TRUE(r.exited) << "signal " << r.signal;
  EXPECT_EQ(r.code, 1);
  EXPECT_NE(r.err.find("step_00000003.safetensors: write failed: File too large (the previous file, if any, is unchanged)"),
            std::string::npos)
      << r.err;
  EXPECT_EQ(train::find_checkpoint(run), previous);
  EXPECT_EQ(fs::file_size(previous), previous_bytes);
  io::SafetensorsReader still_loads(previous);
  for (const auto& e : fs::directory_iterator(run + "/checkpoints"))
    EXPECT_EQ(e.path().filename().string().find(".tmp."), std::string::npos) << "left behind " << e.path();
}

TEST(Robustness, TrainsOnAFolderOfDamagedAndExoticImages) {
  const std::string images = make_images("mixed_images");
  // Undecodable ones are skipped and counted; the rest (gray, alpha, 16-bit, palette, CMYK) train.
  const std::vector<std::string> bad = {"bomb.png", "gif_named.png", "psd_named.png", "truncated.png", "zero_bytes.png", "text.jpg"};
  const std::vector<std::string> good = {"gray.png", "gray_alpha.png", "gray16.png", "rgb16.png", "rgba.png", "palette.png",
                                         "cmyk.jpg", "gray.jpg"};
  for (const auto& f : bad) fs::copy_file(hostile("images/" + f), images + "/a/bad_" + f);
  for (const auto& f : good) fs::copy_file(hostile("images/" + f), images + "/b/exotic_" + f);
  std::ofstream(images + "/a/notes.txt") << "not an image";
  const std::string dir = scratch_dir("mixed_run");
  std::ofstream(dir + "/c.yaml") << config_text(images, 36);  // 62 images, 4 a batch: two epochs and more
  const ProcessResult r = run_vavae({"train", "--config", dir + "/c.yaml", "--output", dir + "/run"});
  ASSERT_EQ(r.code, 0) << r.err;
  for (const auto& f : bad) EXPECT_NE((r.out + r.err).find("skipping unreadable image: " + images + "/a/bad_" + f), std::string::npos) << f;
  for (const auto& f : good) EXPECT_EQ((r.out + r.err).find("exotic_" + f), std::string::npos) << f << " was skipped";
  EXPECT_GE(metric_lines(dir + "/run", "train").back().at("skipped_images").get<int64_t>(), static_cast<int64_t>(bad.size()));
  EXPECT_EQ(metric_lines(dir + "/run", "train").size(), 36u);
}

TEST(Robustness, ImpossibleConfigsAndWrongWeightsNameTheCulprit) {
  auto error_of = [](const std::string& yaml) {
    try {
      parse(yaml);
    } catch (const Error& e) {
      return std::string(e.what());
    }
    return std::string();
  };
  const std::string base = config_text("unused", 4);
  auto with = [&](const std::string& from, const std::string& to) {
    std::string s = base;
    s.replace(s.find(from), from.size(), to);
    return s;
  };
  EXPECT_NE(error_of(with("resolution: 16, flip", "resolution: 17, flip")).find("train.resolution 17 is not divisible by the downsampling factor 2"),
            std::string::npos);
  EXPECT_NE(error_of(with("ch: 32,", "ch: 48,")).find("not divisible by GroupNorm's 32 groups"), std::string::npos);
  EXPECT_NE(error_of(with("batch_size: 4", "batch_size: 0")).find("batch_size must be positive"), std::string::npos);
  // Weights of the wrong shape: resuming a run with another width names the tensor.
  const std::string images = make_images("shape_images");
  const std::string dir = scratch_dir("wrong_shape");
  std::ofstream(dir + "/a.yaml") << config_text(images, 1);
  std::ofstream(dir + "/b.yaml") << with("ch: 32,", "ch: 64,");
  ASSERT_EQ(run_vavae({"train", "--config", dir + "/a.yaml", "--output", dir + "/run"}).code, 0);
  std::string b = read_file(dir + "/b.yaml");
  b.replace(b.find("source: \"unused\""), 16, "source: \"" + images + "\"");
  b.replace(b.find("source: \"unused\""), 16, "source: \"" + images + "\"");
  std::ofstream(dir + "/b.yaml") << b;
  const ProcessResult r = run_vavae({"train", "--config", dir + "/b.yaml", "--output", dir + "/run", "--resume", dir + "/run"});
  EXPECT_EQ(r.code, 1);
  EXPECT_NE(r.err.find("tensor 'encoder.conv_in.weight' has a different shape"), std::string::npos) << r.err;
}

TEST(Robustness, AFoundationModelWhoseGridCannotMatchIsAConfigError) {
  // A ViT with 5-pixel patches fed the 16-pixel images as they are (input_resolution 0).
  nn::ViTConfig vc;
  vc.patch_size = 5, vc.embed_dim = 16, vc.depth = 1, vc.num_heads = 2, vc.mlp_hidden = 32, vc.pos_grid = 3;
  nn::ViT vit(vc);
  const std::string dir = scratch_dir("grid_mismatch");
  io::write_safetensors(dir + "/fm.safetensors", io::state_dict(*vit),
                        {{"vavae_vit_config", nn::vit_config_to_json(vc)}, {"input_resolution", "0"}});
  const std::string images = make_images("grid_images");
  std::string yaml = config_text(images, 2);
  yaml.replace(yaml.find("    embed_dim: 4"), 16, "    embed_dim: 4\n    use_vf: " + dir + "/fm.safetensors");
  std::ofstream(dir + "/c.yaml") << yaml;
  const ProcessResult r = run_vavae({"train", "--config", dir + "/c.yaml", "--output", dir + "/run"});
  EXPECT_EQ(r.code, 1);
  EXPECT_NE(r.err.find("model.params.foundation (" + dir + "/fm.safetensors) cannot serve 16x16 images with a 8x8 latent grid"),
            std::string::npos)
      << r.err;
  EXPECT_NE(r.err.find("patch size 5"), std::string::npos) << r.err;
}

TEST(Robustness, AMissingFoundationModelFileSaysWhereAndWhatWritesIt) {
  const std::string images = make_images("missing_fm_images");
  const std::string dir = scratch_dir("missing_fm");
  std::string yaml = config_text(images, 2);
  yaml.replace(yaml.find("    embed_dim: 4"), 16, "    embed_dim: 4\n    use_vf: runs/nowhere/fm.safetensors");
  std::ofstream(dir + "/c.yaml") << yaml;
  const ProcessResult r = run_vavae({"train", "--config", dir + "/c.yaml", "--output", dir + "/run"});
  EXPECT_EQ(r.code, 1);
  EXPECT_NE(r.err.find("model.params.use_vf: runs/nowhere/fm.safetensors does not exist (relative paths are taken from the working "
                       "directory"),
            std::string::npos)
      << r.err;
  EXPECT_NE(r.err.find("`vavae train-fm --output runs/nowhere` writes"), std::string::npos) << r.err;
}

TEST(Robustness, AnOldCheckpointWithSerialisedOptimizersIsRefusedNotExecuted) {
  const std::string images = make_images("old_images");
  const std::string dir = scratch_dir("old_format");
  std::ofstream(dir + "/c.yaml") << config_text(images, 2);
  ASSERT_EQ(run_vavae({"train", "--config", dir + "/c.yaml", "--output", dir + "/run"}).code, 0);
  // Rewrite the newest checkpoint as the old format stored it: optimizers as LibTorch archives
  // (a zip that LibTorch would load with its TorchScript reader), no plain state tensors.
  const std::string path = train::find_checkpoint(dir + "/run");
  io::SafetensorsReader reader(path);
  io::NamedTensors tensors;
  for (const auto& e : reader.entries())
    if (e.name.rfind("optimizer.", 0) != 0) tensors.emplace_back(e.name, reader.tensor(e.name));
  const std::string archive = read_file(std::string(VAVAE_SOURCE_DIR) + "/tests/hostile/os_system.pt");
  torch::Tensor blob = torch::empty({static_cast<int64_t>(archive.size())}, torch::kUInt8);
  std::memcpy(blob.data_ptr(), archive.data(), archive.size());
  tensors.emplace_back("trainer.optimizer_generator", blob);
  std::map<std::string, std::string> meta;
  for (const auto& [k, v] : reader.metadata())
    if (k.rfind("optimizer.", 0) != 0) meta[k] = v;
  io::write_safetensors(path, tensors, meta);
  const ProcessResult r = run_vavae({"train", "--config", dir + "/c.yaml", "--output", dir + "/run", "--resume", dir + "/run"});
  EXPECT_EQ(r.code, 1);
  EXPECT_NE(r.err.find("metadata 'optimizer.generator.param_groups' is missing"), std::string::npos) << r.err;
}

TEST(Robustness, CheckpointsHoldAdamStateLikePytorchsStateDict) {
  const std::string images = make_images("adam_images");
  const std::string run = scratch_dir("adam_run");
  const auto c = parse(config_text(images, 3));
  train::run_training(c, {run, "", 0});
  io::SafetensorsReader ckpt(train::find_checkpoint(run));
  EXPECT_EQ(ckpt.tensor("optimizer.generator.state.0.step").item<float>(), 3.0f);
  EXPECT_EQ(ckpt.tensor("optimizer.generator.state.0.exp_avg").sizes(), ckpt.tensor("encoder.conv_in.weight").sizes());
  EXPECT_TRUE(ckpt.contains("optimizer.discriminator.state.0.exp_avg_sq"));
  const auto groups = nlohmann::json::parse(ckpt.metadata().at("optimizer.generator.param_groups"));
  EXPECT_DOUBLE_EQ(groups.at(0).at("lr").get<double>(), c.learning_rate);
  EXPECT_EQ(groups.at(0).at("betas"), nlohmann::json::array({0.5, 0.9}));
}

}  // namespace
}  // namespace vavae::test
