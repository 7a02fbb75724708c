// LightningDiT's latent statistics against fixtures/latent_stats, and latents_stats.pt as torch.load
// reads it.
#include <cstdlib>
#include <filesystem>
#include <fstream>

#include "fixtures.h"
#include "process.h"
#include "vavae/data/latent_folder.h"
#include "vavae/io/torch_checkpoint.h"
#include "vavae/io/weights.h"

namespace vavae::test {
namespace {

namespace fs = std::filesystem;

std::string fixture_shards() {
  const std::string dir = scratch_dir("latent_shards");
  for (const auto& e : fs::directory_iterator(fixture("latent_stats")))
    if (e.path().filename().string().rfind("latents_rank", 0) == 0)
      fs::copy_file(e.path(), dir + "/" + e.path().filename().string(), fs::copy_options::overwrite_existing);
  return dir;
}

// The reduction order differs from the fixture's sampled order: 1e-6 relative covers it (the
// fixture puts the effect at 1e-7).
TEST(LatentStats, ReproduceImgLatentDatasetsMeanAndUnbiasedStd) {
  const std::string dir = fixture_shards();
  ASSERT_EQ(data::latent_shards(dir).size(), 2u);
  io::SafetensorsReader expected(fixture("latent_stats/stats.safetensors"));
  const data::LatentStats stats = data::compute_latent_stats(dir, 0);
  EXPECT_TRUE(all_close(stats.mean, expected.tensor("mean"), {1e-7, 1e-6}));
  EXPECT_TRUE(all_close(stats.std, expected.tensor("std"), {1e-7, 1e-6}));
  EXPECT_FALSE(all_close(stats.std, expected.tensor("std_biased"), {1e-7, 1e-6})) << "the biased estimator is not upstream's";
  // Items as __getitem__ returns them, plain and flipped, in dataset order.
  std::vector<torch::Tensor> plain, flipped;
  for (const auto& shard : data::latent_shards(dir)) {
    io::SafetensorsReader r(shard);
    plain.push_back(r.tensor("latents"));
    flipped.push_back(r.tensor("latents_flip"));
  }
  EXPECT_TRUE(all_close(data::normalize_latents(torch::cat(plain), stats), expected.tensor("normalized_latents"), {1e-5, 1e-5}));
  EXPECT_TRUE(all_close(data::normalize_latents(torch::cat(flipped), stats), expected.tensor("normalized_latents_flip"), {1e-5, 1e-5}));
}

TEST(LatentStats, TheStatsFileIsATorchSaveDictThatTorchLoadReads) {
  const std::string dir = fixture_shards();
  const ProcessResult r = run_vavae({"latent-stats", dir});
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_TRUE(fs::exists(dir + "/stats/latents_stats.safetensors"));
  EXPECT_EQ(data::latent_shards(dir).size(), 2u) << "the twin must not look like a shard";
  // Our own reader sees torch.save's layout: a dict of two [1, C, 1, 1] tensors.
  const io::WeightFile pt = io::read_weights(dir + "/latents_stats.pt");
  EXPECT_EQ(pt.format, "torch zip");
  io::SafetensorsReader twin(dir + "/stats/latents_stats.safetensors");
  ASSERT_EQ(pt.tensors.size(), 2u);
  for (const auto& [name, t] : pt.tensors) EXPECT_TRUE(torch::equal(t, twin.tensor(name))) << name;
  if (std::system("/usr/bin/python3 -c 'import torch' 2>/dev/null") != 0)
    GTEST_SKIP() << "Debian's python3-torch is not installed: torch.load is not checked";
  const std::string out = dir + "/torch.out";
  const std::string script = "import torch, sys; d = torch.load(sys.argv[1]); "
                             "print(sorted(d), tuple(d['mean'].shape), d['std'].dtype, repr(float(d['std'][0, 3, 0, 0])))";
  ASSERT_EQ(std::system(("/usr/bin/python3 -c \"" + script + "\" " + dir + "/latents_stats.pt > " + out).c_str()), 0);
  std::ifstream in(out);
  const std::string line((std::istreambuf_iterator<char>(in)), {});
  const int64_t channels = twin.tensor("mean").size(1);
  EXPECT_NE(line.find("['mean', 'std'] (1, " + std::to_string(channels) + ", 1, 1) torch.float32"), std::string::npos) << line;
  EXPECT_NEAR(std::stod(line.substr(line.rfind(' ') + 1)), twin.tensor("std")[0][3][0][0].item<double>(), 1e-7) << line;
}

}  // namespace
}  // namespace vavae::test
