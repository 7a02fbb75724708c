// The VF loss against the upstream fixture, and the properties the fixture cannot show.
#include "fixtures.h"
#include "vavae/common/error.h"
#include "vavae/loss/vf_loss.h"

namespace vavae::test {
namespace {

class VFLossFixture : public ::testing::Test {
 protected:
  void SetUp() override {
    inputs = std::make_unique<io::SafetensorsReader>(fixture("vf_loss/inputs.safetensors"));
    outputs = std::make_unique<io::SafetensorsReader>(fixture("vf_loss/outputs.safetensors"));
    meta = read_json("vf_loss/meta.json");
    values = read_json("vf_loss/values.json");
  }
  Tolerance tol(const std::string& name) const { return tolerance_from(meta, name); }
  std::unique_ptr<io::SafetensorsReader> inputs, outputs;
  nlohmann::json meta, values;
};

TEST_F(VFLossFixture, MatchesUpstreamForEveryMarginSetting) {
  for (const auto& setting : values.at("settings")) {
    const std::string p = setting.at("prefix");
    SCOPED_TRACE(p);
    loss::VFLossConfig config;
    config.cos_margin = setting.at("cos_margin_m1");
    config.distmat_margin = setting.at("distmat_margin_m2");
    config.cos_weight = setting.at("cos_weight");
    config.distmat_weight = setting.at("distmat_weight");
    const torch::Tensor z = inputs->tensor("z").requires_grad_(true);
    const torch::Tensor w = inputs->tensor("proj_weight").requires_grad_(true);
    const torch::Tensor z_proj = torch::conv2d(z, w);
    EXPECT_TRUE(all_close(z_proj, outputs->tensor("zp"), tol("zp")));
    const loss::VFLossTerms t = loss::vf_loss(z_proj, inputs->tensor("f"), config);
    EXPECT_TRUE(all_close(t.mcos, outputs->tensor(p + "mcos"), tol(p + "mcos")));
    EXPECT_TRUE(all_close(t.mdms, outputs->tensor(p + "mdms"), tol(p + "mdms")));
    EXPECT_TRUE(all_close(t.total, outputs->tensor(p + "vf_total"), tol(p + "vf_total")));
    const auto grads = torch::autograd::grad({t.total}, {z, w});
    EXPECT_TRUE(all_close(grads[0], outputs->tensor(p + "grad_z"), tol(p + "grad_z")));
    EXPECT_TRUE(all_close(grads[1], outputs->tensor(p + "grad_proj_weight"), tol(p + "grad_proj_weight")));
  }
}

TEST_F(VFLossFixture, BlockwiseDistanceMatrixEqualsTheWholeMatrix) {
  const torch::Tensor zp = outputs->tensor("zp");
  const int64_t b = zp.size(0), d = zp.size(1);
  const torch::Tensor zn = torch::nn::functional::normalize(zp, torch::nn::functional::NormalizeFuncOptions().dim(1))
                               .reshape({b, d, -1})
                               .requires_grad_(true);
  const torch::Tensor fn = torch::nn::functional::normalize(inputs->tensor("f"), torch::nn::functional::NormalizeFuncOptions().dim(1))
                               .reshape({b, d, -1});
  const int64_t n = zn.size(2);
  const torch::Tensor whole = loss::marginal_distance_matrix_loss(zn, fn, 0.25, n);
  const torch::Tensor blocks = loss::marginal_distance_matrix_loss(zn, fn, 0.25, 5);  // 48 rows: uneven blocks
  EXPECT_TRUE(all_close(blocks, whole, {1e-7, 1e-6}));
  const torch::Tensor g_whole = torch::autograd::grad({whole}, {zn})[0];
  const torch::Tensor g_blocks = torch::autograd::grad({blocks}, {zn})[0];
  EXPECT_TRUE(all_close(g_blocks, g_whole, {1e-9, 1e-5}));
  // and the explicit N x N formula, as upstream writes it
  const torch::Tensor explicit_loss =
      torch::relu((torch::bmm(zn.transpose(1, 2), zn) - torch::bmm(fn.transpose(1, 2), fn)).abs() - 0.25).mean();
  EXPECT_TRUE(all_close(whole, explicit_loss, {1e-7, 1e-6}));
  EXPECT_TRUE(all_close(g_whole, torch::autograd::grad({explicit_loss}, {zn})[0], {1e-9, 1e-5}));
}

TEST(VFLoss, IsZeroWhenTheProjectionEqualsTheFeatures) {
  torch::manual_seed(3);
  const torch::Tensor f = torch::randn({2, 16, 4, 5});
  loss::VFLossConfig config;
  config.cos_margin = 0.5;
  config.distmat_margin = 0.25;
  const auto t = loss::vf_loss(f.clone(), f, config);
  EXPECT_EQ(t.total.item<float>(), 0.0f);
}

TEST(VFLoss, IsInvariantToScalingEitherSide) {
  torch::manual_seed(4);
  const torch::Tensor z = torch::randn({2, 16, 4, 4}), f = torch::randn({2, 16, 4, 4});
  const auto a = loss::vf_loss(z, f, {});
  const auto b = loss::vf_loss(z * 7.5, f * 0.01, {});
  EXPECT_NEAR(a.total.item<double>(), b.total.item<double>(), 1e-6);
}

TEST(VFLoss, ResizesFeaturesToTheLatentGrid) {
  torch::manual_seed(5);
  const torch::Tensor z = torch::randn({1, 8, 8, 8}), f = torch::randn({1, 8, 16, 16});
  const auto t = loss::vf_loss(z, f, {});
  const torch::Tensor pooled = torch::nn::functional::interpolate(
      f, torch::nn::functional::InterpolateFuncOptions().size(std::vector<int64_t>{8, 8}).mode(torch::kBilinear).align_corners(false));
  EXPECT_TRUE(all_close(t.total, loss::vf_loss(z, pooled, {}).total, {0, 0}));
}

TEST(VFLoss, RejectsMismatchedOrNonFiniteInput) {
  auto expect = [](const torch::Tensor& z, const torch::Tensor& f, const std::string& needle) {
    try {
      loss::vf_loss(z, f, {});
      ADD_FAILURE() << "accepted";
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
    }
  };
  expect(torch::randn({2, 8, 4, 4}), torch::randn({3, 8, 4, 4}), "batch sizes differ");
  expect(torch::randn({2, 8, 4, 4}), torch::randn({2, 9, 4, 4}), "8 channels but the features have 9");
  torch::Tensor nan = torch::randn({2, 8, 4, 4});
  nan[0][0][0][0] = std::nan("");
  expect(nan, torch::randn({2, 8, 4, 4}), "non-finite");
  expect(torch::randn({2, 8, 4, 8}), torch::randn({2, 8, 16, 16}), "16x16 token grid cannot map to the 4x8 latent grid");
}

}  // namespace
}  // namespace vavae::test
