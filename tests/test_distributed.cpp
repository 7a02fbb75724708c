// Data-parallel training over Gloo on loopback: the launch variables, the sharded loader, two ranks
// against one process of twice the batch, rank 0 alone writing, resuming on another number of
// ranks, and a lost rank ending the job.
#include <filesystem>
#include <fstream>
#include <future>
#include <set>

#include "fixtures.h"
#include "process.h"
#include "tiny_run.h"
#include "vavae/common/error.h"
#include "vavae/config/config_file.h"
#include "vavae/config/train_config.h"
#include "vavae/nn/autoencoder.h"
#include "vavae/data/loader.h"
#include "vavae/dist/launcher.h"
#include "vavae/dist/process_group.h"
#include "vavae/io/safetensors.h"

namespace vavae::test {
namespace {

namespace fs = std::filesystem;

dist::EnvLookup environment(const std::map<std::string, std::string>& values) {
  return [values](const std::string& name) -> std::optional<std::string> {
    const auto it = values.find(name);
    if (it == values.end()) return std::nullopt;
    return it->second;
  };
}

TEST(Launch, ReadsTorchrunSlurmOrNothing) {
  dist::Launch l = dist::launch_from_environment(environment({}));
  EXPECT_EQ(l.world_size, 1);
  EXPECT_EQ(l.launcher, "none");
  l = dist::launch_from_environment(environment({{"RANK", "3"}, {"WORLD_SIZE", "8"}, {"LOCAL_RANK", "1"}, {"LOCAL_WORLD_SIZE", "2"},
                                                 {"MASTER_ADDR", "node7"}, {"MASTER_PORT", "29611"}}));
  EXPECT_EQ(l.launcher, "torchrun");
  EXPECT_EQ(l.rank, 3);
  EXPECT_EQ(l.world_size, 8);
  EXPECT_EQ(l.local_rank, 1);
  EXPECT_EQ(l.local_world_size, 2);
  EXPECT_EQ(l.master_addr, "node7");
  EXPECT_EQ(l.master_port, 29611);
  l = dist::launch_from_environment(environment({{"SLURM_PROCID", "5"}, {"SLURM_NTASKS", "16"}, {"SLURM_LOCALID", "1"},
                                                 {"SLURM_NTASKS_PER_NODE", "4(x4)"}, {"SLURM_NODELIST", "gpu[07-10],cpu1"}}));
  EXPECT_EQ(l.launcher, "slurm");
  EXPECT_EQ(l.rank, 5);
  EXPECT_EQ(l.world_size, 16);
  EXPECT_EQ(l.local_rank, 1);
  EXPECT_EQ(l.local_world_size, 4);
  EXPECT_EQ(l.master_addr, "gpu07");
  EXPECT_EQ(l.master_port, 29500);
  EXPECT_EQ(dist::first_slurm_host("a1,b2"), "a1");
  EXPECT_EQ(dist::first_slurm_host("node[3,5-6]"), "node3");
  for (const auto& bad : std::vector<std::map<std::string, std::string>>{
           {{"RANK", "2"}, {"WORLD_SIZE", "2"}}, {{"RANK", "x"}, {"WORLD_SIZE", "2"}}, {{"WORLD_SIZE", "2"}},
           {{"RANK", "0"}, {"WORLD_SIZE", "2"}, {"MASTER_PORT", "70000"}}}) {
    EXPECT_THROW(dist::launch_from_environment(environment(bad)), Error);
  }
  try {
    dist::launch_from_environment(environment({{"RANK", "2"}, {"WORLD_SIZE", "2"}}));
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("RANK='2'"), std::string::npos) << e.what();
  }
}

TEST(Launch, ShardRangesCoverEveryItemOnce) {
  for (int size : {1, 2, 3, 7})
    for (int64_t count : {0, 1, 5, 100}) {
      int64_t next = 0;
      for (int rank = 0; rank < size; ++rank) {
        const auto [begin, end] = dist::shard_range(count, rank, size);
        EXPECT_EQ(begin, next);
        EXPECT_LE(end - begin, count / size + 1);
        next = end;
      }
      EXPECT_EQ(next, count);
    }
}

// Each rank of a multi-rank CUDA run takes the GPU of its local rank; a local rank beyond the
// machine's GPUs is an error naming the rank, not a CUDA failure later. CPU runs stay on the CPU.
TEST(Launch, EachRankTakesTheGpuOfItsLocalRank) {
  dist::Launch launch;
  launch.world_size = 4, launch.local_world_size = 2;
  launch.rank = 3, launch.local_rank = 1;
  EXPECT_EQ(dist::rank_device(torch::kCPU, launch), torch::Device(torch::kCPU));
  const int64_t gpus = torch::cuda::is_available() ? torch::cuda::device_count() : 0;
  if (gpus > 1) {
    EXPECT_EQ(dist::rank_device(torch::kCUDA, launch), torch::Device(torch::kCUDA, 1));
  }
  launch.local_rank = static_cast<int>(gpus);
  expect_error([&] { dist::rank_device(torch::kCUDA, launch); },
               {"rank 3", "local rank " + std::to_string(gpus), std::to_string(gpus) + " CUDA device(s)"});
}

// Two ranks' batches together are one process's batch of twice the size; an epoch visits no item twice.
TEST(ShardedLoader, RanksSplitEachGlobalBatchAndCoverTheEpochOnce) {
  const auto dataset = data::open_dataset(make_images("sharded_loader", 30));
  data::LoaderConfig single;
  single.batch_size = 6, single.seed = 9, single.workers = 1;
  single.transform = {16, 0, true, true};
  data::LoaderConfig rank0 = single, rank1 = single;
  rank0.batch_size = rank1.batch_size = 3;
  rank0.world_size = rank1.world_size = 2;
  rank1.rank = 1;
  const data::Loader whole(dataset, single), first(dataset, rank0), second(dataset, rank1);
  ASSERT_EQ(first.batches_per_epoch(), whole.batches_per_epoch());
  for (int64_t epoch = 0; epoch < 2; ++epoch) {
    std::set<std::string> seen;
    for (int64_t i = 0; i < whole.batches_per_epoch(); ++i) {
      const torch::Tensor joined = torch::cat({first.batch(epoch, i).images, second.batch(epoch, i).images});
      EXPECT_TRUE(torch::equal(joined, whole.batch(epoch, i).images)) << epoch << "/" << i;
      for (int64_t k = 0; k < joined.size(0); ++k) {
        const torch::Tensor image = joined[k].contiguous();
        seen.insert(std::string(static_cast<const char*>(image.data_ptr()), static_cast<size_t>(image.nbytes())));
      }
    }
    EXPECT_EQ(static_cast<int64_t>(seen.size()), whole.batches_per_epoch() * 6) << "an item came twice in epoch " << epoch;
  }
}

std::string write_config(const std::string& name, const std::string& text) {
  const std::string path = scratch_dir(name) + "/config.yaml";
  std::ofstream(path) << text;
  return path;
}

// The trainer's tensors of a checkpoint, without the discriminator's BatchNorm running statistics
// (per rank by design; they act in evaluation only).
std::map<std::string, torch::Tensor> trained_tensors(const std::string& checkpoint) {
  io::SafetensorsReader r(checkpoint);
  std::map<std::string, torch::Tensor> out;
  for (const auto& e : r.entries())
    if (e.name.find("running_") == std::string::npos && e.name.find("num_batches_tracked") == std::string::npos)
      out[e.name] = r.tensor(e.name);
  return out;
}

std::vector<std::string> train_args(const std::string& config, const std::string& out, const std::vector<std::string>& extra) {
  std::vector<std::string> args{"train", "--config", config, "--output", out};
  args.insert(args.end(), extra.begin(), extra.end());
  return args;
}

// The step ends 4 batches before and 4 after disc_start (upstream step 8 = batch 4).
TinyRun equality_run(const std::string& adaptive) {
  TinyRun r;
  r.disc_start = 8, r.val_every = 100, r.checkpoint_every = 4;
  r.trainer_extra = ", max_steps: 8, adaptive_weights: " + adaptive;
  return r;
}

TEST(DataParallel, TwoRanksWithGlobalAdaptiveWeightsEqualOneProcessOfTwiceTheBatch) {
  const std::string images = make_images("dp_equal_images");
  const std::string two = scratch_dir("dp_equal_two"), one = scratch_dir("dp_equal_one"), local = scratch_dir("dp_equal_local");
  const std::string config = write_config("dp_equal_config", tiny_config(images, "", equality_run("global")));
  const std::string local_config = write_config("dp_equal_local_config", tiny_config(images, "", equality_run("local")));
  const std::vector<std::string> steps{"--max-steps", "8"};
  auto with = [&](std::vector<std::string> a, const std::vector<std::string>& more) {
    a.insert(a.end(), more.begin(), more.end());
    return a;
  };
  // The direct convolution kernels: Winograd's rounding differs between a batch of 2 and one of 4,
  // and the GAN weight below amplifies any rounding. The equality tested is the data-parallel
  // arithmetic's, whatever the kernels.
  ProcessOptions direct = timeout(300);
  direct.environment = {"VAVAE_CONV=direct"};
  const ProcessResult ranks = run_vavae(with(train_args(config, two, steps), {"--nproc", "2", "--set", "data.params.batch_size=2"}), direct);
  ASSERT_EQ(ranks.code, 0) << ranks.err;
  EXPECT_NE(ranks.out.find("2 on each of 2 ranks, gloo, adaptive weights global"), std::string::npos) << ranks.out;
  // One process, batch 4, its discriminator normalising each half on its own as each rank does.
  const ProcessResult single = run_vavae(
      with(train_args(config, one, steps), {"--set", "model.params.lossconfig.params.disc_bn_group=2"}), direct);
  ASSERT_EQ(single.code, 0) << single.err;
  const ProcessResult per_rank = run_vavae(
      with(train_args(local_config, local, steps), {"--nproc", "2", "--set", "data.params.batch_size=2"}), direct);
  ASSERT_EQ(per_rank.code, 0) << per_rank.err;

  // Adam moves a parameter by about lr per step whatever its gradient's size, so where the true
  // gradient is zero (an attention key bias, a bias before a one-channel GroupNorm) float32
  // rounding noise decides the direction. Those elements (gradient RMS below 1e-4, from the
  // optimizer's second moment; here such tensors sit below 3e-6, learning ones above 5e-3) are
  // left out; everything that learns must agree.
  const config::TrainConfig tc = config::train_config_from_json(config::load_config_file(config), config);
  const auto names = nn::AutoencoderKL(tc.autoencoder)->named_parameters();
  // Before disc_start (step 4) only summation order differs. After it, the GAN weight
  // d_weight = |grad nll| / |grad g| at the decoder's last layer divides by a small, cancelling
  // gradient and carries the rounding into every later update (the d_weights themselves agree,
  // below): step 8 is compared to 1e-3.
  for (const auto& [at, rtol, atol] : std::vector<std::tuple<std::string, double, double>>{
           {"step_00000004.safetensors", 1e-4, 2e-5}, {"step_00000008.safetensors", 1e-3, 5e-4}}) {
    SCOPED_TRACE(at);
    const auto a = trained_tensors(two + "/checkpoints/" + at), b = trained_tensors(one + "/checkpoints/" + at);
    ASSERT_EQ(a.size(), b.size());
    std::map<std::string, torch::Tensor> learning;  // parameter name -> elements with a real gradient
    for (size_t i = 0; i < names.size(); ++i) {
      const torch::Tensor v = b.at("optimizer.generator.state." + std::to_string(i) + ".exp_avg_sq");
      learning[names[i].key()] = v.sqrt() > 1e-4;
    }
    double worst = 0;
    int64_t compared = 0, left_out = 0;
    for (const auto& [name, t] : a) {
      ASSERT_TRUE(b.count(name)) << name;
      const torch::Tensor& u = b.at(name);
      if (!t.is_floating_point()) {
        EXPECT_TRUE(torch::equal(t, u)) << name;
        continue;
      }
      torch::Tensor mask = torch::ones_like(t, torch::kBool);
      if (learning.count(name)) mask = learning.at(name);
      left_out += mask.numel() - mask.sum().item<int64_t>();
      compared += mask.sum().item<int64_t>();
      const torch::Tensor x = t.masked_select(mask), y = u.masked_select(mask);
      if (x.numel() == 0) continue;
      // float32 sums in another order (two half-batch means averaged vs one batch mean): rounding in
      // proportion to the tensor's scale (Adam's moments after the GAN's start reach tens), so the
      // absolute part scales with its largest magnitude.
      const double scale = std::max(1.0, y.abs().max().item<double>());
      EXPECT_TRUE(torch::allclose(x, y, rtol, atol * scale)) << name << " differs by " << (x - y).abs().max().item<double>();
      worst = std::max(worst, (x - y).abs().max().item<double>());
    }
    EXPECT_LT(left_out * 20, compared) << "most of the model must be compared";
    std::cout << at << ": " << compared << " values compared, " << left_out << " without a gradient left out, largest difference "
              << worst << std::endl;
  }
  // The global batch's adaptive weight, as rank 0 logs it, is the one process's.
  auto d_weights = [](const std::string& run) {
    std::vector<double> out;
    std::ifstream in(run + "/metrics.jsonl");
    for (std::string line; std::getline(in, line);)
      if (const auto j = nlohmann::json::parse(line); j.at("split") == "train") out.push_back(j.at("train/d_weight").get<double>());
    return out;
  };
  const auto dw_two = d_weights(two), dw_one = d_weights(one);
  ASSERT_EQ(dw_two.size(), 8u);
  ASSERT_EQ(dw_one.size(), 8u);
  // To 1e-5 while the weights differ only by summation order (through step 5, the GAN's first);
  // later d_weights follow the weights' amplified drift (above), to 1e-4.
  for (size_t i = 0; i < 8; ++i) EXPECT_NEAR(dw_two[i], dw_one[i], (i < 5 ? 1e-5 : 1e-4) * dw_one[i]) << "step " << i + 1;
  // Upstream's per-rank adaptive weights: each rank's own d_weight (rank 0's is logged), another
  // number than the global batch's; it acts only from disc_start, so the weights agree before it.
  const auto dw_local = d_weights(local);
  ASSERT_EQ(dw_local.size(), 8u);
  for (size_t i = 0; i < 8; ++i) EXPECT_GT(std::abs(dw_local[i] - dw_two[i]), 1e-3 * dw_two[i]) << "step " << i + 1;
  const std::string w = "decoder.conv_out.weight";
  const auto local_mid = trained_tensors(local + "/checkpoints/step_00000004.safetensors");
  const auto global_mid = trained_tensors(two + "/checkpoints/step_00000004.safetensors");
  ASSERT_TRUE(global_mid.count(w));
  EXPECT_TRUE(torch::allclose(local_mid.at(w), global_mid.at(w), 1e-4, 2e-5));
}

std::vector<std::string> files_below(const std::string& dir) {
  std::vector<std::string> out;
  for (const auto& e : fs::recursive_directory_iterator(dir)) out.push_back(fs::relative(e.path(), dir).string());
  std::sort(out.begin(), out.end());
  return out;
}

TEST(DataParallel, RankZeroAloneWritesAndATwoRankCheckpointResumesOnOneRank) {
  const std::string images = make_images("dp_write_images");
  TinyRun r;
  r.val_every = 3, r.checkpoint_every = 3;
  r.trainer_extra = ", max_steps: 9";
  const std::string config = write_config("dp_write_config", tiny_config(images, "", r));
  const std::string two = scratch_dir("dp_write_two"), one = scratch_dir("dp_write_one");
  const ProcessResult ranks = run_vavae({"train", "--config", config, "--output", two, "--max-steps", "6", "--nproc", "2"}, timeout(300));
  ASSERT_EQ(ranks.code, 0) << ranks.err;
  const ProcessResult single = run_vavae({"train", "--config", config, "--output", one, "--max-steps", "6"}, timeout(300));
  ASSERT_EQ(single.code, 0) << single.err;
  EXPECT_EQ(files_below(two), files_below(one)) << "one writer: the same files as one process";
  // Each step and each validation is logged once, with the images of both ranks.
  std::map<int64_t, int> train_lines;
  int validations = 0;
  std::ifstream in(two + "/metrics.jsonl");
  for (std::string line; std::getline(in, line);) {
    const auto j = nlohmann::json::parse(line);
    if (j.at("split") == "train") ++train_lines[j.at("step").get<int64_t>()];
    else if (j.at("split") == "val") {
      ++validations;
      EXPECT_EQ(j.at("val/images").get<int64_t>(), 8);
    }
  }
  for (const auto& [s, n] : train_lines) EXPECT_EQ(n, 1) << "step " << s;
  EXPECT_EQ(train_lines.size(), 6u);
  EXPECT_EQ(validations, 1);
  // The 2-rank run's checkpoint continues on one rank.
  const ProcessResult resumed = run_vavae({"train", "--config", config, "--output", two, "--resume", "--max-steps", "9"}, timeout(300));
  ASSERT_EQ(resumed.code, 0) << resumed.err;
  EXPECT_NE(resumed.out.find("at step 6"), std::string::npos) << resumed.out;
  EXPECT_TRUE(fs::exists(two + "/checkpoints/step_00000009.safetensors"));
}

TEST(DataParallel, ALostRankEndsTheOthersWithAnErrorInsteadOfAHang) {
  const std::string images = make_images("dp_lost_images", 64);
  TinyRun r;
  r.val_every = 1000, r.checkpoint_every = 1000;
  r.trainer_extra = ", max_steps: 100000, dist_timeout: 30";
  const std::string config = write_config("dp_lost_config", tiny_config(images, "", r));
  const std::string out = scratch_dir("dp_lost");
  const std::string port = std::to_string(dist::free_local_port());
  auto rank = [&](int k, double kill_after) {
    ProcessOptions o = timeout(120);
    o.kill_after_s = kill_after;
    o.environment = {"RANK=" + std::to_string(k), "WORLD_SIZE=2", "LOCAL_RANK=" + std::to_string(k), "LOCAL_WORLD_SIZE=2",
                     "MASTER_ADDR=127.0.0.1", "MASTER_PORT=" + port};
    return run_vavae({"train", "--config", config, "--output", out, "--max-steps", "100000"}, o);
  };
  auto survivor = std::async(std::launch::async, rank, 0, 0.0);
  const ProcessResult killed = rank(1, 8.0);
  EXPECT_EQ(killed.signal, SIGKILL);
  const auto start = std::chrono::steady_clock::now();
  const ProcessResult r0 = survivor.get();
  const double after_kill = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  EXPECT_FALSE(r0.timed_out) << "rank 0 hung after its peer died";
  EXPECT_TRUE(r0.exited);
  EXPECT_NE(r0.code, 0);
  EXPECT_LT(after_kill, 60.0);
  EXPECT_NE(r0.err.find("error: "), std::string::npos) << r0.err;
  EXPECT_NE(r0.out.find("step "), std::string::npos) << "it trained before the loss: " << r0.out;
}

TEST(DataParallel, NprocReportsAFailingRank) {
  const std::string images = make_images("dp_fail_images", 6);
  TinyRun run;
  run.trainer_extra = ", max_steps: 4";
  const std::string config = write_config("dp_fail_config", tiny_config(images, "", run));
  // 6 images cannot fill a global batch of 2 x 4.
  const ProcessResult r = run_vavae({"train", "--config", config, "--output", scratch_dir("dp_fail"), "--nproc", "2"}, timeout(120));
  EXPECT_NE(r.code, 0);
  EXPECT_NE(r.err.find("fewer images than one batch of 8 (4 on each of 2 ranks)"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("error: rank "), std::string::npos) << r.err;
}

}  // namespace
}  // namespace vavae::test
