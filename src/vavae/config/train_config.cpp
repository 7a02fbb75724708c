#include "vavae/config/train_config.h"

#include <yaml-cpp/yaml.h>

#include <filesystem>
#include <iomanip>
#include <sstream>

#include "vavae/common/error.h"
#include "vavae/common/precision.h"
#include "vavae/config/config_file.h"
#include "vavae/config/describe.h"

namespace vavae::config {
namespace {

const char* kImageNetTrain = "ldm.data.imagenet.ImageNetTrain";
const char* kImageNetValidation = "ldm.data.imagenet.ImageNetValidation";

template <typename V>
void describe_split(DataSplitConfig& s, V& v, const std::string& p, const char* what) {
  v.key(p + "source", s.source, (std::string("what to read for ") + what +
                                 ": fashion-mnist[:train|:test], idx:DIR[:split], an image folder or a .txt list").c_str());
  v.key(p + "target", s.target, "upstream's dataset class; ImageNetTrain/Validation read data_root/ILSVRC2012_{train,validation}/data");
  v.key(p + "params.data_root", s.data_root, "upstream's ImageNet root (used when source is not given)");
  v.key(p + "resolution", s.resolution, "images are resized on the short side and cropped to this square");
  v.key(p + "pad", s.pad, "zero padding on every side before resizing");
  v.key(p + "random_crop", s.random_crop, "random instead of centre crop (training split)");
  v.key(p + "flip", s.flip, "random horizontal flips (training split; upstream: none)");
  v.key(p + "jpeg_dct_scaling", s.jpeg_dct_scaling,
        "training split: decode JPEGs DCT-scaled (1/2, 1/4, 1/8) to the smallest size >= resolution before resizing (faster; validation "
        "and extraction always resize the full image, as upstream)");
  v.key(p + "limit", s.limit, "read only the first N images (0: all)");
}

// Every key of a training config, once.
template <typename V>
void describe(TrainConfig& c, V& v) {
  v.key("weight_init", c.weight_init,
        "starting weights: a state dict in upstream's layout (autoencoder, linear_proj, loss.discriminator, loss.perceptual_loss), "
        "loaded non-strictly; skipped keys are reported");
  v.key("init_weight", c.weight_init, "upstream main.py's name for weight_init (the one it reads)");
  v.ignored("ckpt_path", "upstream reads it only to test a trained model; use weight_init to start from weights");
  v.fixed("model.target", "ldm.models.autoencoder.AutoencoderKL", "upstream's model class");
  v.key("model.base_learning_rate", c.learning_rate, "Adam's learning rate (upstream does not scale it by batch size or GPUs)");
  v.ignored("model.params.monitor", "Lightning's checkpoint selection; vavae keeps the last trainer.keep_checkpoints");
  v.key("model.params.ckpt_path", c.ckpt_path,
        "weights the model starts from (upstream's init_from_ckpt), loaded non-strictly like weight_init, before it");
  v.key("model.params.ignore_keys", c.ignore_keys, "key prefixes dropped from ckpt_path's state dict before loading");
  v.key("model.params.embed_dim", c.autoencoder.embed_dim, "latent channels E");
  v.key("model.params.use_vf", c.foundation.use_vf,
        "foundation model of the VF loss: dinov2, mae, a timm ViT name or a train-fm checkpoint; empty or none: no VF loss");
  v.key("model.params.reverse_proj", c.reverse_proj,
        "true (released): linear_proj maps the latent to the feature width, no bias; false: it maps the features to embed_dim, with bias");
  v.key("model.params.proj_fix", c.proj_fix, "freeze linear_proj (not trained)");
  v.key("model.params.foundation.weights", c.foundation.weights, "the foundation model's weight file (timm or official names)");
  v.key("model.params.foundation.input_mode", c.foundation.input_mode,
        "upstream: the [-1, 1] image as the original feeds it; imagenet: ImageNet normalisation");
  v.key("model.params.foundation.input_size", c.foundation.input_size,
        "images are resized to this square for the foundation model (-1: the family's, 224 for DINOv2; 0: as they are)");
  v.key("model.params.foundation.bf16", c.foundation.bf16, "keep the frozen foundation model's weights in bfloat16 on CUDA and run it so (half its memory; trainer.mixed_precision alone autocasts it over fp32 weights)");
  v.key("model.params.lpips.weights", c.lpips_weights, "LPIPS weights: one file with upstream names, or torchvision's vgg16");
  v.key("model.params.lpips.heads", c.lpips_heads, "LPIPS linear heads (vgg.pth) when weights is torchvision's vgg16");
  v.fixed("model.params.lossconfig.target", "ldm.modules.losses.LPIPSWithDiscriminator", "upstream's loss class");
  describe_objective(c.objective, v, "model.params.lossconfig.params.");
  describe_autoencoder(c.autoencoder, v, "model.params.ddconfig.");
  v.ignored("data.target", "Lightning's data module; data.params.train / validation say what to read");
  v.key("data.params.batch_size", c.batch_size, "images per step and process (upstream: 8 per GPU on 32 GPUs)");
  v.key("data.params.num_workers", c.num_workers, "image decoding threads");
  v.ignored("data.params.wrap", "a Lightning data-module option without effect here");
  describe_split(c.train, v, "data.params.train.", "training");
  describe_split(c.validation, v, "data.params.validation.", "validation");
  v.key("trainer.max_steps", c.trainer.max_steps, "length in steps (batches) when there are no stages; caps the stages otherwise");
  v.key("trainer.max_epochs", c.trainer.max_epochs, "length in epochs when there are no stages");
  v.key("trainer.log_every", c.trainer.log_every, "steps between metric lines");
  v.key("trainer.val_every", c.trainer.val_every, "steps between validations");
  v.key("trainer.checkpoint_every", c.trainer.checkpoint_every, "steps between checkpoints");
  v.key("trainer.keep_checkpoints", c.trainer.keep_checkpoints, "checkpoints kept (the newest)");
  v.key("trainer.val_images", c.trainer.val_images, "images in the validation grid");
  v.key("trainer.seed", c.trainer.seed, "seed of initialisation, data order and posterior noise");
  v.key("trainer.threads", c.trainer.threads, "CPU threads (0: all cores)");
  v.key("trainer.device", c.trainer.device, "cpu, cuda or auto");
  v.key("trainer.max_nonfinite_steps", c.trainer.max_nonfinite_steps, "non-finite steps in a row that stop the run");
  v.key("trainer.adaptive_weights", c.trainer.adaptive_weights,
        "data parallel: d_weight and vf_weight from each rank's gradients (local, upstream's DDP) or the global batch's (global)");
  v.key("trainer.dist_timeout", c.trainer.dist_timeout, "data parallel: seconds a rank waits for the others before failing");
  v.key("trainer.mixed_precision", c.trainer.mixed_precision,
        "no (fp32, as upstream trained), bf16 (autocast for the networks' forward passes; losses, adaptive weights and "
        "optimizer in fp32) or auto (bf16 where the device computes it natively: CUDA, CPUs with AVX512-BF16)");
  v.key("trainer.lr_schedule", c.trainer.lr_schedule,
        "constant (upstream) or cosine: from model.base_learning_rate at the first step to 0 after the run's last (both optimizers)");
  v.key("lightning.trainer.max_epochs", c.trainer.max_epochs, "upstream's name for trainer.max_epochs");
  v.key("lightning.trainer.precision", c.precision, "32: float32 weights, as the released model was trained (bf16: trainer.mixed_precision)");
  v.ignored("lightning.trainer.devices", "GPUs come from the launch, not the config");
  v.ignored("lightning.trainer.num_nodes", "machines come from the launch, not the config");
  v.ignored("lightning.trainer.strategy", "Lightning's DDP strategy");
  v.ignored("lightning.trainer.accelerator", "trainer.device says where to run");
  v.list("stages");
}

// A stage: its length and the lossconfig keys it may change.
template <typename V>
void describe_stage(StageConfig& s, V& v) {
  v.key("name", s.name, "shown in logs and metrics", kPerStage);
  v.key("steps", s.steps, "length in steps; or", kPerStage);
  v.key("epochs", s.epochs, "length in epochs", kPerStage);
  v.key("restart", s.restart, "begin as a new run: fresh optimizer state, step counter (disc_start) from the stage's start", kPerStage);
  describe_objective(s.objective, v, "lossconfig.");
}

void validate(TrainConfig& c, const std::string& source) {
  validate_autoencoder(c.autoencoder, source + ": model.params.ddconfig");
  validate_objective(c.objective, source + ": model.params.lossconfig.params");
  for (const auto& s : c.stages) validate_objective(s.objective, source + ": stage '" + s.name + "' lossconfig");
  c.use_vf = !c.foundation.use_vf.empty() && c.foundation.use_vf != "none";
  if (c.batch_size <= 0) throw Error(source + ": data.params.batch_size must be positive");
  for (auto* split : {&c.train, &c.validation}) {
    const std::string w = source + ": data.params." + (split == &c.train ? "train" : "validation");
    if (split->source.empty() && !split->data_root.empty()) {
      const bool imagenet = split->target == kImageNetTrain || split->target == kImageNetValidation;
      if (!imagenet) throw Error(w + ".params.data_root needs target " + kImageNetTrain + " or " + kImageNetValidation + ", or give source");
      split->source = (std::filesystem::path(split->data_root) /
                       (split->target == kImageNetTrain ? "ILSVRC2012_train" : "ILSVRC2012_validation") / "data")
                          .string();
    }
    if (split->source.empty())
      throw Error(w + ".source is missing (fashion-mnist[:train|:test], idx:DIR, an image folder or a .txt list)");
    if (split->resolution <= 0 || split->pad < 0 || split->limit < 0)
      throw Error(w + ": resolution must be positive, pad and limit non-negative");
  }
  if (c.train.resolution % c.autoencoder.downsample_factor() != 0)
    throw Error(source + ": data.params.train.resolution " + std::to_string(c.train.resolution) +
                " is not divisible by the downsampling factor " + std::to_string(c.autoencoder.downsample_factor()));
  const auto& k = c.trainer;
  if (k.log_every <= 0 || k.val_every <= 0 || k.checkpoint_every <= 0 || k.keep_checkpoints <= 0)
    throw Error(source + ": trainer: log_every, val_every, checkpoint_every and keep_checkpoints must be positive");
  if (k.max_nonfinite_steps < 1) throw Error(source + ": trainer.max_nonfinite_steps must be at least 1");
  if (k.adaptive_weights != "local" && k.adaptive_weights != "global")
    throw Error(source + ": trainer.adaptive_weights must be local or global, got '" + k.adaptive_weights + "'");
  if (!(k.dist_timeout > 0)) throw Error(source + ": trainer.dist_timeout must be positive (seconds)");
  parse_precision(k.mixed_precision, torch::kCPU, source + ": trainer.mixed_precision");
  if (k.lr_schedule != "constant" && k.lr_schedule != "cosine")
    throw Error(source + ": trainer.lr_schedule must be constant or cosine, got '" + k.lr_schedule + "'");
  if (c.provenance.count("trainer.max_epochs") && c.provenance.count("lightning.trainer.max_epochs"))
    throw Error(source + ": give trainer.max_epochs or lightning.trainer.max_epochs, not both");
  if (c.provenance.count("weight_init") && c.provenance.count("init_weight"))
    throw Error(source + ": give weight_init or init_weight, not both");
  if (c.precision != 32)
    throw Error(source + ": lightning.trainer.precision " + std::to_string(c.precision) + ": only 32 is supported (for bf16 autocast set trainer.mixed_precision: bf16)");
}

nlohmann::json yaml_scalar(const std::string& text) {
  try {
    return load_config_text("v: " + text).at("v");  // typed as in a config file
  } catch (const Error& e) {
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

std::string value_text(const nlohmann::json& v) {
  return v.is_string() && !v.get<std::string>().empty() ? v.get<std::string>() : json_text(v);
}

}  // namespace

std::vector<std::string> apply_overrides(nlohmann::json& root, const std::vector<std::string>& assignments) {
  std::vector<std::string> paths;
  for (const auto& a : assignments) {
    const auto eq = a.find('=');
    if (eq == std::string::npos || eq == 0) throw Error("--set '" + a + "' must look like key.path=value");
    const std::string path = a.substr(0, eq);
    set_path(root, path, yaml_scalar(a.substr(eq + 1)));
    paths.push_back(path);
  }
  return paths;
}

TrainConfig train_config_from_json(const nlohmann::json& root, const std::string& source, const std::vector<std::string>& set_paths) {
  if (!root.is_object()) throw Error(source + ": the config is not a mapping");
  TrainConfig c;
  SchemaReader reader(root, source, "file", &c.provenance);
  describe(c, reader);
  c.ignored = reader.finish();
  for (const auto& p : set_paths)
    if (c.provenance.count(p)) c.provenance[p] = "--set";

  if (const nlohmann::json* stages = find_path(root, "stages"); stages && !stages->is_null()) {
    if (!stages->is_array()) throw Error(source + ": stages must be a list");
    for (size_t i = 0; i < stages->size(); ++i) {
      const std::string where = source + ": stages[" + std::to_string(i) + "]";
      const nlohmann::json& s = (*stages)[i];
      if (!s.is_object()) throw Error(where + " must be a mapping");
      StageConfig stage;
      stage.name = "stage" + std::to_string(i + 1);
      stage.objective = c.objective;
      Provenance set_here;
      SchemaReader stage_reader(s, where, "stage", &set_here);
      stage_reader.per_stage_only();
      describe_stage(stage, stage_reader);
      stage_reader.finish();
      if ((stage.steps > 0) == (stage.epochs > 0)) throw Error(where + ": give exactly one of steps or epochs");
      for (const auto& [path, origin] : set_here)
        if (path.rfind("lossconfig.", 0) == 0) stage.overridden.push_back(path.substr(11));
      c.stages.push_back(std::move(stage));
    }
  }
  validate(c, source);
  SchemaWriter writer;
  describe(c, writer);
  nlohmann::json stages = nlohmann::json::array();
  for (auto& s : c.stages) {
    nlohmann::json j = {{"name", s.name}};
    if (s.steps > 0) j["steps"] = s.steps;
    else j["epochs"] = s.epochs;
    if (s.restart) j["restart"] = true;
    SchemaWriter objective;
    describe_objective(s.objective, objective, "");
    for (const auto& key : s.overridden) j["lossconfig"][key] = objective.tree.at(key);
    stages.push_back(j);
  }
  if (!stages.empty()) writer.tree["stages"] = stages;
  // One name per setting in the resolved file: the aliases are folded into vavae's names.
  writer.tree.erase("init_weight");
  writer.tree["lightning"]["trainer"].erase("max_epochs");
  c.resolved = writer.tree;
  return c;
}

std::string describe_resolved(const TrainConfig& config) {
  TrainConfig c = config;  // describe() binds members; the lister only reads them
  SchemaLister lister;
  describe(c, lister);
  std::ostringstream out;
  size_t width = 0;
  for (const auto& r : lister.rows) width = std::max(width, r.path.size());
  for (const auto& r : lister.rows) {
    if (r.path == "init_weight" || r.path == "lightning.trainer.max_epochs") continue;
    auto origin = c.provenance.find(r.path);
    out << std::left << std::setw(static_cast<int>(width) + 2) << r.path << printable(value_text(r.value), 120) << "  ("
        << (origin == c.provenance.end() ? "default" : origin->second) << ")\n";
  }
  for (const auto& s : c.stages) {
    out << "stage '" << s.name << "': " << (s.steps > 0 ? std::to_string(s.steps) + " steps" : json_text(s.epochs) + " epochs")
        << (s.restart ? ", restarted (fresh optimizers, steps counted from its start)" : "") << "\n";
    loss::ObjectiveConfig o = s.objective;
    SchemaLister stage_lister;
    describe_objective(o, stage_lister, "");
    for (const auto& r : stage_lister.rows) {
      if (r.type == "fixed") continue;
      const bool set = std::find(s.overridden.begin(), s.overridden.end(), r.path) != s.overridden.end();
      out << "  " << std::left << std::setw(22) << r.path << printable(value_text(r.value), 60) << "  ("
          << (set ? "stage" : "run") << ")\n";
    }
  }
  for (const auto& [path, reason] : c.ignored) out << "ignored: " << path << ": " << reason << "\n";
  return out.str();
}

// Markdown table cells cannot hold a bare '|'.
static std::string cell(const std::string& text) {
  std::string out;
  for (char ch : text) {
    if (ch == '|') out += '\\';
    out += ch;
  }
  return out;
}

std::string keys_table() {
  TrainConfig defaults;
  SchemaLister lister;
  describe(defaults, lister);
  std::ostringstream out;
  out << "| key | type | default | meaning |\n|---|---|---|---|\n";
  for (const auto& r : lister.rows) {
    std::string value = value_text(r.value);
    if (value.empty()) value = "\"\"";
    out << "| `" << r.path << "` | " << (r.type == "fixed" ? "fixed" : r.type.substr(r.type.find(' ') + 1)) << " | `" << cell(value)
        << "` | " << cell(r.doc) << (r.per_stage ? " (per stage)" : "") << " |\n";
  }
  for (const auto& [path, reason] : lister.ignored_rows) out << "| `" << path << "` | ignored | | " << cell(reason) << " |\n";
  out << "| `stages` | list | | phases: `name`, `steps` or `epochs`, `restart` (a new run: fresh optimizers, steps counted from the "
         "stage's start), and `lossconfig` with the keys marked per stage |\n";
  return out.str();
}

std::string to_yaml(const nlohmann::json& root) {
  YAML::Emitter out;
  out << to_node(root);
  return std::string(out.c_str()) + "\n";
}

}  // namespace vavae::config
