#include "vavae/nn/foundation_model.h"

#include <filesystem>

#include "vavae/common/checked.h"
#include "vavae/common/error.h"
#include "vavae/common/runtime.h"
#include "vavae/io/weights.h"

namespace vavae::nn {
namespace {
namespace F = torch::nn::functional;
}

FoundationModelImpl::FoundationModelImpl(const FoundationModelConfig& c) : config(c) {
  if (c.input_mode != "upstream" && c.input_mode != "imagenet")
    throw Error("foundation model input mode must be 'upstream' or 'imagenet', got '" + c.input_mode + "'");
  vit = register_module("model", ViT(c.vit));
  for (auto& p : parameters()) p.set_requires_grad(false);
  eval();
}

void FoundationModelImpl::load_weights(const std::string& path) {
  io::WeightFile file = io::read_weights(path);
  file.tensors = to_timm_names(file.tensors);
  for (const auto& [k, t] : file.tensors) {
    if (k == "patch_embed.proj.weight" && (t.dim() != 4 || t.size(0) != config.vit.embed_dim || t.size(2) != config.vit.patch_size))
      throw Error(path + ": patch_embed.proj.weight " + shape_string(t.sizes()) + " does not fit a " + config.family +
                  " ViT of width " + std::to_string(config.vit.embed_dim) + " and patch " + std::to_string(config.vit.patch_size));
    if (k == "reg_token" && config.vit.reg_tokens == 0)
      throw Error(path + ": holds register tokens but the configured ViT has none (use a *_reg4_dinov2 model)");
  }
  io::load_into(*vit, file);
  for (auto& p : parameters()) p.set_requires_grad(false);
  eval();
}

FoundationModel make_foundation_model(const FoundationSpec& spec) {
  FoundationModelConfig c;
  c.input_mode = spec.input_mode;
  c.bf16 = spec.bf16;
  std::string weights = spec.weights;
  if (std::filesystem::is_regular_file(spec.use_vf)) {
    const io::SafetensorsReader reader(spec.use_vf);
    const auto& meta = reader.metadata();
    if (!meta.count("vavae_vit_config"))
      throw Error(spec.use_vf + ": not a vavae ViT checkpoint (no vavae_vit_config metadata); for timm or official weights set "
                  "use_vf to the model name and foundation weights to the file");
    c.family = "vit";
    c.vit = vit_config_from_json(meta.at("vavae_vit_config"), spec.use_vf);
    c.input_size = meta.count("input_resolution") ? parse_count(meta.at("input_resolution"), spec.use_vf + ": metadata input_resolution") : 0;
    weights = spec.use_vf;
  } else {
    // A path rather than a model name: say where it was looked for and what writes one.
    const bool looks_like_path = spec.use_vf.find('/') != std::string::npos || io::ends_with(spec.use_vf, ".safetensors");
    if (looks_like_path)
      throw Error("model.params.use_vf: " + spec.use_vf + " does not exist (relative paths are taken from the working directory, " +
                  std::filesystem::current_path().string() + "); `vavae train-fm --output " +
                  std::filesystem::path(spec.use_vf).parent_path().string() + "` writes a foundation model there as fm.safetensors");
    const std::string name = spec.use_vf == "dinov2" ? "vit_large_patch14_dinov2.lvd142m"
                             : spec.use_vf == "mae"  ? "vit_large_patch16_224.mae"
                                                     : spec.use_vf;
    c.vit = vit_preset(name);
    c.family = name.find("dinov2") != std::string::npos ? "dinov2" : "mae";
    c.input_size = c.family == "dinov2" ? 224 : 0;
    if (weights.empty())
      throw Error("use_vf: " + spec.use_vf + " needs its weights (timm safetensors, or the official release's .pth): "
                  "set the foundation model's weights path; they cannot be downloaded here");
  }
  if (spec.input_size >= 0) c.input_size = spec.input_size;
  FoundationModel model(c);
  model->load_weights(weights);
  return model;
}

FoundationModel load_foundation_model(const std::string& path, const std::string& input_mode) {
  FoundationSpec spec;
  spec.use_vf = path;
  spec.input_mode = input_mode;
  return make_foundation_model(spec);
}

torch::Tensor FoundationModelImpl::features(const torch::Tensor& images) {
  torch::NoGradGuard no_grad;
  torch::Tensor x = images;
  if (config.input_size > 0 && (x.size(2) != config.input_size || x.size(3) != config.input_size))
    x = F::interpolate(x, F::InterpolateFuncOptions()
                              .size(std::vector<int64_t>{config.input_size, config.input_size})
                              .mode(torch::kBilinear)
                              .align_corners(false));
  if (config.input_mode == "imagenet") {
    const auto mean = torch::tensor({0.485f, 0.456f, 0.406f}, x.options()).view({1, 3, 1, 1});
    const auto std = torch::tensor({0.229f, 0.224f, 0.225f}, x.options()).view({1, 3, 1, 1});
    x = ((x + 1) * 0.5 - mean) / std;
  }
  const bool half = config.bf16 && x.is_cuda();
  torch::Tensor tokens;
  if (half) {
    vit->to(torch::kBFloat16);
    tokens = vit->forward_features(x.to(torch::kBFloat16)).to(torch::kFloat32);
  } else {
    tokens = vit->forward_features(x).to(x.scalar_type());  // fp32 from a bf16-autocast pass
  }
  const int64_t h = x.size(2) / config.vit.patch_size, w = x.size(3) / config.vit.patch_size;
  return tokens.slice(1, config.vit.num_prefix_tokens())
      .reshape({x.size(0), h, w, config.vit.embed_dim})
      .permute({0, 3, 1, 2})
      .contiguous();
}

}  // namespace vavae::nn
