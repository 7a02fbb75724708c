// LPIPS and the PatchGAN discriminator against the taming-transformers fixtures.
#include "fixtures.h"
#include "vavae/common/error.h"
#include "vavae/io/weights.h"
#include "vavae/nn/lpips.h"
#include "vavae/nn/patchgan.h"

namespace vavae::test {
namespace {

class LPIPSFixture : public ::testing::Test {
 protected:
  void SetUp() override {
    nn::load_lpips(*lpips, fixture("lpips/weights.safetensors"));
    tensors = std::make_unique<io::SafetensorsReader>(fixture("lpips/tensors.safetensors"));
    meta = read_json("lpips/meta.json");
  }
  nn::LPIPS lpips;
  std::unique_ptr<io::SafetensorsReader> tensors;
  nlohmann::json meta;
};

TEST_F(LPIPSFixture, ReproducesDistancesLayerTermsAndScaling) {
  lpips->to(test_device());
  const torch::Tensor x0 = tensors->tensor("x0").to(test_device()), x1 = tensors->tensor("x1").to(test_device());
  EXPECT_TRUE(all_close(lpips->scale_input(x0), tensors->tensor("scaled_x0"), {1e-6, 1e-6}));
  std::vector<torch::Tensor> layers;
  torch::NoGradGuard no_grad;
  const torch::Tensor d = lpips->forward(x0, x1, &layers);
  EXPECT_TRUE(all_close(d, tensors->tensor("lpips"), tolerance_from(meta, "lpips")));
  ASSERT_EQ(layers.size(), 5u);
  for (size_t k = 0; k < 5; ++k) {
    const std::string name = "layer" + std::to_string(k);
    EXPECT_TRUE(all_close(layers[k], tensors->tensor(name), tolerance_from(meta, name))) << name;
  }
}

// With PyTorch's kernels: see ObjectiveFixture.WinogradConvolutionsKeepLossesAndGradients for why
// gradients through VGG's ReLUs and max pools need the fixture's own kernels to match it this tightly.
TEST_F(LPIPSFixture, GradientFlowsToTheInputOnlyAndMatchesFiniteDifferences) {
  const ConvolutionScope direct(nn::ConvolutionAlgorithm::direct);
  const torch::Tensor x0 = tensors->tensor("x0");
  const torch::Tensor x1 = tensors->tensor("x1").requires_grad_(true);
  const torch::Tensor grad = torch::autograd::grad({lpips->forward(x0, x1).sum()}, {x1})[0];
  EXPECT_TRUE(all_close(grad, tensors->tensor("grad_x1"), tolerance_from(meta, "grad_x1")));
  for (const auto& p : lpips->parameters()) EXPECT_FALSE(p.requires_grad());

  // Central differences in float64 along the gradient direction.
  nn::LPIPS lpips64;
  nn::load_lpips(*lpips64, fixture("lpips/weights.safetensors"));
  lpips64->to(torch::kFloat64);
  torch::NoGradGuard no_grad;
  const torch::Tensor a = x0.to(torch::kFloat64), b = x1.detach().to(torch::kFloat64);
  const torch::Tensor direction = grad.to(torch::kFloat64) / grad.norm().item<double>();
  const double h = 1e-4;
  const double numeric = ((lpips64->forward(a, b + h * direction).sum() - lpips64->forward(a, b - h * direction).sum()) / (2 * h)).item<double>();
  const double analytic = (grad.to(torch::kFloat64) * direction).sum().item<double>();
  EXPECT_NEAR(numeric, analytic, 1e-4 * std::abs(analytic));
}

// The fused per-layer distance (float32 CPU) against ATen's composition in float64: values and
// the gradients of both sides, on one chunk of pixels and on several, with a pixel whose features
// are all zero (nan gradient there, as the composition's). Float32 sums over up to 512 channels
// (errors seen: 2.5e-7 of the scale): within 1e-6 of each result's scale.
TEST_F(LPIPSFixture, FusedLayerDistanceIsTheCompositionOfTheHeads) {
  torch::manual_seed(5);
  nn::LPIPS lpips64;
  nn::load_lpips(*lpips64, fixture("lpips/weights.safetensors"));
  lpips64->to(torch::kFloat64);
  for (size_t k = 0; k < lpips->lins.size(); ++k) {
    const int64_t channels = lpips->lins[k]->model[1]->as<torch::nn::Conv2d>()->weight.size(1);
    for (const std::vector<int64_t>& grid : {std::vector<int64_t>{5, 7}, {24, 25}}) {
      SCOPED_TRACE("layer " + std::to_string(k) + ", " + std::to_string(grid[0]) + "x" + std::to_string(grid[1]));
      torch::Tensor f0 = torch::relu(torch::randn({2, channels, grid[0], grid[1]})), f1 = torch::relu(torch::randn_like(f0));
      f1.select(0, 1).select(1, 2).select(1, 3).zero_();  // sample 1, pixel (2, 3): all channels zero
      auto run = [&](nn::LPIPS& model, const torch::Tensor& a, const torch::Tensor& b) {
        const torch::Tensor x0 = a.clone().requires_grad_(true), x1 = b.clone().requires_grad_(true);
        const torch::Tensor d = model->layer_distance(k, x0, x1);
        d.backward(torch::tensor({0.7, -1.3}, d.options()).view({2, 1, 1, 1}));
        return std::vector<torch::Tensor>{d.detach(), x0.grad(), x1.grad()};
      };
      const auto fused = run(lpips, f0, f1), truth = run(lpips64, f0.to(torch::kFloat64), f1.to(torch::kFloat64));
      const char* names[] = {"distance", "gradient of f0", "gradient of f1"};
      for (size_t i = 0; i < truth.size(); ++i) {
        const torch::Tensor finite = torch::isfinite(truth[i]);
        EXPECT_TRUE(torch::equal(torch::isfinite(fused[i]), finite)) << names[i] << ": nan where the composition's is";
        const torch::Tensor t = truth[i].masked_fill(finite.logical_not(), 0), f = fused[i].to(torch::kFloat64).masked_fill(finite.logical_not(), 0);
        const double scale = t.abs().max().item<double>(), error = (f - t).abs().max().item<double>();
        EXPECT_LT(error, 1e-6 * scale) << names[i] << ": " << error << " of " << scale;
      }
      EXPECT_FALSE(torch::isfinite(fused[2]).all().item<bool>()) << "the zero pixel's gradient is nan";
      EXPECT_TRUE(torch::isfinite(fused[1]).all().item<bool>()) << "only on the side that is zero there";
    }
  }
}

// With the heads' dropout on (upstream's LPIPS in training), the fused distance draws the same
// mask as torch::dropout from the same generator: equal to the composition it replaces.
TEST_F(LPIPSFixture, FusedLayerDistanceDropsWhatTorchDropoutDrops) {
  const int64_t channels = lpips->lins[0]->model[1]->as<torch::nn::Conv2d>()->weight.size(1);
  const torch::Tensor f0 = torch::relu(torch::randn({2, channels, 6, 6})), f1 = torch::relu(torch::randn_like(f0));
  lpips->train();
  auto distance = [&](bool composition, uint64_t seed) {
    auto& weight = lpips->lins[0]->model[1]->as<torch::nn::Conv2d>()->weight;
    weight.set_requires_grad(composition);  // a trainable head takes ATen's composition
    torch::manual_seed(seed);
    const torch::Tensor x1 = f1.clone().requires_grad_(true);
    const torch::Tensor d = lpips->layer_distance(0, f0, x1);
    d.sum().backward();
    weight.set_requires_grad(false);
    return std::make_pair(d.detach(), x1.grad());
  };
  const auto [fused, fused_grad] = distance(false, 11);
  const auto [composed, composed_grad] = distance(true, 11);
  EXPECT_TRUE(torch::allclose(fused, composed, 1e-5, 0));
  EXPECT_TRUE(torch::allclose(fused_grad, composed_grad, 1e-5, 1e-6 * composed_grad.abs().max().item<double>()));
  EXPECT_FALSE(torch::allclose(fused, distance(false, 12).first, 1e-3, 0)) << "another seed drops other channels";
  lpips->eval();
  torch::NoGradGuard no_grad;
  EXPECT_FALSE(torch::allclose(fused, lpips->layer_distance(0, f0, f1), 1e-3, 0)) << "dropout changed the distance";
  // Features that do not fit each other or the head are refused, not read out of bounds.
  EXPECT_THROW(lpips->layer_distance(0, f0, f1.slice(3, 0, 5)), Error);
  EXPECT_THROW(lpips->layer_distance(1, f0, f1), Error);
  EXPECT_EQ(lpips->layer_distance(0, f0.slice(0, 0, 0), f1.slice(0, 0, 0)).size(0), 0) << "an empty batch";
}

TEST(LPIPS, LoadsTorchvisionVggPlusLinearHeads) {
  // Write the fixture weights in the two layouts people download: torchvision's vgg16 state dict
  // and the LPIPS heads file, then load them and compare with the single-file load.
  nn::LPIPS reference;
  nn::load_lpips(*reference, fixture("lpips/weights.safetensors"));
  io::NamedTensors vgg, heads;
  for (const auto& [k, t] : io::state_dict(*reference)) {
    if (k.rfind("net.slice", 0) == 0) vgg.emplace_back("features." + k.substr(k.find('.', 4) + 1), t);
    if (k.rfind("lin", 0) == 0) heads.emplace_back(k, t);
  }
  vgg.emplace_back("classifier.0.weight", torch::zeros({4, 4}));
  const std::string dir = scratch_dir("lpips");
  io::write_safetensors(dir + "/vgg16.safetensors", vgg);
  io::write_safetensors(dir + "/heads.safetensors", heads);
  nn::LPIPS split;
  nn::load_lpips(*split, dir + "/vgg16.safetensors", dir + "/heads.safetensors");
  for (const auto& [k, t] : io::state_dict(*reference))
    EXPECT_TRUE(torch::equal(t, split->named_parameters(true).contains(k) ? split->named_parameters()[k] : split->named_buffers()[k])) << k;
  EXPECT_THROW(nn::load_lpips(*split, dir + "/vgg16.safetensors"), Error);
  EXPECT_TRUE(split->has_weights());
}

TEST(LPIPS, RefusesToRunWithoutWeights) {
  nn::LPIPS lpips;
  EXPECT_FALSE(lpips->has_weights());
  try {
    lpips->forward(torch::zeros({1, 3, 16, 16}), torch::zeros({1, 3, 16, 16}));
    ADD_FAILURE() << "ran without weights";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("LPIPS weights are not loaded"), std::string::npos) << e.what();
  }
  EXPECT_THROW(nn::load_lpips(*lpips, scratch_dir("lpips_missing") + "/vgg.pth"), Error);
}

class PatchGANFixture : public ::testing::Test {
 protected:
  void SetUp() override {
    const auto settings = read_json("discriminator/meta.json").at("settings");
    nn::PatchGANConfig c;
    c.input_nc = settings.at("input_nc");
    c.ndf = settings.at("ndf");
    c.n_layers = settings.at("n_layers");
    c.use_actnorm = settings.at("use_actnorm");
    disc = nn::PatchGAN(c);
    io::load_into(*disc, io::read_weights(fixture("discriminator/weights.safetensors")));
    tensors = std::make_unique<io::SafetensorsReader>(fixture("discriminator/tensors.safetensors"));
    meta = read_json("discriminator/meta.json");
  }
  nn::PatchGAN disc{nullptr};
  std::unique_ptr<io::SafetensorsReader> tensors;
  nlohmann::json meta;
};

TEST_F(PatchGANFixture, EvalModeUsesRunningStatistics) {
  disc->eval();
  torch::NoGradGuard no_grad;
  EXPECT_TRUE(all_close(disc->forward(tensors->tensor("x")), tensors->tensor("out_eval"), tolerance_from(meta, "out_eval")));
}

TEST_F(PatchGANFixture, TrainModeUsesBatchStatisticsAndUpdatesRunningOnes) {
  disc->train();
  const torch::Tensor x = tensors->tensor("x").requires_grad_(true);
  const torch::Tensor out = disc->forward(x);
  EXPECT_TRUE(all_close(out, tensors->tensor("out_train"), tolerance_from(meta, "out_train")));
  const torch::Tensor grad = torch::autograd::grad({(out * tensors->tensor("R")).sum()}, {x})[0];
  EXPECT_TRUE(all_close(grad, tensors->tensor("grad_x_train"), tolerance_from(meta, "grad_x_train")));
  const auto buffers = disc->named_buffers();
  for (const auto& entry : tensors->entries()) {
    if (entry.name.rfind("after_train.", 0) != 0) continue;
    const std::string name = entry.name.substr(12);
    EXPECT_TRUE(all_close(buffers[name], tensors->tensor(entry.name), tolerance_from(meta, entry.name))) << name;
  }
  EXPECT_EQ(buffers["main.3.num_batches_tracked"].item<int64_t>(), 8);
}

TEST(PatchGAN, HasUpstreamNamesAndInitialisation) {
  torch::manual_seed(0);
  nn::PatchGAN disc(nn::PatchGANConfig{});
  const auto params = disc->named_parameters();
  for (const char* key : {"main.0.weight", "main.0.bias", "main.2.weight", "main.3.weight", "main.3.bias", "main.11.weight", "main.11.bias"})
    EXPECT_TRUE(params.contains(key)) << key;
  EXPECT_FALSE(params.contains("main.2.bias"));
  EXPECT_NEAR(params["main.2.weight"].std().item<double>(), 0.02, 0.002);
  EXPECT_NEAR(params["main.3.weight"].mean().item<double>(), 1.0, 0.01);
  EXPECT_EQ(disc->forward(torch::zeros({1, 3, 64, 64})).sizes(), (std::vector<int64_t>{1, 1, 6, 6}));
}

}  // namespace
}  // namespace vavae::test
