// LightningDiT, its rectified-flow loss and its ODE samplers against upstream (fixtures/dit).
#include <filesystem>

#include "fixtures.h"
#include "vavae/common/error.h"
#include "vavae/dit/lightningdit.h"
#include "vavae/dit/transport.h"
#include "vavae/io/weights.h"

namespace vavae::test {
namespace {

dit::LightningDiTConfig config_from(const nlohmann::json& constructor) {
  dit::LightningDiTConfig c;
  c.input_size = constructor.at("input_size");
  c.patch_size = constructor.at("patch_size");
  c.in_channels = constructor.at("in_channels");
  c.hidden_size = constructor.at("hidden_size");
  c.depth = constructor.at("depth");
  c.num_heads = constructor.at("num_heads");
  c.mlp_ratio = constructor.at("mlp_ratio");
  c.class_dropout_prob = constructor.at("class_dropout_prob");
  c.num_classes = constructor.at("num_classes");
  c.learn_sigma = constructor.at("learn_sigma");
  c.use_qknorm = constructor.at("use_qknorm");
  c.use_swiglu = constructor.at("use_swiglu");
  c.use_rope = constructor.at("use_rope");
  c.use_rmsnorm = constructor.at("use_rmsnorm");
  c.wo_shift = constructor.at("wo_shift");
  c.use_checkpoint = constructor.at("use_checkpoint");
  return c;
}

// A fixture variant's network with its weights, in eval mode.
dit::LightningDiT load_variant(const std::string& folder) {
  dit::LightningDiT model(config_from(read_json(folder + "/config.json").at("constructor")));
  io::load_into(*model, io::read_weights(fixture(folder + "/weights.safetensors")));
  model->eval();
  return model;
}

class DiTModel : public ::testing::TestWithParam<std::string> {
 protected:
  std::string folder() const { return "dit/model/" + GetParam(); }
  nlohmann::json meta() const { return read_json("dit/model/meta.json").at("variants").at(GetParam()); }
};

TEST_P(DiTModel, ForwardAndEveryIntermediateMatchUpstream) {
  dit::LightningDiT model = load_variant(folder());
  const io::SafetensorsReader inputs(fixture(folder() + "/inputs.safetensors"));
  const io::SafetensorsReader outputs(fixture(folder() + "/outputs.safetensors"));
  const io::SafetensorsReader intermediates(fixture(folder() + "/intermediates.safetensors"));
  torch::NoGradGuard no_grad;
  dit::Trace trace;
  const torch::Tensor out = model->forward(inputs.tensor("x"), inputs.tensor("t"), inputs.tensor("y"), &trace);
  EXPECT_TRUE(all_close(out, outputs.tensor("out"), tolerance_from(meta(), "out")));
  int compared = 0;
  for (const auto& entry : intermediates.entries()) {
    ASSERT_TRUE(trace.count(entry.name)) << "no intermediate " << entry.name;
    EXPECT_TRUE(all_close(trace.at(entry.name), intermediates.tensor(entry.name), tolerance_from(meta(), "intermediates:" + entry.name)))
        << entry.name;
    ++compared;
  }
  EXPECT_GE(compared, 20);
}

TEST_P(DiTModel, ClassifierFreeGuidanceMatchesUpstreamWithAndWithoutTheInterval) {
  dit::LightningDiT model = load_variant(folder());
  const nlohmann::json config = read_json(folder() + "/config.json");
  const io::SafetensorsReader inputs(fixture(folder() + "/inputs.safetensors"));
  const io::SafetensorsReader outputs(fixture(folder() + "/outputs.safetensors"));
  torch::NoGradGuard no_grad;
  const torch::Tensor x = inputs.tensor("cfg.x"), y = inputs.tensor("cfg.y");
  for (const auto& [name, c] : config.at("cfg_cases").items()) {
    dit::Guidance g;
    g.scale = c.at("cfg_scale");
    g.interval = c.at("cfg_interval");
    g.interval_start = c.at("cfg_interval_start");
    const std::string t = c.at("t_input");
    EXPECT_TRUE(all_close(model->forward_with_cfg(x, inputs.tensor(t), y, g), outputs.tensor("cfg." + name), tolerance_from(meta(), "cfg." + name)))
        << name;
  }
  for (const std::string t : {"t_hi", "t_lo"})
    EXPECT_TRUE(all_close(model->forward(x, inputs.tensor("cfg." + t), y), outputs.tensor("cfg.raw_forward_" + t),
                          tolerance_from(meta(), "cfg.raw_forward_" + t)));
}

TEST_P(DiTModel, BuiltTablesEqualTheStoredOnesAndKeysMatchUpstream) {
  // pos_embed and the RoPE tables are functions of the config: ours, before loading, equal the
  // stored ones; the parameter and buffer names are exactly upstream's.
  const dit::LightningDiT fresh(config_from(read_json(folder() + "/config.json").at("constructor")));
  const io::SafetensorsReader weights(fixture(folder() + "/weights.safetensors"));
  const io::SafetensorsReader intermediates(fixture(folder() + "/intermediates.safetensors"));
  EXPECT_TRUE(all_close(fresh->pos_embed, intermediates.tensor("pos_embed"), tolerance_from(meta(), "intermediates:pos_embed")));
  if (fresh->feat_rope) {
    EXPECT_TRUE(all_close(fresh->feat_rope->freqs_cos, intermediates.tensor("rope_cos"), tolerance_from(meta(), "intermediates:rope_cos")));
    EXPECT_TRUE(all_close(fresh->feat_rope->freqs_sin, intermediates.tensor("rope_sin"), tolerance_from(meta(), "intermediates:rope_sin")));
  }
  std::set<std::string> ours, theirs;
  for (const auto& [name, tensor] : io::state_dict(*fresh)) ours.insert(name);
  for (const auto& entry : weights.entries()) theirs.insert(entry.name);
  EXPECT_EQ(ours, theirs);
}

INSTANTIATE_TEST_SUITE_P(Variants, DiTModel, ::testing::Values("p1_release", "p2_qknorm", "p2_plain"));

TEST(DiTModel, CfgWithScaleOneIsTheConditionalPrediction) {
  dit::LightningDiT model = load_variant("dit/model/p2_plain");
  const io::SafetensorsReader inputs(fixture("dit/model/p2_plain/inputs.safetensors"));
  torch::NoGradGuard no_grad;
  const torch::Tensor x = inputs.tensor("cfg.x"), y = inputs.tensor("cfg.y"), t = inputs.tensor("cfg.t_hi");
  const int64_t n = x.size(0) / 2;
  dit::Guidance all_channels;
  all_channels.channels = 0;  // every channel guided, so the whole first half is the guided one
  const torch::Tensor guided = model->forward_with_cfg(x, t, y, all_channels);
  const torch::Tensor cond = model->forward(x.narrow(0, 0, n), t.narrow(0, 0, n), y.narrow(0, 0, n));
  EXPECT_TRUE(all_close(guided.narrow(0, 0, n), cond, {1e-6, 1e-6}));
  // Upstream's default guides 3 channels: with a scale of 4 the rest of the first half stays conditional.
  dit::Guidance upstream;
  upstream.scale = 4;
  const torch::Tensor three = model->forward_with_cfg(x, t, y, upstream);
  EXPECT_TRUE(all_close(three.narrow(0, 0, n).narrow(1, 3, x.size(1) - 3), cond.narrow(1, 3, x.size(1) - 3), {1e-6, 1e-6}));
  EXPECT_FALSE(all_close(three.narrow(0, 0, n).narrow(1, 0, 3), cond.narrow(1, 0, 3), {1e-3, 1e-3}));
}

TEST(DiTModel, ConfigErrorsNameTheArgument) {
  dit::LightningDiTConfig c;
  c.hidden_size = 100, c.num_heads = 16;
  EXPECT_THROW(c.validate(), Error);
  c = dit::lightningdit_preset("LightningDiT-XL/1");
  EXPECT_EQ(c.depth, 28);
  EXPECT_EQ(c.hidden_size, 1152);
  EXPECT_EQ(c.patch_size, 1);
  EXPECT_THROW(dit::lightningdit_preset("LightningDiT-XXL/2"), Error);
  c.use_checkpoint = true;
  try {
    c.validate();
    FAIL() << "use_checkpoint accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("use_checkpoint"), std::string::npos);
  }
}

// ---- transport ----

class DiTTransport : public ::testing::TestWithParam<std::string> {};

TEST_P(DiTTransport, LossTermsAndEveryGradientMatchUpstream) {
  const std::string folder = "dit/transport/" + GetParam();
  const nlohmann::json config = read_json(folder + "/config.json");
  const nlohmann::json meta = read_json("dit/transport/meta.json").at("cases").at(GetParam());
  dit::LightningDiT model = load_variant("dit/model/p1_release");  // eval with the recorded labels = upstream's train step
  const io::SafetensorsReader inputs(fixture(folder + "/inputs.safetensors"));
  const io::SafetensorsReader outputs(fixture(folder + "/outputs.safetensors"));
  const io::SafetensorsReader grads(fixture(folder + "/grads.safetensors"));
  dit::TransportConfig c;
  c.use_lognorm = config.at("create_transport_args").at("use_lognorm");
  c.use_cosine_loss = config.at("create_transport_args").at("use_cosine_loss");
  if (c.use_lognorm)  // t is the float32 rounding of sigmoid(the double draws)
    EXPECT_TRUE(torch::equal(torch::sigmoid(inputs.tensor("normal_draws")).to(torch::kFloat32), inputs.tensor("t")));
  const torch::Tensor y = inputs.tensor("y_used");
  const dit::TransportLoss loss = dit::transport_loss([&](const torch::Tensor& x, const torch::Tensor& t) { return model->forward(x, t, y); },
                                                      inputs.tensor("x1"), {inputs.tensor("t"), inputs.tensor("x0")}, c);
  auto tol = [&](const std::string& name) { return tolerance_from(meta, name); };
  EXPECT_TRUE(all_close(loss.xt, outputs.tensor("xt"), tol("xt")));
  EXPECT_TRUE(all_close(loss.ut, outputs.tensor("ut"), tol("ut")));
  EXPECT_TRUE(all_close(loss.prediction, outputs.tensor("model_output"), tol("model_output")));
  EXPECT_TRUE(all_close(loss.mse, outputs.tensor("loss_mse"), tol("loss_mse")));
  EXPECT_TRUE(all_close(loss.mse.mean(), outputs.tensor("mse_mean"), tol("mse_mean")));
  EXPECT_TRUE(all_close(loss.total, outputs.tensor("total_loss"), tol("total_loss")));
  EXPECT_EQ(loss.cosine.defined(), outputs.contains("loss_cos"));
  if (loss.cosine.defined()) EXPECT_TRUE(all_close(loss.cosine, outputs.tensor("loss_cos"), tol("loss_cos")));
  loss.total.backward();
  std::map<std::string, torch::Tensor> ours;
  for (const auto& item : model->named_parameters()) ours[item.key()] = item.value().grad();
  int compared = 0;
  for (const auto& entry : grads.entries()) {
    ASSERT_TRUE(ours.count(entry.name) && ours.at(entry.name).defined()) << "no gradient for " << entry.name;
    EXPECT_TRUE(all_close(ours.at(entry.name), grads.tensor(entry.name), tol("grads:" + entry.name))) << entry.name;
    ++compared;
  }
  EXPECT_EQ(compared, static_cast<int>(ours.size()));
}

INSTANTIATE_TEST_SUITE_P(Cases, DiTTransport, ::testing::Values("lognorm_cos", "uniform_mse"));

TEST(DiTTransport, DrawsFollowTheSeedAndTheirDistribution) {
  const torch::Tensor x1 = torch::zeros({4096, 2, 2, 2});
  dit::TransportConfig lognorm, uniform;
  uniform.use_lognorm = false;
  auto draw = [&](const dit::TransportConfig& c, uint64_t seed) { return dit::draw_transport(x1, c, at::detail::createCPUGenerator(seed)); };
  EXPECT_TRUE(torch::equal(draw(lognorm, 3).t, draw(lognorm, 3).t));
  EXPECT_FALSE(torch::equal(draw(lognorm, 3).t, draw(lognorm, 4).t));
  const torch::Tensor t = draw(lognorm, 5).t;
  EXPECT_NEAR(torch::logit(t.to(torch::kFloat64)).std().item<double>(), 1.0, 0.05);  // logit-normal(0, 1)
  EXPECT_NEAR(t.median().item<double>(), 0.5, 0.03);
  const torch::Tensor u = draw(uniform, 5).t;
  EXPECT_NEAR(u.mean().item<double>(), 0.5, 0.02);
  EXPECT_GE(u.min().item<double>(), 0.0);
  EXPECT_NEAR(draw(uniform, 6).x0.std().item<double>(), 1.0, 0.02);
}

// ---- sampler ----

class DiTSampler : public ::testing::TestWithParam<std::string> {};

TEST_P(DiTSampler, TrajectoriesAndEveryModelCallMatchUpstream) {
  const std::string folder = "dit/sampler/" + GetParam();
  const nlohmann::json config = read_json(folder + "/config.json");
  const nlohmann::json meta = read_json("dit/sampler/meta.json").at("cases").at(GetParam());
  dit::LightningDiT model = load_variant("dit/model/p1_release");
  const io::SafetensorsReader inputs(fixture(folder + "/inputs.safetensors"));
  const io::SafetensorsReader outputs(fixture(folder + "/outputs.safetensors"));
  dit::SamplerConfig sc;
  sc.method = config.at("sample_ode_args").at("sampling_method");
  sc.num_steps = config.at("sample_ode_args").at("num_steps");
  sc.timestep_shift = config.at("sample_ode_args").at("timestep_shift");
  const bool cfg = config.at("model_fn") == "forward_with_cfg";
  dit::Guidance g;
  if (cfg) {
    const auto& kw = config.at("model_kwargs");
    g.scale = kw.at("cfg_scale"), g.interval = kw.at("cfg_interval"), g.interval_start = kw.at("cfg_interval_start");
  }
  const torch::Tensor y = inputs.tensor("model_input_y");
  std::vector<torch::Tensor> eval_t, eval_x, eval_v, trajectory;
  torch::NoGradGuard no_grad;
  const dit::VelocityModel velocity = [&](const torch::Tensor& x, const torch::Tensor& t) {
    const torch::Tensor v = cfg ? model->forward_with_cfg(x, t, y, g) : model->forward(x, t, y);
    eval_t.push_back(t), eval_x.push_back(x), eval_v.push_back(v);
    return v;
  };
  const torch::Tensor final = dit::sample_ode(velocity, inputs.tensor("model_input_x0"), sc, &trajectory);
  auto tol = [&](const std::string& name) { return tolerance_from(meta, name); };
  EXPECT_TRUE(all_close(dit::sampling_grid(sc), outputs.tensor("t_grid"), tol("t_grid")));
  EXPECT_TRUE(all_close(torch::stack(trajectory), outputs.tensor("trajectory"), tol("trajectory")));
  EXPECT_TRUE(all_close(final, outputs.tensor("final"), tol("final")));
  EXPECT_TRUE(all_close(torch::stack(eval_t), outputs.tensor("eval_t"), tol("eval_t")));
  EXPECT_TRUE(all_close(torch::stack(eval_x), outputs.tensor("eval_x"), tol("eval_x")));
  EXPECT_TRUE(all_close(torch::stack(eval_v), outputs.tensor("eval_v"), tol("eval_v")));
  const torch::Tensor samples = outputs.tensor("samples");
  EXPECT_TRUE(all_close(final.narrow(0, 0, samples.size(0)), samples, tol("samples")));
}

INSTANTIATE_TEST_SUITE_P(Cases, DiTSampler, ::testing::Values("euler_cfg_shift", "heun2_cfg_shift", "euler_nocfg_noshift"));

TEST(DiTSampler, BadSettingsAreErrors) {
  dit::SamplerConfig c;
  c.method = "dopri5";
  EXPECT_THROW(dit::sampling_grid(c), Error);
  c.method = "euler", c.num_steps = 1;
  EXPECT_THROW(dit::sampling_grid(c), Error);
}

}  // namespace
}  // namespace vavae::test
