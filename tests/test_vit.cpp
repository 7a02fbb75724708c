// The ViT foundation models against timm (fixtures/vit), and the weight-name maps.
#include "fixtures.h"
#include "vavae/common/error.h"
#include "vavae/io/weights.h"
#include "vavae/nn/foundation_model.h"

namespace vavae::test {
namespace {

struct Variant {
  std::string name;
  nlohmann::json meta;
};

nn::FoundationModelConfig config_for(const nlohmann::json& v) {
  nn::FoundationModelConfig c;
  c.vit = nn::vit_preset(v.at("timm_model_name"));
  const auto& kw = v.at("create_model_kwargs");
  c.vit.embed_dim = kw.at("embed_dim");
  c.vit.depth = kw.at("depth");
  c.vit.num_heads = kw.at("num_heads");
  c.vit.mlp_hidden = static_cast<int64_t>(v.at("resolved").at("mlp_ratio").get<double>() * c.vit.embed_dim);
  const bool dinov2 = v.at("timm_model_name").get<std::string>().find("dinov2") != std::string::npos;
  c.family = dinov2 ? "dinov2" : "mae";
  c.input_size = dinov2 ? 224 : 0;
  return c;
}

class ViTFixture : public ::testing::TestWithParam<std::string> {
 protected:
  void SetUp() override {
    meta = read_json("vit/meta.json").at("variants").at(GetParam());
    model = nn::FoundationModel(config_for(meta));
    model->load_weights(fixture("vit/" + GetParam() + "_weights.safetensors"));
    model->to(test_device());
    inputs = std::make_unique<io::SafetensorsReader>(fixture("vit/inputs.safetensors"));
    expected = std::make_unique<io::SafetensorsReader>(fixture("vit/" + GetParam() + "_tensors.safetensors"));
  }
  Tolerance tol(const std::string& name) const { return tolerance_from(meta, name); }
  torch::Tensor expected_grid() const { return expected->tensor("feature_grid"); }
  nlohmann::json meta;
  nn::FoundationModel model{nullptr};
  std::unique_ptr<io::SafetensorsReader> inputs, expected;
};

// The variant's input as its meta.json names it: "x (no resize)" or "x (resized to x224 first)".
struct InputSpec {
  std::string image, resized;  // tensor names in inputs.safetensors; resized "" when fed as is
};
InputSpec input_of(const nlohmann::json& variant) {
  const std::string text = variant.at("input");
  InputSpec spec;
  spec.image = text.substr(0, text.find(' '));
  const auto at = text.find("resized to ");
  if (at != std::string::npos) spec.resized = text.substr(at + 11, text.find(' ', at + 11) - (at + 11));
  return spec;
}

TEST_P(ViTFixture, ReproducesTimmForwardFeaturesAndTheFeatureGrid) {
  torch::NoGradGuard no_grad;
  const InputSpec spec = input_of(meta);
  const torch::Tensor x = inputs->tensor(spec.image).to(test_device());
  const torch::Tensor vit_input = spec.resized.empty() ? x : inputs->tensor(spec.resized).to(test_device());
  if (!spec.resized.empty()) {
    EXPECT_EQ(model->config.input_size, vit_input.size(2)) << "the model resizes to what the fixture fed";
    const torch::Tensor resized = torch::nn::functional::interpolate(
        x, torch::nn::functional::InterpolateFuncOptions()
               .size(std::vector<int64_t>{vit_input.size(2), vit_input.size(3)})
               .mode(torch::kBilinear)
               .align_corners(false));
    EXPECT_TRUE(all_close(resized, vit_input, tol(spec.resized)));
  }
  EXPECT_TRUE(all_close(model->vit->patch_embed(vit_input), expected->tensor("patch_embed_out"), tol("patch_embed_out")));
  const int64_t grid = vit_input.size(2) / model->config.vit.patch_size;
  EXPECT_TRUE(all_close(model->vit->resampled_pos_embed(grid, grid), expected->tensor("pos_embed_resampled"), tol("pos_embed_resampled")));
  EXPECT_TRUE(all_close(model->vit->forward_features(vit_input), expected->tensor("forward_features"), tol("forward_features")));
  EXPECT_TRUE(all_close(model->features(x), expected->tensor("feature_grid"), tol("feature_grid")));
}

// bfloat16 keeps 8 mantissa bits: the feature grid stays within a few percent of its float32 value.
TEST_P(ViTFixture, Bfloat16OnCudaStaysNearTheFloat32Features) {
  if (!model->parameters()[0].is_cuda()) GTEST_SKIP() << "bf16 runs on CUDA only (VAVAE_TEST_DEVICE=cuda)";
  torch::NoGradGuard no_grad;
  const torch::Tensor x = inputs->tensor(input_of(meta).image).to(test_device());
  model->config.bf16 = true;
  const torch::Tensor half = model->features(x);
  EXPECT_EQ(half.scalar_type(), torch::kFloat32);
  const torch::Tensor expected = expected_grid();
  EXPECT_TRUE(all_close(half, expected, {0.03 * expected.abs().max().item<double>(), 0.03}));
}

INSTANTIATE_TEST_SUITE_P(Variants, ViTFixture, ::testing::Values("dinov2", "dinov2_reg4", "mae"));

TEST(ViTNames, OfficialDinov2LayoutWithRegistersLoadsLikeTimms) {
  const auto meta = read_json("vit/meta.json").at("variants").at("dinov2_reg4");
  const io::WeightFile timm = io::read_weights(fixture("vit/dinov2_reg4_weights.safetensors"));
  // The official release: register_tokens, a class position folded out of cls_token, a mask token.
  torch::manual_seed(7);
  io::NamedTensors official;
  torch::Tensor class_position = torch::randn({1, 1, 64});
  for (const auto& [k, t] : timm.tensors) {
    if (k == "reg_token") official.emplace_back("register_tokens", t);
    else if (k == "cls_token") official.emplace_back("cls_token", t - class_position);
    else if (k == "pos_embed") official.emplace_back("pos_embed", torch::cat({class_position, t}, 1));
    else official.emplace_back(k, t);
  }
  official.emplace_back("mask_token", torch::zeros({1, 64}));
  const std::string path = scratch_dir("vit_names") + "/dinov2_vits14_reg4_pretrain.safetensors";
  io::write_safetensors(path, official);
  nn::FoundationModel a(config_for(meta)), b(config_for(meta));
  a->load_weights(fixture("vit/dinov2_reg4_weights.safetensors"));
  b->load_weights(path);
  const auto pb = b->named_parameters();
  for (const auto& [k, t] : a->named_parameters().pairs()) EXPECT_TRUE(all_close(pb[k], t, {1e-7, 1e-6})) << k;
}

TEST(ViTNames, SwigluGiantLayoutMapsW12AndW3) {
  nn::ViTConfig c = nn::vit_preset("vit_giant2_patch14_dinov2.lvd142m");
  c.embed_dim = 32, c.depth = 1, c.num_heads = 2, c.mlp_hidden = 64;
  torch::manual_seed(8);
  nn::ViT source(c);
  io::NamedTensors official;
  for (const auto& [k, t] : io::state_dict(*source)) {
    std::string name = k;
    for (const auto& [from, to] : {std::pair<std::string, std::string>{".mlp.fc1.", ".mlp.w12."}, {".mlp.fc2.", ".mlp.w3."}}) {
      const auto at = name.find(from);
      if (at != std::string::npos) name.replace(at, from.size(), to);
    }
    official.emplace_back(name, t + 1);
  }
  EXPECT_EQ(source->blocks[0]->as<nn::ViTBlock>()->fc2->weight.size(1), 32);  // SwiGLU halves the hidden width
  nn::ViT target(c);
  io::WeightFile file;
  file.path = "official";
  file.tensors = nn::to_timm_names(official);
  io::load_into(*target, file);
  EXPECT_TRUE(torch::equal(target->blocks[0]->as<nn::ViTBlock>()->fc1->weight, source->blocks[0]->as<nn::ViTBlock>()->fc1->weight + 1));
  const torch::Tensor out = target->forward_features(torch::randn({1, 3, 28, 28}));
  EXPECT_EQ(out.sizes(), (std::vector<int64_t>{1, 5, 32}));
}

TEST(FoundationModel, RejectsWrongWidthRegistersAndImageSizes) {
  const auto variants = read_json("vit/meta.json").at("variants");
  auto expect = [](auto&& fn, const std::string& needle) {
    try {
      fn();
      ADD_FAILURE() << "accepted";
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
    }
  };
  nn::FoundationModelConfig wide = config_for(variants.at("dinov2"));
  wide.vit.embed_dim = 128, wide.vit.mlp_hidden = 512;
  nn::FoundationModel wrong_width(wide);
  expect([&] { wrong_width->load_weights(fixture("vit/dinov2_weights.safetensors")); }, "does not fit a dinov2 ViT of width 128");
  nn::FoundationModel plain(config_for(variants.at("dinov2")));
  expect([&] { plain->load_weights(fixture("vit/dinov2_reg4_weights.safetensors")); }, "register tokens");
  nn::FoundationModel mae(config_for(variants.at("mae")));
  mae->load_weights(fixture("vit/mae_weights.safetensors"));
  expect([&] { mae->features(torch::zeros({1, 3, 40, 40})); }, "not divisible by the patch size 16");
  nn::FoundationModel dinov2_as_mae(config_for(variants.at("mae")));
  expect([&] { dinov2_as_mae->load_weights(fixture("vit/dinov2_weights.safetensors")); }, "does not fit a mae ViT");
}

}  // namespace
}  // namespace vavae::test
