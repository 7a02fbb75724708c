#include "vavae/train/checkpoint.h"

#include "vavae/train/adam_state.h"

#include <ATen/CPUGeneratorImpl.h>

#include <algorithm>
#include <filesystem>
#include <cmath>
#include <map>
#include <nlohmann/json.hpp>
#include <sstream>

#include "vavae/common/checked.h"
#include "vavae/common/error.h"
#include "vavae/common/runtime.h"
#include "vavae/io/safetensors.h"
#include "vavae/io/weights.h"

namespace vavae::train {
namespace {

namespace fs = std::filesystem;

const std::string kGeneratorOptimizer = "optimizer.generator";
const std::string kDiscriminatorOptimizer = "optimizer.discriminator";

}  // namespace

void add_adam_state(torch::optim::Adam& optimizer, const std::string& prefix, io::NamedTensors& tensors,
                    std::map<std::string, std::string>& metadata) {
  const auto& group = optimizer.param_groups().at(0);
  const auto& options = static_cast<const torch::optim::AdamOptions&>(group.options());
  const auto& params = group.params();
  for (size_t i = 0; i < params.size(); ++i) {
    auto it = optimizer.state().find(adam_state_key(optimizer.state(), params[i]));
    if (it == optimizer.state().end()) continue;
    const auto& state = static_cast<const torch::optim::AdamParamState&>(*it->second);
    const std::string at = prefix + ".state." + std::to_string(i) + ".";
    tensors.emplace_back(at + "step", torch::tensor(static_cast<float>(state.step())));
    tensors.emplace_back(at + "exp_avg", state.exp_avg());
    tensors.emplace_back(at + "exp_avg_sq", state.exp_avg_sq());
    if (options.amsgrad()) tensors.emplace_back(at + "max_exp_avg_sq", state.max_exp_avg_sq());
  }
  nlohmann::json group_json = {{"lr", options.lr()},
                               {"betas", {std::get<0>(options.betas()), std::get<1>(options.betas())}},
                               {"eps", options.eps()},
                               {"weight_decay", options.weight_decay()},
                               {"amsgrad", options.amsgrad()},
                               {"params", params.size()}};
  metadata[prefix + ".param_groups"] = nlohmann::json::array({group_json}).dump();
}

void restore_adam_state(torch::optim::Adam& optimizer, const std::string& prefix, const io::SafetensorsReader& reader) {
  const std::string& path = reader.path();
  auto& group = optimizer.param_groups().at(0);
  auto& options = static_cast<torch::optim::AdamOptions&>(group.options());
  const auto& params = group.params();
  const auto meta = reader.metadata().find(prefix + ".param_groups");
  if (meta == reader.metadata().end()) throw Error(path + ": metadata '" + prefix + ".param_groups' is missing");
  try {
    const nlohmann::json g = nlohmann::json::parse(meta->second).at(0);
    if (g.at("params").get<size_t>() != params.size())
      throw Error(path + ": " + prefix + " holds state for " + g.at("params").dump() + " parameters, the model has " +
                  std::to_string(params.size()));
    options.lr(g.at("lr").get<double>());
    options.betas({g.at("betas").at(0).get<double>(), g.at("betas").at(1).get<double>()});
    options.eps(g.at("eps").get<double>());
    options.weight_decay(g.at("weight_decay").get<double>());
    options.amsgrad(g.at("amsgrad").get<bool>());
  } catch (const nlohmann::json::exception& e) {
    throw Error(path + ": metadata '" + prefix + ".param_groups' is malformed: " + e.what());
  }
  optimizer.state().clear();
  for (size_t i = 0; i < params.size(); ++i) {
    const std::string at = prefix + ".state." + std::to_string(i) + ".";
    if (!reader.contains(at + "step")) continue;
    auto moment = [&](const std::string& name) {
      const std::string key = at + name;
      const torch::Tensor t = reader.tensor(key);
      if (t.sizes() != params[i].sizes())
        throw Error(path + ": '" + key + "' has shape " + shape_string(t.sizes()) + ", its parameter " + shape_string(params[i].sizes()));
      if (!t.is_floating_point()) throw Error(path + ": '" + key + "' is not a floating-point tensor");
      return t.to(params[i].options());
    };
    const torch::Tensor step = reader.tensor(at + "step");
    if (step.numel() != 1) throw Error(path + ": '" + at + "step' is not a scalar");
    const double step_value = step.to(torch::kFloat64).item<double>();
    if (!(step_value >= 0 && step_value < 9.0e15) || step_value != std::floor(step_value))
      throw Error(path + ": '" + at + "step' is not a step count: " + std::to_string(step_value));
    auto state = std::make_unique<torch::optim::AdamParamState>();
    state->step(static_cast<int64_t>(step_value));
    state->exp_avg(moment("exp_avg"));
    state->exp_avg_sq(moment("exp_avg_sq"));
    if (options.amsgrad()) state->max_exp_avg_sq(moment("max_exp_avg_sq"));
    optimizer.state()[adam_state_key(optimizer.state(), params[i])] = std::move(state);
  }
  for (const auto& e : reader.entries())
    if (e.name.rfind(prefix + ".state.", 0) == 0) {
      const std::string rest = e.name.substr(prefix.size() + 7);
      const std::string index = rest.substr(0, rest.find('.'));
      if (parse_count(index, path + ": '" + e.name + "' index") >= static_cast<int64_t>(params.size()) ||
          !reader.contains(prefix + ".state." + index + ".step"))
        throw Error(path + ": '" + e.name + "' belongs to no parameter of the optimizer");
    }
}

namespace {

// A CPU generator's state is a fixed-size byte blob; anything else is refused before LibTorch sees it.
void restore_generator(at::Generator& generator, const io::SafetensorsReader& reader, const std::string& name) {
  if (!reader.contains(name)) throw Error(reader.path() + ": tensor '" + name + "' is missing");
  const torch::Tensor state = reader.tensor(name);
  const at::Tensor expected = generator.get_state();
  if (state.scalar_type() != torch::kUInt8 || state.sizes() != expected.sizes())
    throw Error(reader.path() + ": '" + name + "' is not a random generator state (" + shape_string(state.sizes()) + ")");
  generator.set_state(state);
}

io::NamedTensors model_tensors(TrainStep& step) {
  io::NamedTensors out = io::state_dict(*step.autoencoder);
  if (step.vf_head)
    for (const auto& [name, t] : io::state_dict(*step.vf_head->linear_proj)) out.emplace_back("linear_proj." + name, t);
  out.emplace_back("loss.logvar", step.objective->logvar);
  for (const auto& [k, t] : io::state_dict(*step.objective->discriminator)) out.emplace_back("loss.discriminator." + k, t);
  return out;
}

}  // namespace

void save_checkpoint(const std::string& path, TrainStep& step, const CheckpointState& state, at::Generator& noise) {
  io::NamedTensors tensors = model_tensors(step);
  std::map<std::string, std::string> metadata = {{"format", "vavae-train-checkpoint"},
                                                 {"step", std::to_string(state.step)},
                                                 {"stage", state.stage},
                                                 {"config", state.config_json}};
  add_adam_state(*step.generator_optimizer, kGeneratorOptimizer, tensors, metadata);
  add_adam_state(*step.discriminator_optimizer, kDiscriminatorOptimizer, tensors, metadata);
  tensors.emplace_back("trainer.rng_noise", noise.get_state());
  tensors.emplace_back("trainer.rng_global", at::detail::getDefaultCPUGenerator().get_state());
  io::write_safetensors(path, tensors, metadata);
}

CheckpointState load_checkpoint(const std::string& path, TrainStep& step, at::Generator& noise) {
  io::SafetensorsReader reader(path);
  const auto& meta = reader.metadata();
  if (!meta.count("format") || meta.at("format") != "vavae-train-checkpoint" || !meta.count("step"))
    throw Error(path + ": not a vavae training checkpoint (use weight_init to start from model weights)");
  torch::NoGradGuard no_grad;
  for (const auto& [name, target] : model_tensors(step)) {
    if (!reader.contains(name)) throw Error(path + ": tensor '" + name + "' is missing");
    const torch::Tensor source = reader.tensor(name);
    if (source.sizes() != target.sizes())
      throw Error(path + ": tensor '" + name + "' has a different shape than the configured model");
    target.copy_(source);
  }
  restore_adam_state(*step.generator_optimizer, kGeneratorOptimizer, reader);
  restore_adam_state(*step.discriminator_optimizer, kDiscriminatorOptimizer, reader);
  restore_generator(noise, reader, "trainer.rng_noise");
  at::Generator global = at::detail::getDefaultCPUGenerator();
  restore_generator(global, reader, "trainer.rng_global");
  CheckpointState state;
  state.step = parse_count(meta.at("step"), path + ": metadata 'step'");
  state.stage = meta.count("stage") ? meta.at("stage") : "";
  state.config_json = meta.count("config") ? meta.at("config") : "";
  return state;
}

std::vector<std::string> checkpoints_in(const std::string& folder) {
  std::vector<std::string> files;
  if (!fs::is_directory(folder)) return files;
  for (const auto& e : fs::directory_iterator(folder)) {
    const std::string name = e.path().filename().string();
    if (name.rfind("step_", 0) == 0 && e.path().extension() == ".safetensors") files.push_back(e.path().string());
  }
  std::sort(files.begin(), files.end());  // zero-padded step numbers sort in order
  return files;
}

std::string find_checkpoint(const std::string& path) {
  if (fs::is_regular_file(path)) return path;
  for (const std::string& folder : {path + "/checkpoints", path}) {
    const auto files = checkpoints_in(folder);
    if (!files.empty()) return files.back();
  }
  throw Error(path + ": no checkpoint (step_*.safetensors) found to resume from");
}

void remove_stale_temporaries(const std::string& folder) {
  if (!fs::is_directory(folder)) return;
  for (const auto& e : fs::directory_iterator(folder))
    if (e.is_regular_file() && e.path().filename().string().find(".tmp.") != std::string::npos) fs::remove(e.path());
}

void prune_checkpoints(const std::string& folder, int64_t keep) {
  const auto files = checkpoints_in(folder);
  for (size_t i = 0; i + static_cast<size_t>(keep) < files.size(); ++i) fs::remove(files[i]);
}

namespace {

// The training modules under upstream's state-dict names, sharing their tensors.
struct UpstreamLayoutImpl : torch::nn::Module {
  explicit UpstreamLayoutImpl(TrainStep& step) {
    register_module("encoder", step.autoencoder->encoder);
    register_module("decoder", step.autoencoder->decoder);
    register_module("quant_conv", step.autoencoder->quant_conv);
    register_module("post_quant_conv", step.autoencoder->post_quant_conv);
    if (step.vf_head) register_module("linear_proj", step.vf_head->linear_proj);
    auto loss = std::make_shared<torch::nn::Module>();
    loss->register_parameter("logvar", step.objective->logvar, /*requires_grad=*/false);
    loss->register_module("discriminator", step.objective->discriminator);
    loss->register_module("perceptual_loss", step.objective->perceptual_loss);
    register_module("loss", loss);
  }
};

}  // namespace

io::LoadReport load_upstream_state_dict(TrainStep& step, const io::WeightFile& file, const std::vector<std::string>& ignore_keys) {
  io::WeightFile kept = file;
  kept.tensors.clear();
  size_t dropped = 0;
  for (const auto& [name, t] : file.tensors) {
    bool drop = false;
    for (const auto& prefix : ignore_keys) drop |= name.rfind(prefix, 0) == 0;
    if (drop) ++dropped;
    else kept.tensors.emplace_back(name, t);
  }
  UpstreamLayoutImpl layout(step);
  io::LoadOptions partial;
  partial.partial = true;
  io::LoadReport report = io::load_into(layout, kept, partial);
  if (!report.mismatched.empty())
    throw Error(file.path + ": shape mismatch for " + report.mismatched.front() +
                (report.mismatched.size() > 1 ? " and " + std::to_string(report.mismatched.size() - 1) + " more" : ""));
  if (report.loaded == 0) throw Error(file.path + ": no tensor matches the model (is this an upstream-layout state dict?)");
  if (dropped > 0) report.ignored["(ignore_keys)"] += dropped;
  return report;
}

size_t export_autoencoder(const std::string& path, const io::NamedTensors& state_dict, const std::string& source) {
  io::NamedTensors keep;
  for (const auto& [k, t] : state_dict)
    for (const char* part : {"encoder.", "decoder.", "quant_conv.", "post_quant_conv."})
      if (k.rfind(part, 0) == 0) keep.emplace_back(k, t);
  if (keep.empty()) throw Error(source + ": holds no autoencoder tensors");
  io::write_safetensors(path, keep, {{"format", "AutoencoderKL state_dict (upstream names)"}, {"source", source}});
  return keep.size();
}

size_t export_autoencoder(const std::string& path, const nn::AutoencoderKLImpl& autoencoder) {
  return export_autoencoder(path, io::state_dict(autoencoder), "vavae training run");
}

}  // namespace vavae::train
