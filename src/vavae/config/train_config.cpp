#include "vavae/config/train_config.h"

#include <yaml-cpp/yaml.h>

#include "vavae/common/error.h"
#include "vavae/config/config_file.h"
#include "vavae/config/model_config.h"

namespace vavae::config {
namespace {

const nlohmann::json& section(const nlohmann::json& parent, const std::string& key, const std::string& where) {
  static const nlohmann::json empty = nlohmann::json::object();
  if (!parent.contains(key) || parent[key].is_null()) return empty;
  if (!parent[key].is_object()) throw Error(where + "." + key + " must be a mapping");
  return parent[key];
}

DataSplitConfig parse_split(const nlohmann::json& j, const std::string& where, bool training) {
  reject_unknown_keys(j, {"target", "source", "resolution", "pad", "random_crop", "flip", "limit"}, where);
  DataSplitConfig s;
  s.source = get_or<std::string>(j, "source", "", where);
  if (s.source.empty()) throw Error(where + ".source is missing (fashion-mnist[:train|:test], idx:DIR, an image folder or a .txt list)");
  s.resolution = get_or<int64_t>(j, "resolution", s.resolution, where);
  s.pad = get_or<int64_t>(j, "pad", s.pad, where);
  s.random_crop = get_or<bool>(j, "random_crop", training, where);
  s.flip = get_or<bool>(j, "flip", training, where);
  s.limit = get_or<int64_t>(j, "limit", s.limit, where);
  if (s.resolution <= 0 || s.pad < 0 || s.limit < 0) throw Error(where + ": resolution must be positive, pad and limit non-negative");
  return s;
}

nlohmann::json yaml_scalar(const std::string& text) {
  try {
    return load_config_text("v: " + text).at("v");  // typed as in a config file
  } catch (const YAML::Exception& e) {
    throw Error("--set value '" + text + "' is not valid YAML: " + e.what());
  }
}

YAML::Node to_node(const nlohmann::json& j) {
  YAML::Node n;
  if (j.is_object()) {
    n = YAML::Node(YAML::NodeType::Map);
    for (auto it = j.begin(); it != j.end(); ++it) n[it.key()] = to_node(it.value());
  } else if (j.is_array()) {
    n = YAML::Node(YAML::NodeType::Sequence);
    for (const auto& v : j) n.push_back(to_node(v));
  } else if (j.is_string()) {
    n = j.get<std::string>();
  } else if (j.is_boolean()) {
    n = j.get<bool>();
  } else if (j.is_number_integer()) {
    n = j.get<int64_t>();
  } else if (j.is_number()) {
    n = j.get<double>();
  }
  return n;
}

}  // namespace

void apply_overrides(nlohmann::json& root, const std::vector<std::string>& assignments) {
  for (const auto& a : assignments) {
    const auto eq = a.find('=');
    if (eq == std::string::npos || eq == 0) throw Error("--set '" + a + "' must look like key.path=value");
    const std::string path = a.substr(0, eq);
    nlohmann::json* node = &root;
    size_t start = 0;
    for (;;) {
      const auto dot = path.find('.', start);
      const std::string key = path.substr(start, dot == std::string::npos ? std::string::npos : dot - start);
      if (dot == std::string::npos) {
        (*node)[key] = yaml_scalar(a.substr(eq + 1));
        break;
      }
      if (!node->contains(key) || !(*node)[key].is_object()) (*node)[key] = nlohmann::json::object();
      node = &(*node)[key];
      start = dot + 1;
    }
  }
}

TrainConfig train_config_from_json(const nlohmann::json& root, const std::string& source) {
  if (!root.is_object()) throw Error(source + ": the config is not a mapping");
  reject_unknown_keys(root, {"model", "data", "trainer", "stages", "weight_init", "lightning"}, source);
  TrainConfig c;
  c.resolved = root;
  const std::string m = source + ": model";
  const auto& model = section(root, "model", source);
  reject_unknown_keys(model, {"target", "base_learning_rate", "params"}, m);
  c.learning_rate = get_or<double>(model, "base_learning_rate", c.learning_rate, m);
  const auto& params = section(model, "params", m);
  reject_unknown_keys(params, {"monitor", "embed_dim", "use_vf", "reverse_proj", "lossconfig", "ddconfig", "foundation", "lpips", "ckpt_path"},
                      m + ".params");
  c.autoencoder = autoencoder_config_from_json(root, source);
  if (params.contains("lossconfig")) c.objective = objective_config_from_json(root, source);
  const std::string use_vf = get_or<std::string>(params, "use_vf", "", m + ".params");
  c.use_vf = !use_vf.empty() && use_vf != "none";
  if (c.use_vf && !get_or<bool>(params, "reverse_proj", true, m + ".params"))
    throw Error(m + ".params.reverse_proj: only true (project the latent to the feature width) is supported, as released");
  const std::string fw = m + ".params.foundation";
  const auto& foundation = section(params, "foundation", m + ".params");
  reject_unknown_keys(foundation, {"weights", "input_mode", "input_size", "bf16"}, fw);
  c.foundation.use_vf = use_vf;
  c.foundation.weights = get_or<std::string>(foundation, "weights", "", fw);
  c.foundation.input_mode = get_or<std::string>(foundation, "input_mode", "upstream", fw);
  c.foundation.input_size = get_or<int64_t>(foundation, "input_size", -1, fw);
  c.foundation.bf16 = get_or<bool>(foundation, "bf16", false, fw);

  const auto& lpips = section(params, "lpips", m + ".params");
  reject_unknown_keys(lpips, {"weights", "heads"}, m + ".params.lpips");
  c.lpips_weights = get_or<std::string>(lpips, "weights", "", m + ".params.lpips");
  c.lpips_heads = get_or<std::string>(lpips, "heads", "", m + ".params.lpips");
  if (c.objective.perceptual_weight > 0 && c.lpips_weights.empty())
    throw Error(m + ".params.lossconfig.params.perceptual_weight is " + std::to_string(c.objective.perceptual_weight) +
                " but model.params.lpips.weights is not set (LPIPS needs VGG16 + linear-head weights; or set the weight to 0)");

  const std::string d = source + ": data";
  const auto& data = section(root, "data", source);
  reject_unknown_keys(data, {"target", "params"}, d);
  const auto& dp = section(data, "params", d);
  reject_unknown_keys(dp, {"batch_size", "num_workers", "wrap", "train", "validation"}, d + ".params");
  c.batch_size = get_or<int64_t>(dp, "batch_size", c.batch_size, d + ".params");
  c.num_workers = get_or<int64_t>(dp, "num_workers", c.num_workers, d + ".params");
  if (c.batch_size <= 0) throw Error(d + ".params.batch_size must be positive");
  c.train = parse_split(section(dp, "train", d + ".params"), d + ".params.train", true);
  c.validation = parse_split(section(dp, "validation", d + ".params"), d + ".params.validation", false);
  if (c.train.resolution % c.autoencoder.downsample_factor() != 0)
    throw Error(d + ".params.train.resolution " + std::to_string(c.train.resolution) + " is not divisible by the downsampling factor " +
                std::to_string(c.autoencoder.downsample_factor()));

  const std::string t = source + ": trainer";
  const auto& tr = section(root, "trainer", source);
  reject_unknown_keys(tr, {"max_steps", "max_epochs", "log_every", "val_every", "checkpoint_every", "keep_checkpoints", "val_images",
                           "seed", "threads", "device", "max_nonfinite_steps"},
                      t);
  TrainerConfig& k = c.trainer;
  k.max_steps = get_or<int64_t>(tr, "max_steps", k.max_steps, t);
  k.max_epochs = get_or<double>(tr, "max_epochs", k.max_epochs, t);
  k.log_every = get_or<int64_t>(tr, "log_every", k.log_every, t);
  k.val_every = get_or<int64_t>(tr, "val_every", k.val_every, t);
  k.checkpoint_every = get_or<int64_t>(tr, "checkpoint_every", k.checkpoint_every, t);
  k.keep_checkpoints = get_or<int64_t>(tr, "keep_checkpoints", k.keep_checkpoints, t);
  k.val_images = get_or<int64_t>(tr, "val_images", k.val_images, t);
  k.seed = static_cast<uint64_t>(get_or<int64_t>(tr, "seed", 0, t));
  k.threads = get_or<int64_t>(tr, "threads", k.threads, t);
  k.device = get_or<std::string>(tr, "device", k.device, t);
  k.max_nonfinite_steps = get_or<int64_t>(tr, "max_nonfinite_steps", k.max_nonfinite_steps, t);
  if (k.max_nonfinite_steps < 1) throw Error(t + ".max_nonfinite_steps must be at least 1");
  if (k.log_every <= 0 || k.val_every <= 0 || k.checkpoint_every <= 0 || k.keep_checkpoints <= 0)
    throw Error(t + ": log_every, val_every, checkpoint_every and keep_checkpoints must be positive");

  if (root.contains("stages")) {
    if (!root["stages"].is_array()) throw Error(source + ": stages must be a list");
    for (size_t i = 0; i < root["stages"].size(); ++i) {
      const auto& s = root["stages"][i];
      const std::string w = source + ": stages[" + std::to_string(i) + "]";
      if (!s.is_object()) throw Error(w + " must be a mapping");
      reject_unknown_keys(s, {"name", "steps", "epochs", "lossconfig"}, w);
      StageConfig stage;
      stage.name = get_or<std::string>(s, "name", "stage" + std::to_string(i + 1), w);
      stage.steps = get_or<int64_t>(s, "steps", 0, w);
      stage.epochs = get_or<double>(s, "epochs", 0, w);
      if ((stage.steps > 0) == (stage.epochs > 0)) throw Error(w + ": give exactly one of steps or epochs");
      stage.overrides = section(s, "lossconfig", w);
      loss::ObjectiveConfig probe = c.objective;
      apply_stage(probe, stage);  // validates the keys now, not mid-run
      c.stages.push_back(stage);
    }
  }
  c.weight_init = get_or<std::string>(root, "weight_init", "", source);
  return c;
}

void apply_stage(loss::ObjectiveConfig& objective, const StageConfig& stage) {
  const std::string where = "stage '" + stage.name + "' lossconfig";
  reject_unknown_keys(stage.overrides,
                      {"disc_start", "kl_weight", "disc_factor", "disc_weight", "perceptual_weight", "vf_weight", "adaptive_vf",
                       "cos_margin", "distmat_margin", "cos_weight", "distmat_weight"},
                      where);
  nlohmann::json params = objective_config_to_json(objective);
  for (auto it = stage.overrides.begin(); it != stage.overrides.end(); ++it) params[it.key()] = it.value();
  objective = objective_config_from_json(params, where);
}

std::string to_yaml(const nlohmann::json& root) {
  YAML::Emitter out;
  out << to_node(root);
  return std::string(out.c_str()) + "\n";
}

}  // namespace vavae::config
