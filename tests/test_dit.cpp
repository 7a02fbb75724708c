// LightningDiT, its rectified-flow loss and its ODE samplers against upstream (fixtures/dit).
#include <filesystem>

#include "fixtures.h"
#include "process.h"
#include "vavae/common/error.h"
#include "vavae/common/precision.h"
#include "vavae/dit/lightningdit.h"
#include "vavae/config/config_file.h"
#include "vavae/config/dit_config.h"
#include "vavae/dit/dit_trainer.h"
#include "vavae/dit/generate.h"
#include "vavae/dit/transport.h"

#include <fstream>
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

// A fixture variant's network with its weights, in eval mode, on the test device.
dit::LightningDiT load_variant(const std::string& folder) {
  dit::LightningDiT model(config_from(read_json(folder + "/config.json").at("constructor")));
  io::load_into(*model, io::read_weights(fixture(folder + "/weights.safetensors")));
  model->eval();
  model->to(test_device());
  return model;
}

// A stored input on the test device.
torch::Tensor input(const io::SafetensorsReader& inputs, const std::string& name) { return inputs.tensor(name).to(test_device()); }

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
  const torch::Tensor out = model->forward(input(inputs, "x"), input(inputs, "t"), input(inputs, "y"), &trace);
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
  const torch::Tensor x = input(inputs, "cfg.x"), y = input(inputs, "cfg.y");
  for (const auto& [name, c] : config.at("cfg_cases").items()) {
    dit::Guidance g;
    g.scale = c.at("cfg_scale");
    g.interval = c.at("cfg_interval");
    g.interval_start = c.at("cfg_interval_start");
    const std::string t = c.at("t_input");
    EXPECT_TRUE(all_close(model->forward_with_cfg(x, input(inputs, t), y, g), outputs.tensor("cfg." + name), tolerance_from(meta(), "cfg." + name)))
        << name;
  }
  for (const std::string t : {"t_hi", "t_lo"})
    EXPECT_TRUE(all_close(model->forward(x, input(inputs, "cfg." + t), y), outputs.tensor("cfg.raw_forward_" + t),
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
  const torch::Tensor x = input(inputs, "cfg.x"), y = input(inputs, "cfg.y"), t = input(inputs, "cfg.t_hi");
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

// A transport case of fixtures/dit/transport: its files and its create_transport arguments, on the
// p1_release model (eval with the recorded labels = upstream's train step).
class DiTTransport : public ::testing::TestWithParam<std::string> {
 protected:
  const std::string folder = "dit/transport/" + GetParam();
  const nlohmann::json config = read_json(folder + "/config.json");
  dit::LightningDiT model = load_variant("dit/model/p1_release");
  const io::SafetensorsReader inputs{fixture(folder + "/inputs.safetensors")};
  const io::SafetensorsReader outputs{fixture(folder + "/outputs.safetensors")};
  const io::SafetensorsReader grads{fixture(folder + "/grads.safetensors")};
  const dit::TransportConfig c = [&] {
    dit::TransportConfig t;
    t.use_lognorm = config.at("create_transport_args").at("use_lognorm");
    t.use_cosine_loss = config.at("create_transport_args").at("use_cosine_loss");
    return t;
  }();
};

TEST_P(DiTTransport, LossTermsAndEveryGradientMatchUpstream) {
  const nlohmann::json meta = read_json("dit/transport/meta.json").at("cases").at(GetParam());
  if (c.use_lognorm) {  // t is the float32 rounding of sigmoid(the double draws)
    EXPECT_TRUE(torch::equal(torch::sigmoid(inputs.tensor("normal_draws")).to(torch::kFloat32), inputs.tensor("t")));
  }
  const torch::Tensor y = input(inputs, "y_used");
  const dit::TransportLoss loss = dit::transport_loss([&](const torch::Tensor& x, const torch::Tensor& t) { return model->forward(x, t, y); },
                                                      input(inputs, "x1"), {input(inputs, "t"), input(inputs, "x0")}, c);
  auto tol = [&](const std::string& name) { return tolerance_from(meta, name); };
  EXPECT_TRUE(all_close(loss.xt, outputs.tensor("xt"), tol("xt")));
  EXPECT_TRUE(all_close(loss.ut, outputs.tensor("ut"), tol("ut")));
  EXPECT_TRUE(all_close(loss.prediction, outputs.tensor("model_output"), tol("model_output")));
  EXPECT_TRUE(all_close(loss.mse, outputs.tensor("loss_mse"), tol("loss_mse")));
  EXPECT_TRUE(all_close(loss.mse.mean(), outputs.tensor("mse_mean"), tol("mse_mean")));
  EXPECT_TRUE(all_close(loss.total, outputs.tensor("total_loss"), tol("total_loss")));
  EXPECT_EQ(loss.cosine.defined(), outputs.contains("loss_cos"));
  if (loss.cosine.defined()) {
    EXPECT_TRUE(all_close(loss.cosine, outputs.tensor("loss_cos"), tol("loss_cos")));
  }
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

// bf16 autocast for the forward pass, as train.py under accelerate --mixed_precision bf16: the
// velocity comes back in fp32, the loss terms stay within 1e-2 of upstream's fp32 values, and every
// parameter gradient points the same way (relative error of its norm below 5e-2: a bf16 matmul
// keeps 8 bits of mantissa).
TEST_P(DiTTransport, Bf16AutocastKeepsTheLossWithinOnePercentOfFp32) {
  SKIP_WITHOUT_BF16();
  const torch::Tensor y = input(inputs, "y_used");
  const dit::TransportLoss loss = dit::transport_loss(
      [&](const torch::Tensor& x, const torch::Tensor& t) {
        const AutocastScope autocast(test_device(), Precision::bf16);
        return model->forward(x, t, y);
      },
      input(inputs, "x1"), {input(inputs, "t"), input(inputs, "x0")}, c);
  EXPECT_EQ(loss.prediction.scalar_type(), torch::kFloat);
  const double total = outputs.tensor("total_loss").item<double>(), mse = outputs.tensor("mse_mean").item<double>();
  EXPECT_NEAR(loss.total.item<double>(), total, 1e-2 * std::abs(total));
  EXPECT_NEAR(loss.mse.mean().item<double>(), mse, 1e-2 * std::abs(mse));
  loss.total.backward();
  const auto parameters = model->named_parameters();
  for (const auto& entry : grads.entries()) {
    const torch::Tensor ours = parameters[entry.name].grad().cpu(), reference = grads.tensor(entry.name);
    ASSERT_TRUE(ours.defined()) << entry.name;
    EXPECT_EQ(ours.scalar_type(), torch::kFloat) << entry.name;
    const double scale = reference.norm().item<double>();
    if (scale > 1e-6) {
      EXPECT_LT((ours - reference).norm().item<double>(), 5e-2 * scale) << entry.name;
    }
  }
}


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
  const torch::Tensor y = input(inputs, "model_input_y");
  std::vector<torch::Tensor> eval_t, eval_x, eval_v, trajectory;
  torch::NoGradGuard no_grad;
  const dit::VelocityModel velocity = [&](const torch::Tensor& x, const torch::Tensor& t) {
    const torch::Tensor v = cfg ? model->forward_with_cfg(x, t, y, g) : model->forward(x, t, y);
    eval_t.push_back(t), eval_x.push_back(x), eval_v.push_back(v);
    return v;
  };
  const torch::Tensor final = dit::sample_ode(velocity, input(inputs, "model_input_x0"), sc, &trajectory);
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

namespace vavae::test {
namespace {

// A latent folder in extract-latents' layout: class k's latents are k's pattern plus noise.
std::string make_latent_folder(const std::string& name, int64_t n, int64_t channels, int64_t size, int64_t classes) {
  const std::string dir = scratch_dir(name);
  at::Generator g = at::detail::createCPUGenerator(7);
  const torch::Tensor labels = torch::arange(n) % classes;
  const torch::Tensor patterns = torch::randn({classes, channels, size, size}, g) * 2 + 1;
  const torch::Tensor latents = patterns.index_select(0, labels) + 0.1 * torch::randn({n, channels, size, size}, g);
  io::write_safetensors(dir + "/latents_rank00_shard000.safetensors",
                        {{"latents", latents}, {"latents_flip", latents.flip({3})}, {"labels", labels}});
  return dir;
}

std::string tiny_dit_config(const std::string& data, const std::string& extra = "") {
  return "data: {data_path: " + data + R"(, num_classes: 4}
model: {model_type: LightningDiT-B/1, depth: 2, hidden_size: 32, num_heads: 2, in_chans: 4}
train: {max_steps: 200, global_batch_size: 16, log_every: 20, ckpt_every: 100, threads: 1}
optimizer: {lr: 0.002}
sample: {num_sampling_steps: 6, cfg_scale: 2.0, per_proc_batch_size: 3}
)" + extra;
}

config::DiTConfig dit_config_text(const std::string& yaml) { return config::dit_config_from_json(config::load_config_text(yaml), "test.yaml"); }

TEST(DiTTraining, ShortRunLowersTheLossAndResumesExactly) {
  const std::string data = make_latent_folder("dit_latents", 96, 4, 2, 4);
  const config::DiTConfig c = dit_config_text(tiny_dit_config(data));
  const std::string straight = scratch_dir("dit_straight"), halves = scratch_dir("dit_halves");
  const dit::DiTRunSummary s = dit::run_dit_training(c, {straight, "", 0});
  EXPECT_EQ(s.steps, 200);
  EXPECT_LT(s.last_loss, 0.7 * s.first_loss);
  EXPECT_TRUE(std::filesystem::exists(data + "/latents_stats.pt")) << "computed and cached, as ImgLatentDataset does";
  // 100 steps, then resumed to 200: the same weights, EMA and moments as the run without a break.
  dit::run_dit_training(c, {halves, "", 100});
  dit::run_dit_training(c, {halves, halves, 0});
  const io::SafetensorsReader a(straight + "/ema.safetensors"), b(halves + "/ema.safetensors");
  ASSERT_EQ(a.entries().size(), b.entries().size());
  for (const auto& e : a.entries()) EXPECT_TRUE(torch::equal(a.tensor(e.name), b.tensor(e.name))) << e.name;
  int lines = 0;
  std::ifstream metrics(halves + "/metrics.jsonl");
  for (std::string line; std::getline(metrics, line);) ++lines;
  EXPECT_EQ(lines, 10) << "each logged step once";
}

TEST(DiTSampling, AFixedSeedReproducesTheSamplesAtAnyBatchSize) {
  dit::LightningDiT model = load_variant("dit/model/p1_release");
  dit::GenerateOptions o;
  o.count = 5, o.seed = 11, o.batch_size = 2;
  o.sampler.num_steps = 4;
  o.guidance.scale = 3;
  const dit::Generated a = dit::generate_latents(*model, o, test_device());
  EXPECT_EQ(a.latents.sizes(), (std::vector<int64_t>{5, model->config.in_channels, model->config.input_size, model->config.input_size}));
  EXPECT_TRUE(torch::equal(a.latents, dit::generate_latents(*model, o, test_device()).latents));
  o.batch_size = 5;
  EXPECT_TRUE(all_close(a.latents, dit::generate_latents(*model, o, test_device()).latents, {1e-5, 1e-5}));
  o.seed = 12;
  EXPECT_FALSE(all_close(a.latents, dit::generate_latents(*model, o, test_device()).latents, {1e-2, 1e-2}));
  EXPECT_TRUE(torch::equal(a.labels, torch::tensor({0, 1, 2, 3, 4}, torch::kInt64)));
  o.labels = {3, 20};
  EXPECT_THROW(dit::generate_latents(*model, o, test_device()), Error);
}

// dit sample --mixed-precision bf16: the same noise gives samples close to the fp32 ones (a few
// percent: every one of the sampler's model calls is a bf16 forward pass), returned in fp32.
TEST(DiTSampling, Bf16AutocastSamplesStayCloseToFp32) {
  SKIP_WITHOUT_BF16();
  dit::LightningDiT model = load_variant("dit/model/p1_release");
  dit::GenerateOptions o;
  o.count = 4, o.seed = 3, o.batch_size = 4;
  o.sampler.num_steps = 6;
  o.guidance.scale = 2;
  const torch::Tensor fp32 = dit::generate_latents(*model, o, test_device()).latents;
  o.precision = Precision::bf16;
  const torch::Tensor bf16 = dit::generate_latents(*model, o, test_device()).latents;
  EXPECT_EQ(bf16.scalar_type(), torch::kFloat);
  EXPECT_LT((bf16 - fp32).norm().item<double>(), 5e-2 * fp32.norm().item<double>());
  EXPECT_FALSE(torch::equal(bf16, fp32)) << "the forward passes ran in bf16";
}

TEST(DiTTraining, Bf16AutocastTrainsAndBadPrecisionIsNamed) {
  SKIP_WITHOUT_BF16();
  const std::string data = make_latent_folder("dit_latents_bf16", 96, 4, 2, 4);
  nlohmann::json root = config::load_config_text(tiny_dit_config(data));
  root["train"]["mixed_precision"] = "bf16";
  const std::string run = scratch_dir("dit_bf16");
  const dit::DiTRunSummary s = dit::run_dit_training(config::dit_config_from_json(root, "test.yaml"), {run, "", 0});
  EXPECT_LT(s.last_loss, 0.7 * s.first_loss);
  const io::SafetensorsReader ema(run + "/ema.safetensors");
  for (const auto& e : ema.entries()) EXPECT_EQ(ema.tensor(e.name).scalar_type(), torch::kFloat) << e.name;
  root["train"]["mixed_precision"] = "fp16";
  try {
    config::dit_config_from_json(root, "test.yaml");
    ADD_FAILURE() << "fp16 accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("train.mixed_precision"), std::string::npos) << e.what();
  }
}

TEST(DiTConfig, UpstreamsReleaseConfigLoadsAndBadKeysAreNamed) {
  // configs/lightningdit_xl_vavae_f16d32.yaml as upstream ships it.
  const config::DiTConfig c = config::load_dit_config(std::string(VAVAE_SOURCE_DIR) + "/configs/upstream/lightningdit_xl_vavae_f16d32.yaml");
  EXPECT_EQ(c.model.depth, 28);
  EXPECT_EQ(c.model.hidden_size, 1152);
  EXPECT_EQ(c.model.patch_size, 1);
  EXPECT_TRUE(c.model.use_swiglu && c.model.use_rope && c.model.use_rmsnorm && !c.model.use_qknorm);
  EXPECT_EQ(c.sampler.num_steps, 250);
  EXPECT_DOUBLE_EQ(c.sampler.timestep_shift, 0.3);
  EXPECT_DOUBLE_EQ(c.guidance.scale, 10.0);
  EXPECT_DOUBLE_EQ(c.guidance.interval_start, 0.11);
  EXPECT_DOUBLE_EQ(c.beta2, 0.95);
  for (const auto& [file, scale, start] : {std::tuple<std::string, double, double>{"lightningdit_xl_vavae_f16d32_64ep_cfg.yaml", 10.0, 0.10},
                                           {"lightningdit_xl_vavae_f16d32_800ep_cfg.yaml", 6.7, 0.125}}) {
    const config::DiTConfig r = config::load_dit_config(std::string(VAVAE_SOURCE_DIR) + "/configs/upstream/" + file);
    EXPECT_DOUBLE_EQ(r.guidance.scale, scale) << file;
    EXPECT_DOUBLE_EQ(r.guidance.interval_start, start) << file;
  }
  for (const std::string bad : {"transport: {path_type: GVP}", "model: {use_swiglu: 3}", "train: {max_stepz: 3}"}) {
    try {
      dit_config_text(tiny_dit_config("x") + bad + "\n");
      FAIL() << bad << " accepted";
    } catch (const Error& e) {
      const std::string key = bad.substr(bad.find('{') + 1, bad.find(':', bad.find('{')) - bad.find('{') - 1);
      EXPECT_NE(std::string(e.what()).find(key), std::string::npos) << e.what();
    }
  }
}

// Two ranks over Gloo with half the batch each take the same steps as one process of the whole
// batch (the draws are made for the global batch and sliced); only rank 0 writes.
TEST(DiTTraining, TwoRanksEqualOneProcessOfTheGlobalBatch) {
  const std::string data = make_latent_folder("dit_latents_dp", 64, 4, 2, 4);
  const std::string config = scratch_dir("dit_dp") + "/dit.yaml";
  std::ofstream(config) << tiny_dit_config(data) << "\n";
  const std::string one = scratch_dir("dit_dp_one"), two = scratch_dir("dit_dp_two");
  // fp32 (auto is bf16 on CPUs with AVX512-BF16): the two sides differ only in summation order.
  const std::vector<std::string> common = {"dit",          "train", "--config", config, "--max-steps", "20", "--set", "train.log_every=5",
                                           "--set", "train.mixed_precision=no"};
  auto with = [](std::vector<std::string> a, const std::vector<std::string>& more) {
    a.insert(a.end(), more.begin(), more.end());
    return a;
  };
  const ProcessResult single = run_vavae(with(common, {"--output", one}), timeout(120));
  ASSERT_EQ(single.code, 0) << single.err;
  const ProcessResult ranks = run_vavae(with(common, {"--output", two, "--nproc", "2"}), timeout(120));
  ASSERT_EQ(ranks.code, 0) << ranks.err;
  const io::SafetensorsReader a(one + "/ema.safetensors"), b(two + "/ema.safetensors");
  for (const auto& e : a.entries())  // all-reduce sums in another order: float32 rounding apart
    EXPECT_TRUE(all_close(b.tensor(e.name), a.tensor(e.name), {1e-5, 1e-4})) << e.name;
  int lines = 0;
  std::ifstream metrics(two + "/metrics.jsonl");
  for (std::string line; std::getline(metrics, line);) ++lines;
  EXPECT_EQ(lines, 4) << "rank 0 alone logs";
}

}  // namespace
}  // namespace vavae::test
