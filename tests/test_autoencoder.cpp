// AutoencoderKL against the upstream fixtures: architecture, forward, posterior and gradients.
#include <ATen/CPUGeneratorImpl.h>

#include <fstream>
#include <sstream>

#include "fixtures.h"
#include "vavae/common/error.h"
#include "vavae/config/model_config.h"
#include "vavae/io/image.h"
#include "vavae/io/weights.h"
#include "vavae/nn/autoencoder.h"
#include "vavae/nn/group_norm_silu_kernel.h"

namespace vavae::test {
namespace {

TEST(AutoencoderKL, F16d32HasTheReleasedKeysShapesAndParameterCount) {
  std::ifstream in(fixture("f16d32_keys.txt"));
  ASSERT_TRUE(in) << fixture("f16d32_keys.txt");
  std::vector<std::pair<std::string, std::string>> expected;
  int64_t expected_total = -1;
  std::string line;
  while (std::getline(in, line)) {
    const auto tab = line.find('\t');
    const std::string name = line.substr(0, tab), shape = line.substr(tab + 1);
    if (name == "total_parameters") expected_total = std::stoll(shape);
    else expected.emplace_back(name, "[" + shape + "]");
  }
  nn::AutoencoderKL model(nn::AutoencoderConfig{});  // the defaults are the released f16d32 model
  const auto actual = io::state_dict(*model);
  ASSERT_EQ(actual.size(), expected.size());
  int64_t total = 0;
  for (size_t i = 0; i < actual.size(); ++i) {
    EXPECT_EQ(actual[i].first, expected[i].first) << "position " << i;
    EXPECT_EQ(shape_string(actual[i].second.sizes()), expected[i].second) << actual[i].first;
    total += actual[i].second.numel();
  }
  EXPECT_EQ(total, expected_total);
}

class AutoencoderFixture : public ::testing::Test {
 protected:
  void SetUp() override {
    config = config::load_autoencoder_config(fixture("autoencoder/config.json"));
    model = nn::AutoencoderKL(config);
    io::load_into(*model, io::read_weights(fixture("autoencoder/weights.safetensors")));
    model->eval();
    model->to(test_device());
    meta = read_json("autoencoder/meta.json");
    tensors = std::make_unique<io::SafetensorsReader>(fixture("autoencoder/tensors.safetensors"));
  }
  torch::Tensor ref(const std::string& name) const { return tensors->tensor(name).to(test_device()); }
  Tolerance tol(const std::string& name) const { return tolerance_from(meta, name); }

