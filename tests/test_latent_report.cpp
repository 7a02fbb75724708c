// vavae latent-report: the spectrum, KDE and uniformity numbers against hand computations, t-SNE
// against a structure it must keep, and the page from two constructed latent folders.
#include <cmath>
#include <filesystem>

#include "chromium.h"
#include "fixtures.h"
#include "process.h"
#include "vavae/eval/latent_space.h"
#include "vavae/io/image.h"
#include "vavae/io/safetensors.h"

namespace vavae::test {
namespace {

TEST(LatentSpace, SpectrumOfAKnownCovarianceAndItsEffectiveRank) {
  // All 8 sign patterns of 3 columns: zero-mean, orthogonal columns; scaled by s the covariance is
  // diag(s^2 * 8 / 7).
  const double s[3] = {3.0, 1.0, 0.5};
  torch::Tensor x = torch::empty({8, 3}, torch::kFloat64);
  for (int r = 0; r < 8; ++r)
    for (int c = 0; c < 3; ++c) x[r][c] = ((r >> c) & 1 ? 1.0 : -1.0) * s[c] + 10.0;  // an offset the centring removes
  const eval::Spectrum spectrum = eval::covariance_spectrum(x);
  double p[3], total = 0, entropy = 0;
  for (int c = 0; c < 3; ++c) total += p[c] = s[c] * s[c] * 8.0 / 7.0;
  for (int c = 0; c < 3; ++c) {
    EXPECT_NEAR(spectrum.eigenvalues[c].item<double>(), p[c], 1e-12) << c;
    entropy -= p[c] / total * std::log(p[c] / total);
  }
  EXPECT_NEAR(spectrum.effective_rank, std::exp(entropy), 1e-12);
  // White noise uses every direction; a line uses one.
  torch::manual_seed(1);
  EXPECT_GT(eval::covariance_spectrum(torch::randn({20000, 8})).effective_rank, 7.9);
  const torch::Tensor line = torch::randn({500, 1}) * torch::tensor({{1.0, 2.0, -1.0, 0.5}});
  EXPECT_NEAR(eval::covariance_spectrum(line).effective_rank, 1.0, 1e-6);
}

TEST(LatentSpace, GaussianKdeIsScipysWithScottsBandwidth) {
  const torch::Tensor x = torch::tensor({{0.0, 0.0}, {1.0, 0.5}, {2.0, -1.0}, {0.5, 2.0}, {-1.0, 1.0}, {3.0, 3.0}}, torch::kFloat64);
  const int64_t n = 6;
  // np.cov (unbiased) times n^(-2/(d+4)), then the mean of the normal densities.
  const double factor = std::pow(6.0, -1.0 / 6.0);
  double mx = 0, my = 0, sxx = 0, syy = 0, sxy = 0;
  for (int i = 0; i < n; ++i) mx += x[i][0].item<double>() / n, my += x[i][1].item<double>() / n;
  for (int i = 0; i < n; ++i) {
    const double dx = x[i][0].item<double>() - mx, dy = x[i][1].item<double>() - my;
    sxx += dx * dx / (n - 1), syy += dy * dy / (n - 1), sxy += dx * dy / (n - 1);
  }
  sxx *= factor * factor, syy *= factor * factor, sxy *= factor * factor;
  const double det = sxx * syy - sxy * sxy;
  const torch::Tensor got = eval::gaussian_kde_at_points(x);
  for (int i = 0; i < n; ++i) {
    double sum = 0;
    for (int j = 0; j < n; ++j) {
      const double dx = x[i][0].item<double>() - x[j][0].item<double>(), dy = x[i][1].item<double>() - x[j][1].item<double>();
      const double m = (syy * dx * dx - 2 * sxy * dx * dy + sxx * dy * dy) / det;
      sum += std::exp(-0.5 * m) / (2 * M_PI * std::sqrt(det));
    }
    EXPECT_NEAR(got[i].item<double>(), sum / n, 1e-12) << i;
  }
}

TEST(LatentSpace, UniformityNumbersFollowLatentVis) {
  const torch::Tensor d = torch::tensor({1.0, 2.0, 3.0, 6.0}, torch::kFloat64);
  const eval::Uniformity u = eval::uniformity_of_densities(d);
  const double mean = 3.0, stdev = std::sqrt((4.0 + 1.0 + 0.0 + 9.0) / 4.0);
  EXPECT_NEAR(u.density_std, stdev, 1e-12);
  EXPECT_NEAR(u.density_cv, stdev / mean, 1e-12);
  double entropy = 0;
  for (double v : {1.0, 2.0, 3.0, 6.0}) entropy -= v / 12.0 * std::log2(v / 12.0 + 1e-10);
  EXPECT_NEAR(u.normalized_entropy, entropy / 2.0, 1e-12);
  EXPECT_NEAR(u.gini, (-3 * 1.0 - 1 * 2.0 + 1 * 3.0 + 3 * 6.0) / (4 * 12.0), 1e-12);
  const eval::Uniformity even = eval::uniformity_of_densities(torch::full({5}, 0.3, torch::kFloat64));
  EXPECT_NEAR(even.density_cv, 0.0, 1e-12);
  EXPECT_NEAR(even.gini, 0.0, 1e-12);
  EXPECT_NEAR(even.normalized_entropy, 1.0, 1e-9);
}

TEST(LatentSpace, AUniformSampleRanksAsMoreEvenThanAClusteredOne) {
  torch::manual_seed(5);
  const torch::Tensor uniform = torch::rand({600, 2}, torch::kFloat64);
  // One dense clump, two loose ones, a few stragglers.
  const torch::Tensor clustered = torch::cat({torch::randn({400, 2}, torch::kFloat64) * 0.02,
                                              torch::randn({150, 2}, torch::kFloat64) * 0.1 + 1.0,
                                              torch::randn({50, 2}, torch::kFloat64) * 0.3 - 1.0});
  const eval::Uniformity a = eval::uniformity_of_densities(eval::gaussian_kde_at_points(uniform));
  const eval::Uniformity b = eval::uniformity_of_densities(eval::gaussian_kde_at_points(clustered));
  EXPECT_LT(a.density_cv, b.density_cv);
  EXPECT_LT(a.gini, b.gini);
  EXPECT_GT(a.normalized_entropy, b.normalized_entropy);
}

TEST(LatentSpace, TsneKeepsSeparatedClustersApartAndIsDeterministic) {
  torch::manual_seed(2);
  const int64_t per = 40;
  const torch::Tensor centres = torch::randn({3, 10}, torch::kFloat64) * 10;
  const torch::Tensor x = torch::cat({torch::randn({per, 10}, torch::kFloat64) + centres[0], torch::randn({per, 10}, torch::kFloat64) + centres[1],
                                      torch::randn({per, 10}, torch::kFloat64) + centres[2]});
  eval::TsneOptions o;
  o.perplexity = 10, o.iterations = 400;
  const torch::Tensor y = eval::tsne(x, o);
  ASSERT_EQ(y.sizes(), (std::vector<int64_t>{3 * per, 2}));
  EXPECT_TRUE(torch::equal(y, eval::tsne(x, o)));
  // Every point's nearest neighbour in the embedding comes from its own cluster.
  const torch::Tensor d = torch::cdist(y, y) + torch::eye(3 * per, torch::kFloat64) * 1e9;
  const torch::Tensor nearest = d.argmin(1);
  EXPECT_TRUE(torch::equal(torch::div(nearest, per, "floor"), torch::div(torch::arange(3 * per), per, "floor")));
}

// A latent folder of `n` items whose labels are written into channel 0's mean (when `encoded`) or
// not at all.
std::string make_latent_folder(const std::string& name, int64_t n, bool encoded) {
  const std::string dir = scratch_dir(name);
  torch::manual_seed(encoded ? 3 : 4);
  const torch::Tensor labels = torch::randint(3, {n}, torch::kInt64);
  torch::Tensor latents = torch::randn({n, 4, 3, 3});
  if (encoded) latents.select(1, 0).add_(labels.to(torch::kFloat32).view({n, 1, 1}) * 3.0f);
  io::write_safetensors(dir + "/latents_rank00_shard000.safetensors",
                        {{"latents", latents}, {"latents_flip", latents.flip({3})}, {"labels", labels}},
                        {{"total_size", std::to_string(n)}, {"dtype", "torch.float32"}, {"device", "cpu"}});
  return dir;
}

TEST(LatentReport, ComparesTwoFoldersOnOnePageThatRendersInChromium) {
  const std::string encoded = make_latent_folder("latent_report_encoded", 300, true);
  const std::string random = make_latent_folder("latent_report_random", 300, false);
  const std::string out = scratch_dir("latent_report_out");
  const ProcessResult r = run_vavae({"latent-report", encoded, random, "--name", "encoded", "--name", "random", "--output", out,
                                     "--points", "150", "--iterations", "300", "--perplexity", "20", "--threads", "2"});
  ASSERT_EQ(r.code, 0) << r.err;
  const nlohmann::json report = nlohmann::json::parse(read_file(out + "/latent_report.json"));
  ASSERT_EQ(report.size(), 2u);
  EXPECT_EQ(report[0].at("name"), "encoded");
  EXPECT_EQ(report[0].at("latent_shape"), nlohmann::json({4, 3, 3}));
  EXPECT_EQ(report[0].at("items").get<int64_t>(), 300);
  EXPECT_EQ(report[0].at("tsne_points").get<int64_t>(), 150);
  EXPECT_EQ(report[0].at("normalization"), "the drawn items (no latents_stats.pt)");
  // The labels are in the encoded latents and not in the random ones.
  EXPECT_GT(report[0].at("linear_probe").at("test_accuracy").get<double>(), 0.9);
  EXPECT_LT(report[1].at("linear_probe").at("test_accuracy").get<double>(), 0.6);
  EXPECT_EQ(report[0].at("linear_probe").at("test_items").get<int64_t>(), 60);
  // Independent channels: an effective rank near 4 for the random folder.
  EXPECT_GT(report[1].at("effective_rank").get<double>(), 3.8);
  for (const auto& column : report) {
    const double entropy = column.at("normalized_entropy").get<double>();
    EXPECT_GT(entropy, 0.5);
    EXPECT_LE(entropy, 1.0);
  }
  const std::string html = read_file(out + "/latent_report.html");
  EXPECT_NE(html.find("<svg"), std::string::npos);
  size_t images = 0;
  for (size_t at = html.find("data:image/png;base64,"); at != std::string::npos; at = html.find("data:image/png;base64,", at + 1)) ++images;
  EXPECT_EQ(images, 2u) << "one density picture per folder";
  EXPECT_EQ(io::read_image(out + "/density_2.png").width, 420);
  if (!have_chromium()) GTEST_SKIP() << "chromium is not installed";
  const RenderedPage page = render_in_chromium(out + "/latent_report.html", out);
  ASSERT_EQ(page.exit_code, 0);
  EXPECT_NE(page.dom.find("encoded: t-SNE coloured by KDE density"), std::string::npos);
  EXPECT_EQ(page.log.find("CONSOLE"), std::string::npos) << page.log;
}

TEST(LatentReport, RejectsAFolderWithoutShardsAndMismatchedNames) {
  const std::string empty = scratch_dir("latent_report_empty");
  ProcessResult r = run_vavae({"latent-report", empty, "--output", scratch_dir("latent_report_empty_out")});
  EXPECT_NE(r.code, 0);
  EXPECT_NE(r.err.find(empty + ": holds no *.safetensors latent shards"), std::string::npos) << r.err;
  const std::string folder = make_latent_folder("latent_report_names", 40, true);
  r = run_vavae({"latent-report", folder, "--name", "a", "--name", "b", "--output", scratch_dir("latent_report_names_out")});
  EXPECT_NE(r.code, 0);
  EXPECT_NE(r.err.find("2 names for 1 folders"), std::string::npos) << r.err;
}

}  // namespace
}  // namespace vavae::test
