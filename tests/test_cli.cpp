// The vavae executable end to end on the fixture model: every subcommand, and clear errors.
#include <sys/wait.h>
#include <torch/version.h>

#include <filesystem>
#include <fstream>

#include "fixtures.h"
#include "vavae/io/image.h"

namespace vavae::test {
namespace {

struct CliResult {
  int status = -1;
  std::string output;  // stdout and stderr together
};

// `environment`: VAR=value assignments the program starts with.
CliResult vavae(const std::string& args, const std::string& environment = "") {
  static int calls = 0;
  const std::string log = scratch_dir("cli") + "/" + std::to_string(++calls) + ".log";
  const std::string command = "env " + environment + " " + std::string(VAVAE_EXE) + " " + args + " > " + log + " 2>&1";
  CliResult r;
  const int raw = std::system(command.c_str());
  r.status = WIFEXITED(raw) ? WEXITSTATUS(raw) : -1;
  std::ifstream in(log);
  r.output.assign(std::istreambuf_iterator<char>(in), {});
  return r;
}

std::string model_args() {
  return "--threads 2 --config " + fixture("autoencoder/config.json") + " --weights " + fixture("autoencoder/weights.safetensors");
}

class Cli : public ::testing::Test {
 protected:
  void SetUp() override {
    dir = scratch_dir("cli_run");
    images = dir + "/images";
    std::filesystem::create_directories(images);
    for (int i = 0; i < 2; ++i)
      std::filesystem::copy_file(fixture("autoencoder/input_" + std::to_string(i) + ".png"),
                                 images + "/input_" + std::to_string(i) + ".png",
                                 std::filesystem::copy_options::overwrite_existing);
    meta = read_json("autoencoder/meta.json");
    expected = std::make_unique<io::SafetensorsReader>(fixture("autoencoder/tensors.safetensors"));
  }
  std::string dir, images;
  nlohmann::json meta;
  std::unique_ptr<io::SafetensorsReader> expected;
};

// The JSON line `vavae bench` ends with.
nlohmann::json bench_line(const CliResult& r) {
  const size_t start = r.output.rfind("\n{");
  return nlohmann::json::parse(r.output.substr(start == std::string::npos ? 0 : start + 1));
}

bool kernel_offers_huge_pages() {
  std::ifstream in("/sys/kernel/mm/transparent_hugepage/enabled");
  const std::string setting((std::istreambuf_iterator<char>(in)), {});
  return setting.find("[always]") != std::string::npos || setting.find("[madvise]") != std::string::npos;
}

// The program restarts itself once with glibc's huge-page tunable added to what the user set;
// it leaves an explicit setting of that tunable alone, and VAVAE_HUGE_PAGES=0 turns it off.
TEST(CliMemory, RunsOnHugePagesWhereTheSystemHasThem) {
  if (!kernel_offers_huge_pages()) GTEST_SKIP() << "transparent huge pages are off in this kernel";
  const std::string bench = "bench encode --config tiny --res 32 --steps 1 --warmup 0 --threads 1";
  const CliResult added = vavae(bench, "GLIBC_TUNABLES=glibc.malloc.check=0");
  ASSERT_EQ(added.status, 0) << added.output;
  EXPECT_TRUE(bench_line(added).at("huge_pages").get<bool>()) << added.output;
  EXPECT_EQ(bench_line(added).at("glibc_tunables").get<std::string>(), "glibc.malloc.check=0:glibc.malloc.hugetlb=1");

  const CliResult kept = vavae(bench, "GLIBC_TUNABLES=glibc.malloc.hugetlb=0");
  ASSERT_EQ(kept.status, 0) << kept.output;
  EXPECT_FALSE(bench_line(kept).at("huge_pages").get<bool>());
  EXPECT_EQ(bench_line(kept).at("glibc_tunables").get<std::string>(), "glibc.malloc.hugetlb=0");

  const CliResult off = vavae(bench, "-u GLIBC_TUNABLES VAVAE_HUGE_PAGES=0");
  ASSERT_EQ(off.status, 0) << off.output;
  EXPECT_FALSE(bench_line(off).at("huge_pages").get<bool>());
  EXPECT_EQ(bench_line(off).at("glibc_tunables").get<std::string>(), "");
}

TEST_F(Cli, EncodeDecodeRoundTripMatchesTheFixture) {
  const CliResult enc = vavae("encode " + model_args() + " --input " + images + " --output " + dir + "/lat.safetensors --mode");
  ASSERT_EQ(enc.status, 0) << enc.output;
  io::SafetensorsReader lat(dir + "/lat.safetensors");
  EXPECT_TRUE(all_close(lat.tensor("mean"), expected->tensor("mean"), tolerance_from(meta, "mean")));
  EXPECT_TRUE(all_close(lat.tensor("logvar"), expected->tensor("logvar"), tolerance_from(meta, "logvar")));
  EXPECT_TRUE(torch::equal(lat.tensor("z"), lat.tensor("mean")));

  const CliResult dec = vavae("decode " + model_args() + " --input " + dir + "/lat.safetensors --output " + dir + "/x.safetensors");
  ASSERT_EQ(dec.status, 0) << dec.output;
  EXPECT_TRUE(all_close(io::SafetensorsReader(dir + "/x.safetensors").tensor("x"), expected->tensor("dec_mode"),
                        tolerance_from(meta, "dec_mode")));

  const CliResult png = vavae("decode " + model_args() + " --input " + dir + "/lat.safetensors --output " + dir + "/png");
  ASSERT_EQ(png.status, 0) << png.output;
  const io::Image first = io::read_image(dir + "/png/input_0.png");
  EXPECT_EQ(first.height, 32);
  EXPECT_EQ(first.width, 32);

  const CliResult sampled = vavae("encode " + model_args() + " --input " + images + " --output " + dir + "/s.safetensors --seed 7");
  ASSERT_EQ(sampled.status, 0) << sampled.output;
  EXPECT_FALSE(torch::equal(io::SafetensorsReader(dir + "/s.safetensors").tensor("z"), lat.tensor("mean")));
}

TEST_F(Cli, ReconstructWritesImagesGridAndMetrics) {
  const CliResult r = vavae("reconstruct " + model_args() + " --input " + images + " --output " + dir + "/rec");
  ASSERT_EQ(r.status, 0) << r.output;
  EXPECT_NE(r.output.find("mean"), std::string::npos);
  EXPECT_TRUE(std::filesystem::exists(dir + "/rec/input_0.png"));
  const io::Image grid = io::read_image(dir + "/rec/grid.png");
  EXPECT_EQ(grid.height, 2 * (32 + 2) + 2);
  std::ifstream in(dir + "/rec/metrics.json");
  const auto metrics = nlohmann::json::parse(in);
  EXPECT_EQ(metrics.at("images").size(), 2u);
  EXPECT_TRUE(metrics.at("mean_psnr").is_number());
}

// vavae --version, with no command, names the LibTorch it runs on and what the build has.
TEST_F(Cli, VersionNamesTheLibTorchAndWhatTheBuildHas) {
  const CliResult r = vavae("--version");
  EXPECT_EQ(r.status, 0) << r.output;
  EXPECT_NE(r.output.find(std::string("LibTorch ") + TORCH_VERSION + "\n"), std::string::npos) << r.output;
  const int64_t gpus = torch::cuda::is_available() ? torch::cuda::device_count() : 0;
  EXPECT_NE(r.output.find("CUDA devices: " + std::to_string(gpus) + "\n"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("process groups: gloo"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("CPU 3x3 convolutions: "), std::string::npos) << r.output;
}

TEST_F(Cli, InspectReadsEveryFormat) {
  for (const std::string f : {"checkpoints/state_dict.pt", "checkpoints/legacy.pth", "checkpoints/lightning.ckpt",
                              "autoencoder/weights.safetensors"}) {
    const CliResult r = vavae("inspect " + fixture(f));
    EXPECT_EQ(r.status, 0) << r.output;
    EXPECT_NE(r.output.find("LDM AutoencoderKL"), std::string::npos) << f << "\n" << r.output;
  }
  const CliResult ckpt = vavae("inspect --summary " + fixture("checkpoints/lightning.ckpt"));
  EXPECT_NE(ckpt.output.find("tensors at state_dict"), std::string::npos) << ckpt.output;
}

TEST_F(Cli, BadInputGivesOneLineErrorAndNonZeroExit) {
  auto expect_failure = [&](const std::string& args, const std::string& needle) {
    const CliResult r = vavae(args);
    EXPECT_NE(r.status, 0) << args;
    EXPECT_NE(r.output.find(needle), std::string::npos) << args << "\n" << r.output;
    EXPECT_EQ(r.output.find("Exception raised from"), std::string::npos) << "stack trace leaked:\n" << r.output;
  };
  std::ofstream(dir + "/broken.png") << "not an image";
  expect_failure("encode " + model_args() + " --input " + dir + "/broken.png --output " + dir + "/o.safetensors", "broken.png");
  expect_failure("encode " + model_args() + " --input " + images + " --resolution 34 --output " + dir + "/o.safetensors",
                 "not divisible by the model's downsampling factor 4");
  expect_failure("inspect " + dir + "/missing.safetensors", "missing.safetensors");
  expect_failure("encode --threads 2 --config " + fixture("autoencoder/config.json") + " --weights " + fixture("checkpoints/state_dict.pt") +
                     " --input " + images + " --output " + dir + "/o.safetensors",
                 "shape mismatch for encoder.norm_out.weight [32] vs model [64]");
  expect_failure("decode " + model_args() + " --input " + fixture("autoencoder/tensors.safetensors") + " --key x --output " + dir + "/d",
                 "tensor 'x' has shape [2,3,32,32]");
  expect_failure("decode " + model_args() + " --input " + fixture("autoencoder/tensors.safetensors") + " --key nope --output " + dir + "/d",
                 "no tensor named 'nope'");
  EXPECT_FALSE(std::filesystem::exists(dir + "/o.safetensors"));
  setenv("VAVAE_CONV", "fastest", 1);  // read by the program before any work
  expect_failure("inspect " + fixture("autoencoder/weights.safetensors"), "VAVAE_CONV must be 'direct' or 'winograd', got 'fastest'");
  unsetenv("VAVAE_CONV");
}

}  // namespace
}  // namespace vavae::test
