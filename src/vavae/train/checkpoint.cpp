#include "vavae/train/checkpoint.h"

#include <ATen/CPUGeneratorImpl.h>

#include <algorithm>
#include <filesystem>
#include <sstream>

#include "vavae/common/error.h"
#include "vavae/io/safetensors.h"
#include "vavae/io/weights.h"

namespace vavae::train {
namespace {

namespace fs = std::filesystem;

torch::Tensor bytes_tensor(const std::string& bytes) {
  torch::Tensor t = torch::empty({static_cast<int64_t>(bytes.size())}, torch::kUInt8);
  std::memcpy(t.data_ptr(), bytes.data(), bytes.size());
  return t;
}

std::string tensor_bytes(const torch::Tensor& t) {
  return std::string(static_cast<const char*>(t.data_ptr()), static_cast<size_t>(t.numel()));
}

template <typename Optimizer>
std::string serialize(Optimizer& optimizer) {
  torch::serialize::OutputArchive archive;
  optimizer.save(archive);
  std::ostringstream out;
  archive.save_to(out);
  return out.str();
}

template <typename Optimizer>
void deserialize(Optimizer& optimizer, const std::string& bytes) {
  torch::serialize::InputArchive archive;
  std::istringstream in(bytes);
  archive.load_from(in);
  optimizer.load(archive);
}

io::NamedTensors model_tensors(TrainStep& step) {
  io::NamedTensors out = io::state_dict(*step.autoencoder);
  if (step.projection) out.emplace_back("linear_proj.weight", step.projection->weight);
  out.emplace_back("loss.logvar", step.objective->logvar);
  for (const auto& [k, t] : io::state_dict(*step.objective->discriminator)) out.emplace_back("loss.discriminator." + k, t);
  return out;
}

}  // namespace

void save_checkpoint(const std::string& path, TrainStep& step, const CheckpointState& state, at::Generator& noise) {
  io::NamedTensors tensors = model_tensors(step);
  tensors.emplace_back("trainer.optimizer_generator", bytes_tensor(serialize(*step.generator_optimizer)));
  tensors.emplace_back("trainer.optimizer_discriminator", bytes_tensor(serialize(*step.discriminator_optimizer)));
  tensors.emplace_back("trainer.rng_noise", noise.get_state());
  tensors.emplace_back("trainer.rng_global", at::detail::getDefaultCPUGenerator().get_state());
  io::write_safetensors(path, tensors,
                        {{"format", "vavae-train-checkpoint"},
                         {"step", std::to_string(state.step)},
                         {"stage", state.stage},
                         {"config", state.config_json}});
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
  deserialize(*step.generator_optimizer, tensor_bytes(reader.tensor("trainer.optimizer_generator")));
  deserialize(*step.discriminator_optimizer, tensor_bytes(reader.tensor("trainer.optimizer_discriminator")));
  noise.set_state(reader.tensor("trainer.rng_noise"));
  at::Generator global = at::detail::getDefaultCPUGenerator();
  global.set_state(reader.tensor("trainer.rng_global"));
  CheckpointState state;
  state.step = std::stoll(meta.at("step"));
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

void prune_checkpoints(const std::string& folder, int64_t keep) {
  const auto files = checkpoints_in(folder);
  for (size_t i = 0; i + static_cast<size_t>(keep) < files.size(); ++i) fs::remove(files[i]);
}

void export_autoencoder(const std::string& path, const nn::AutoencoderKLImpl& autoencoder) {
  io::write_safetensors(path, io::state_dict(autoencoder), {{"format", "AutoencoderKL state_dict (upstream names)"}});
}

}  // namespace vavae::train