  nn::AutoencoderConfig config;
  nn::AutoencoderKL model{nullptr};
  nlohmann::json meta;
  std::unique_ptr<io::SafetensorsReader> tensors;
};

TEST_F(AutoencoderFixture, PngInputsMapExactlyToTheStoredTensor) {
  const auto cfg = read_json("autoencoder/config.json");
  std::vector<io::Image> images;
  for (size_t i = 0; i < cfg.at("images").size(); ++i)
    images.push_back(io::read_image(fixture("autoencoder/input_" + std::to_string(i) + ".png")));
  EXPECT_TRUE(torch::equal(io::images_to_tensor(images), ref("x").cpu()));
}

TEST_F(AutoencoderFixture, ReproducesEncoderPosteriorAndDecoder) {
  torch::NoGradGuard no_grad;
  const torch::Tensor x = ref("x");
  const torch::Tensor enc_out = model->encoder(x);
  EXPECT_TRUE(all_close(enc_out, ref("enc_out"), tol("enc_out")));
  const torch::Tensor moments = model->quant_conv(enc_out);
  EXPECT_TRUE(all_close(moments, ref("moments"), tol("moments")));
  const nn::DiagonalGaussian posterior(moments);
  for (const char* name : {"mean", "logvar", "std", "var"}) {
    const torch::Tensor& actual = std::string(name) == "mean"     ? posterior.mean
                                  : std::string(name) == "logvar" ? posterior.logvar
                                  : std::string(name) == "std"    ? posterior.std
                                                                  : posterior.var;
    EXPECT_TRUE(all_close(actual, ref(name), tol(name))) << name;
  }
  EXPECT_EQ(posterior.logvar.select(1, meta.value("clamp_channel", 3)).min().item<float>(), -30.0f);
  const torch::Tensor z = posterior.sample_with(ref("noise"));
  EXPECT_TRUE(all_close(z, ref("z"), tol("z")));
  EXPECT_TRUE(all_close(model->decode(z), ref("dec"), tol("dec")));
  EXPECT_TRUE(all_close(model->decode(posterior.mode()), ref("dec_mode"), tol("dec_mode")));
  EXPECT_TRUE(all_close(posterior.kl(), ref("kl"), tol("kl")));
}

// Built with one half, the model holds only that half's tensors, loads them from the whole
// checkpoint and computes what the whole model does; the missing half is a clear error.
TEST_F(AutoencoderFixture, EncoderOrDecoderAloneLoadsAndRunsItsHalf) {
  torch::NoGradGuard no_grad;
  const io::WeightFile weights = io::read_weights(fixture("autoencoder/weights.safetensors"));
  nn::AutoencoderKL encoder_only(config, nn::AutoencoderParts::encoder), decoder_only(config, nn::AutoencoderParts::decoder);
  for (auto* half : {&encoder_only, &decoder_only}) {
    const io::LoadReport report = io::load_into(**half, weights);
    EXPECT_TRUE(report.missing.empty());
    (*half)->eval();
    (*half)->to(test_device());
  }
  const auto names_start_with = [](const nn::AutoencoderKL& m, const std::vector<std::string>& prefixes) {
    for (const auto& entry : io::state_dict(*m)) {
      const std::string& name = entry.first;
      if (std::none_of(prefixes.begin(), prefixes.end(), [&](const std::string& p) { return name.rfind(p, 0) == 0; })) return false;
    }
    return true;
  };
  EXPECT_TRUE(names_start_with(encoder_only, {"encoder.", "quant_conv."}));
  EXPECT_TRUE(names_start_with(decoder_only, {"decoder.", "post_quant_conv."}));
  EXPECT_EQ(io::state_dict(*encoder_only).size() + io::state_dict(*decoder_only).size(), io::state_dict(*model).size());

  const torch::Tensor x = ref("x"), z = ref("z");
  EXPECT_TRUE(torch::equal(encoder_only->encode_moments(x), model->encode_moments(x)));
  EXPECT_TRUE(torch::equal(decoder_only->decode(z), model->decode(z)));
  expect_error([&] { decoder_only->encode_moments(x); }, {"without its encoder"});
  expect_error([&] { encoder_only->decode(z); }, {"without its decoder"});
}

TEST_F(AutoencoderFixture, SampleDrawsUpstreamNoiseFromTheSeededCpuGenerator) {
  torch::NoGradGuard no_grad;
  const auto cfg = read_json("autoencoder/config.json");
  const nn::DiagonalGaussian posterior = model->encode(ref("x"));
  at::Generator generator = at::detail::createCPUGenerator(cfg.at("noise_seed").get<uint64_t>());
  EXPECT_TRUE(all_close(posterior.sample(generator), ref("z"), tol("z")));
}

TEST_F(AutoencoderFixture, PosteriorHandlesBothClampBounds) {
  const nn::DiagonalGaussian p(ref("ext.moments"));
  EXPECT_TRUE(all_close(p.mean, ref("ext.mean"), {0, 0}));
  EXPECT_TRUE(all_close(p.mode(), ref("ext.mode"), {0, 0}));
  EXPECT_TRUE(all_close(p.logvar, ref("ext.logvar"), {0, 0}));
  // exp() of float32 may differ by one ulp between math libraries: 2 ulps relative.
  EXPECT_TRUE(all_close(p.std, ref("ext.std"), {0, 2.4e-7}));
  EXPECT_TRUE(all_close(p.var, ref("ext.var"), {0, 2.4e-7}));
  EXPECT_TRUE(all_close(p.kl(), ref("ext.kl"), {0, 1e-6}));
}

TEST_F(AutoencoderFixture, GradientsMatchThroughTheReparameterisationAndClamp) {
  io::SafetensorsReader grads(fixture("autoencoder/grads.safetensors"));
  model->zero_grad();
  const torch::Tensor x = ref("x").clone().requires_grad_(true);
  const nn::DiagonalGaussian posterior = model->encode(x);
  const torch::Tensor objective = (model->decode(posterior.sample_with(ref("noise"))) * grads.tensor("R").to(test_device())).sum();
  EXPECT_TRUE(all_close(objective, grads.tensor("objective"), {1e-4, 1e-5}));
  objective.backward();
  // Gradients carry float32 noise of ~1e-5 relative (fixture README); the check allows 1e-4
  // relative plus an absolute floor of 1e-5 of the tensor's largest magnitude.
  auto check = [&](const std::string& name, const torch::Tensor& actual) {
    const torch::Tensor expected = grads.tensor("grad." + name);
    const double scale = expected.abs().max().item<double>();
    EXPECT_TRUE(all_close(actual, expected, {1e-5 * scale, 1e-4})) << name;
  };
  check("x", x.grad());
  const auto params = model->named_parameters();
  for (const auto& entry : grads.entries()) {
    if (entry.name.rfind("grad.", 0) != 0 || entry.name == "grad.x") continue;
    const std::string name = entry.name.substr(5);
    ASSERT_NE(params.find(name), nullptr) << name;
    check(name, params[name].grad());
  }
}

TEST_F(AutoencoderFixture, AnySizeDivisibleByTheDownsamplingFactorRuns) {
  torch::NoGradGuard no_grad;
  const int64_t f = config.downsample_factor();
  const torch::Tensor x = torch::rand({1, 3, 5 * f, 3 * f}, test_device()) * 2 - 1;
  const nn::DiagonalGaussian p = model->encode(x);
  EXPECT_EQ(p.mean.sizes(), (std::vector<int64_t>{1, config.embed_dim, 5, 3}));
  EXPECT_EQ(model->decode(p.mode()).sizes(), x.sizes());
}

// The fused normalisation + SiLU is silu(group_norm(x)) forward and backward (in float64, where
// rounding cannot hide a wrong formula), with and without autograd.
TEST(GroupNormSiLU, IsSiluOfGroupNormForwardAndBackward) {
  torch::manual_seed(0);
  const auto options = torch::TensorOptions().dtype(torch::kFloat64);
  torch::nn::GroupNorm norm(torch::nn::GroupNormOptions(4, 12).eps(1e-6));
  norm->to(torch::kFloat64);
  {
    torch::NoGradGuard no_grad;
    norm->weight.normal_(1.0, 0.5);
    norm->bias.normal_(0.0, 0.5);
  }
  const torch::Tensor x0 = torch::randn({3, 12, 5, 7}, options) * 2 + 0.5, dy = torch::randn({3, 12, 5, 7}, options);
  const auto run = [&](bool fused) {
    const torch::Tensor x = x0.clone().requires_grad_(true);
    norm->zero_grad();
    const torch::Tensor y = fused ? nn::group_norm_silu(norm, x) : torch::silu(norm(x));
    (y * dy).sum().backward();
    return std::vector<torch::Tensor>{y.detach(), x.grad(), norm->weight.grad().clone(), norm->bias.grad().clone()};
  };
  const auto fused = run(true), reference = run(false);
  const char* names[] = {"output", "input gradient", "weight gradient", "bias gradient"};
  for (size_t i = 0; i < fused.size(); ++i)
    EXPECT_TRUE(all_close(fused[i], reference[i], {1e-12, 1e-10})) << names[i];
  torch::NoGradGuard no_grad;
  EXPECT_TRUE(all_close(nn::group_norm_silu(norm, x0), reference[0], {1e-12, 1e-10})) << "without autograd";
}

// The float32 inference kernel (no autograd: group statistics in float64, a polynomial exponential)
// against float64 ground truth within float32 rounding of the output's scale, into a new tensor and
// in place (bit for bit the same), on rows shorter than, not a multiple of and a multiple of its
// 16 lanes.
TEST(GroupNormSiLU, Float32InferenceKernelMatchesFloat64GroundTruth) {
  torch::manual_seed(3);
  for (const std::vector<int64_t>& shape : {std::vector<int64_t>{2, 8, 3, 3}, {3, 12, 5, 7}, {1, 64, 32, 32}}) {
    SCOPED_TRACE(torch::IntArrayRef(shape));
    torch::nn::GroupNorm norm(torch::nn::GroupNormOptions(4, shape[1]).eps(1e-6));
    torch::NoGradGuard no_grad;
    norm->weight.normal_(1.0, 4.0);
    norm->bias.normal_(0.0, 2.0);
    const torch::Tensor x = torch::randn(shape) * 3 + 0.5, kept = x.clone();
    ASSERT_TRUE(nn::GroupNormSiLUInference::applies(x, norm->weight, norm->bias));
    const torch::Tensor out = nn::group_norm_silu(norm, x);
    EXPECT_TRUE(torch::equal(x, kept)) << "the input is left alone";
    const torch::Tensor truth = torch::silu(torch::group_norm(x.to(torch::kFloat64), 4, norm->weight.to(torch::kFloat64),
                                                              norm->bias.to(torch::kFloat64), 1e-6));
    const double scale = truth.abs().max().item<double>(), error = (out.to(torch::kFloat64) - truth).abs().max().item<double>();
    EXPECT_LT(error, 2e-6 * scale) << error << " of " << scale;
    torch::Tensor overwritten = x.clone();
    const torch::Tensor in_place = nn::group_norm_silu_(norm, overwritten);
    EXPECT_TRUE(in_place.is_same(overwritten)) << "written into its input";
    EXPECT_TRUE(torch::equal(in_place, out));
  }
}

// The float32 CPU training path (ATen's forward, the two-pass backward kernel with a polynomial
// exponential) against float64 ground truth, within float32 rounding of each result's scale: rows shorter than, not a multiple of and a
// multiple of its 16 lanes, and GroupNorm outputs far into the sigmoid's flat tails.
TEST(GroupNormSiLU, Float32KernelMatchesFloat64GroundTruth) {
  torch::manual_seed(1);
  for (const std::vector<int64_t>& shape : {std::vector<int64_t>{2, 8, 3, 3}, {3, 12, 5, 7}, {2, 64, 32, 32}}) {
    SCOPED_TRACE(torch::IntArrayRef(shape));
    const int64_t channels = shape[1];
    torch::nn::GroupNorm norm(torch::nn::GroupNormOptions(4, channels).eps(1e-6));
    {
      torch::NoGradGuard no_grad;
      norm->weight.normal_(1.0, 4.0);  // outputs up to about +-20: exp's clamps and both tails
      norm->bias.normal_(0.0, 2.0);
    }
    const torch::Tensor x0 = torch::randn(shape) * 3 + 0.5, dy = torch::randn(shape);
    ASSERT_TRUE(nn::GroupNormSiLUBackward::applies(x0, dy, norm->weight, norm->bias));
    const torch::Tensor x = x0.clone().requires_grad_(true);
    norm->zero_grad();
    const torch::Tensor y = nn::group_norm_silu(norm, x);
    (y * dy).sum().backward();
    const std::vector<torch::Tensor> fused{y.detach(), x.grad(), norm->weight.grad().clone(), norm->bias.grad().clone()};

    torch::nn::GroupNorm exact(torch::nn::GroupNormOptions(4, channels).eps(1e-6));
    exact->to(torch::kFloat64);
    {
      torch::NoGradGuard no_grad;
      exact->weight.copy_(norm->weight);
      exact->bias.copy_(norm->bias);
    }
    const torch::Tensor x64 = x0.to(torch::kFloat64).requires_grad_(true);
    const torch::Tensor y64 = torch::silu(exact(x64));
    (y64 * dy.to(torch::kFloat64)).sum().backward();
    const std::vector<torch::Tensor> truth{y64.detach(), x64.grad(), exact->weight.grad(), exact->bias.grad()};
    const char* names[] = {"output", "input gradient", "weight gradient", "bias gradient"};
    for (size_t i = 0; i < truth.size(); ++i) {
      const double scale = truth[i].abs().max().item<double>(), error = (fused[i].to(torch::kFloat64) - truth[i]).abs().max().item<double>();
      EXPECT_LT(error, 2e-6 * scale) << names[i] << ": " << error << " of " << scale;
    }
  }
}

TEST(AutoencoderConfig, ReadsAllThreeLayoutsAndNamesBadKeys) {
  const std::string dir = scratch_dir("config");
  auto write = [&](const std::string& name, const std::string& text) {
    std::ofstream(dir + "/" + name) << text;
    return dir + "/" + name;
  };
  const auto upstream = config::load_autoencoder_config(write("up.yaml", R"(model:
  base_learning_rate: 1.0e-04
  params:
    embed_dim: 32
    lossconfig: {target: x}
    ddconfig: {double_z: true, z_channels: 32, resolution: 256, in_channels: 3, out_ch: 3, ch: 128,
               ch_mult: [1, 1, 2, 2, 4], num_res_blocks: 2, attn_resolutions: [16], dropout: 0.0}
)"));
  EXPECT_EQ(upstream.ch_mult, (std::vector<int64_t>{1, 1, 2, 2, 4}));
  EXPECT_EQ(upstream.embed_dim, 32);
  const auto params = config::load_autoencoder_config(fixture("autoencoder/config.json"));
  EXPECT_EQ(params.ch, 32);
  EXPECT_EQ(params.attn_resolutions, std::vector<int64_t>{8});
  const auto flat = config::load_autoencoder_config(write("flat.yaml", "ch: 64\nch_mult: [1, 2]\nz_channels: 4\nembed_dim: 4\nresolution: 32\nnum_res_blocks: 1\nattn_resolutions: []\n"));
  EXPECT_EQ(flat.ch, 64);
  EXPECT_EQ(flat.downsample_factor(), 2);

  auto expect_message = [&](const std::string& file, const std::string& needle) {
    try {
      config::load_autoencoder_config(file);
      ADD_FAILURE() << "accepted " << file;
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
    }
  };
  expect_message(write("typo.yaml", "ddconfig: {ch: 32, z_channel: 4}\nembed_dim: 4\n"), "unknown key 'ddconfig.z_channel' (did you mean 'z_channels'?)");
  expect_message(write("type.yaml", "ddconfig: {ch: wide, z_channels: 4}\n"), "ddconfig.ch must be an integer");
  expect_message(write("groups.yaml", "ddconfig: {ch: 48, z_channels: 4}\n"), "not divisible by GroupNorm's 32 groups");
  expect_message(write("none.yaml", "foo: 1\n"), "no autoencoder settings found");
}

}  // namespace
}  // namespace vavae::test
