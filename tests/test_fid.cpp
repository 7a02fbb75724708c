// The Fréchet distance against fixtures/fid, its defining properties, and pytorch-fid's .npz
// statistics files.
#include <cstdlib>
#include <fstream>

#include "fixtures.h"
#include "process.h"
#include "vavae/common/error.h"
#include "vavae/data/dataset.h"
#include "vavae/eval/feature_net.h"
#include "vavae/eval/fid.h"

namespace vavae::test {
namespace {

class FidFixture : public ::testing::Test {
 protected:
  void SetUp() override {
    expected = read_json("fid/expected.json");
    tensors = std::make_unique<io::SafetensorsReader>(fixture("fid/features.safetensors"));
  }
  // The feature sets of the fixture: every tensor with its mu_ statistics beside it.
  std::vector<std::string> sets() const {
    std::vector<std::string> out;
    for (const auto& e : tensors->entries())
      if (tensors->contains("mu_" + e.name)) out.push_back(e.name);
    return out;
  }
  eval::FeatureStatistics stored(const std::string& set) const { return {tensors->tensor("mu_" + set), tensors->tensor("sigma_" + set)}; }
  nlohmann::json expected;
  std::unique_ptr<io::SafetensorsReader> tensors;
};

TEST_F(FidFixture, StatisticsAreTheFloat64MeanAndUnbiasedCovariance) {
  for (const std::string& set : sets()) {
    const eval::FeatureStatistics s = eval::feature_statistics(tensors->tensor(set));
    EXPECT_TRUE(all_close(s.mu, tensors->tensor("mu_" + set), {1e-12, 1e-10})) << set;
    EXPECT_TRUE(all_close(s.sigma, tensors->tensor("sigma_" + set), {1e-12, 1e-10})) << set;
  }
}

// 1e-6 relative as the fixture states: the reference takes scipy's sqrtm of sigma1 sigma2, this
// the eigenvalues of the symmetric form; both are float64.
TEST_F(FidFixture, ReproducesTheReferenceFromFeaturesAndFromStatistics) {
  // Every "fid_X_Y" of expected.json: the distance between sets X and Y.
  for (const auto& [pair, value] : expected.items()) {
    if (pair.rfind("fid_", 0) != 0) continue;
    const std::string first = pair.substr(4, pair.find('_', 4) - 4), second = pair.substr(pair.find('_', 4) + 1);
    const double reference = value.get<double>();
    if (first == second) {
      EXPECT_NEAR(eval::frechet_distance(stored(first), stored(second)), 0.0, 1e-9) << pair;
      continue;
    }
    const double from_features =
        eval::frechet_distance(eval::feature_statistics(tensors->tensor(first)), eval::feature_statistics(tensors->tensor(second)));
    EXPECT_NEAR(from_features, reference, 1e-6 * reference) << pair;
    EXPECT_NEAR(eval::frechet_distance(stored(first), stored(second)), reference, 1e-6 * reference) << pair;
  }
}

TEST(Fid, IsTheSquaredMeanShiftForEqualCovariances) {
  torch::manual_seed(3);
  const torch::Tensor x = torch::randn({500, 16}, torch::kFloat64);
  const torch::Tensor shift = torch::randn({16}, torch::kFloat64);
  const eval::FeatureStatistics a = eval::feature_statistics(x), b = eval::feature_statistics(x + shift);
  EXPECT_NEAR(eval::frechet_distance(a, b), shift.dot(shift).item<double>(), 1e-9);
  EXPECT_NEAR(eval::frechet_distance(a, a), 0.0, 1e-9);
  EXPECT_THROW(eval::frechet_distance(a, eval::feature_statistics(torch::randn({10, 8}))), Error);
}

TEST_F(FidFixture, NpzStatisticsRoundTripAndMatchNumpy) {
  const std::string dir = scratch_dir("fid_npz");
  ASSERT_GE(sets().size(), 2u);
  const std::string first = sets()[0], second = sets()[1];
  const eval::FeatureStatistics a = stored(first);
  eval::write_npz_statistics(dir + "/a.npz", a);
  const eval::FeatureStatistics back = eval::read_npz_statistics(dir + "/a.npz");
  EXPECT_TRUE(torch::equal(back.mu, a.mu));
  EXPECT_TRUE(torch::equal(back.sigma, a.sigma));
  const ProcessResult r = run_vavae({"fid", dir + "/a.npz", fixture("fid/features.safetensors") + ":" + second});
  ASSERT_EQ(r.code, 0) << r.err;
  const double reference = eval::frechet_distance(a, eval::feature_statistics(tensors->tensor(second)));
  EXPECT_NEAR(std::stod(r.out.substr(r.out.rfind("FID ") + 4)), reference, 1e-6 * reference) << r.out;
  if (std::system("/usr/bin/python3 -c 'import numpy' 2>/dev/null") != 0) GTEST_SKIP() << "Debian's python3-numpy is not installed: the numpy side is not checked";
  const std::string script = dir + "/check.py";
  std::ofstream(script) << "import numpy as np, sys\nf = np.load(sys.argv[1])\nprint(repr(float(f['mu'][3])), f['sigma'].shape, f['sigma'].dtype)\n"
                           "np.savez(sys.argv[2], mu=f['mu'] * 2, sigma=f['sigma'])\n";
  const std::string out = dir + "/numpy.out";
  ASSERT_EQ(std::system(("/usr/bin/python3 " + script + " " + dir + "/a.npz " + dir + "/b.npz > " + out).c_str()), 0);
  const std::string line = read_file(out);
  EXPECT_NEAR(std::stod(line), a.mu[3].item<double>(), 1e-15) << line;
  const std::string d = std::to_string(a.sigma.size(0));
  EXPECT_NE(line.find("(" + d + ", " + d + ") float64"), std::string::npos) << line;
  const eval::FeatureStatistics doubled = eval::read_npz_statistics(dir + "/b.npz");
  EXPECT_TRUE(torch::allclose(doubled.mu, a.mu * 2));
}

// The stand-in for Inception on Fashion-MNIST: a classifier trained briefly on the training split
// must tell the classes apart, and its Frechet distance must put real test images much closer to
// training images than blurred or noised test images.
TEST(FeatureNet, ABrieflyTrainedClassifierPutsRealTestImagesClosestToTraining) {
  eval::FeatureNetTraining o;
  o.net.width = 16, o.steps = 150, o.batch_size = 64, o.lr = 3e-3;
  o.output = scratch_dir("feature_net");
  const eval::FeatureNetResult r = eval::train_feature_net(o, torch::kCPU);
  EXPECT_GT(r.test_accuracy, 0.5);  // chance is 0.1
  EXPECT_LT(r.last_loss, r.first_loss);
  eval::FeatureNet net = eval::load_feature_net(r.path, torch::kCPU);
  const auto train = data::open_dataset("fashion-mnist:train"), test = data::open_dataset("fashion-mnist:test");
  std::vector<io::Image> reference, real, blurred, noised;
  at::Generator g = at::detail::createCPUGenerator(3);
  for (size_t i = 0; i < 1000; ++i) {
    reference.push_back(train->image(i));
    const io::Image image = test->image(i);
    real.push_back(image);
    // 3x3 box blur, and Gaussian pixel noise of std 40 (of 255).
    io::Image blur = image, noise = image;
    const torch::Tensor noise_values = torch::randn({static_cast<int64_t>(image.rgb.size())}, g) * 40;
    for (int64_t y = 0; y < image.height; ++y)
      for (int64_t x = 0; x < image.width; ++x)
        for (int64_t c = 0; c < 3; ++c) {
          int sum = 0, n = 0;
          for (int64_t dy = -1; dy <= 1; ++dy)
            for (int64_t dx = -1; dx <= 1; ++dx)
              if (y + dy >= 0 && y + dy < image.height && x + dx >= 0 && x + dx < image.width)
                sum += image.rgb[((y + dy) * image.width + x + dx) * 3 + c], ++n;
          const size_t at = static_cast<size_t>((y * image.width + x) * 3 + c);
          blur.rgb[at] = static_cast<uint8_t>(sum / n);
          noise.rgb[at] = static_cast<uint8_t>(std::clamp<double>(image.rgb[at] + noise_values[static_cast<int64_t>(at)].item<double>(), 0, 255));
        }
    blurred.push_back(blur);
    noised.push_back(noise);
  }
  auto statistics = [&](const std::vector<io::Image>& images) { return eval::feature_statistics(eval::feature_net_features(*net, images, 250, torch::kCPU)); };
  const eval::FeatureStatistics ref = statistics(reference);
  const double d_real = eval::frechet_distance(ref, statistics(real));
  const double d_blurred = eval::frechet_distance(ref, statistics(blurred));
  const double d_noised = eval::frechet_distance(ref, statistics(noised));
  EXPECT_LT(2 * d_real, d_blurred);
  EXPECT_LT(2 * d_real, d_noised);
  std::cout << "feature-net FD to 1000 training images: real test " << d_real << ", blurred " << d_blurred << ", noised " << d_noised << std::endl;
}

}  // namespace
}  // namespace vavae::test
