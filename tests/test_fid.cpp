// The Fréchet distance against fixtures/fid, its defining properties, and pytorch-fid's .npz
// statistics files.
#include <cstdlib>
#include <fstream>

#include "fixtures.h"
#include "process.h"
#include "vavae/common/error.h"
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

}  // namespace
}  // namespace vavae::test
