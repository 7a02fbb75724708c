#include "vavae/config/model_config.h"

#include "vavae/common/error.h"
#include "vavae/config/config_file.h"
#include "vavae/config/describe.h"

namespace vavae::config {

void validate_autoencoder(const nn::AutoencoderConfig& c, const std::string& where) {
  auto positive = [&](int64_t v, const char* key) {
    if (v <= 0) throw Error(where + "." + key + " must be positive, got " + std::to_string(v));
  };
  positive(c.ch, "ch");
  positive(c.num_res_blocks, "num_res_blocks");
  positive(c.z_channels, "z_channels");
  positive(c.embed_dim, "embed_dim");
  positive(c.in_channels, "in_channels");
  positive(c.out_ch, "out_ch");
  positive(c.resolution, "resolution");
  if (c.ch_mult.empty()) throw Error(where + ".ch_mult must not be empty");
  if (c.ch_mult.size() > 16) throw Error(where + ".ch_mult has " + std::to_string(c.ch_mult.size()) + " levels (at most 16)");
  for (int64_t m : c.ch_mult) positive(m, "ch_mult");
  for (int64_t m : c.ch_mult)
    if (m > (int64_t{1} << 20) / c.ch || (c.ch * m) % 32 != 0)
      throw Error(where + ": ch * ch_mult = " + std::to_string(c.ch) + " * " + std::to_string(m) +
                  " is not divisible by GroupNorm's 32 groups (or absurdly wide)");
  if (c.resolution % c.downsample_factor() != 0)
    throw Error(where + ".resolution " + std::to_string(c.resolution) + " is not divisible by the downsampling factor " +
                std::to_string(c.downsample_factor()));
  if (c.dropout < 0 || c.dropout >= 1) throw Error(where + ".dropout must be in [0, 1)");
}

void validate_objective(const loss::ObjectiveConfig& c, const std::string& where) {
  if (c.disc_loss != "hinge" && c.disc_loss != "vanilla")
    throw Error(where + ".disc_loss must be 'hinge' or 'vanilla', got '" + c.disc_loss + "'");
  if (c.disc_start < 0) throw Error(where + ".disc_start must be >= 0");
  if (c.lpips_dropout != "upstream" && c.lpips_dropout != "off")
    throw Error(where + ".lpips_dropout must be 'upstream' or 'off', got '" + c.lpips_dropout + "'");
  if (c.disc_num_layers < 1 || c.disc_num_layers > 8) throw Error(where + ".disc_num_layers must be in [1, 8]");
  if (c.disc_bn_group < 0) throw Error(where + ".disc_bn_group must be 0 (the whole batch) or a group size, got " + std::to_string(c.disc_bn_group));
  if (c.disc_ndf < 1 || c.disc_in_channels < 1) throw Error(where + ".disc_ndf and disc_in_channels must be positive");
}

nn::AutoencoderConfig autoencoder_config_from_json(const nlohmann::json& root, const std::string& source) {
  if (!root.is_object()) throw Error(source + ": the config is not a mapping");
  // Where the ddconfig keys and embed_dim sit in each of the three layouts.
  std::string params;
  if (root.contains("model")) {
    if (!find_path(root, "model.params") || !find_path(root, "model.params")->is_object()) throw Error(source + ": model.params is missing");
    params = "model.params.";
  }
  const nlohmann::json* dd = find_path(root, params + "ddconfig");
  const bool flat = !dd;
  if (flat && (!find_path(root, params + "ch") || !find_path(root, params + "z_channels")))
    throw Error(source + ": no autoencoder settings found (expected model.params.ddconfig, ddconfig, or flat ch/z_channels keys)");
  const std::string prefix = flat ? params : params + "ddconfig.";
  nn::AutoencoderConfig c;
  SchemaReader reader(root, source, "file");
  describe_autoencoder(c, reader, prefix);
  // embed_dim sits beside ddconfig upstream; accepted inside it too. It defaults to z_channels.
  c.embed_dim = c.z_channels;
  reader.key(prefix + "embed_dim", c.embed_dim, "");
  if (!flat) {
    reader.key(params + "embed_dim", c.embed_dim, "");
    reader.finish(params + "ddconfig");  // other sections of a full config are not this function's business
  }
  validate_autoencoder(c, source + ": " + prefix.substr(0, prefix.empty() ? 0 : prefix.size() - 1));
  return c;
}

nn::AutoencoderConfig load_autoencoder_config(const std::string& path) {
  return autoencoder_config_from_json(load_config_file(path), path);
}

loss::ObjectiveConfig objective_config_from_json(const nlohmann::json& root, const std::string& source) {
  std::string at;
  for (const char* candidate : {"model.params.lossconfig.params", "lossconfig.params", "lossconfig", "params"})
    if (const nlohmann::json* p = find_path(root, candidate); p && p->is_object()) {
      at = candidate;
      break;
    }
  loss::ObjectiveConfig c;
  SchemaReader reader(root, source, "file");
  describe_objective(c, reader, at.empty() ? "" : at + ".");
  reader.finish(at);
  validate_objective(c, source + ": " + (at.empty() ? "lossconfig" : at));
  return c;
}

}  // namespace vavae::config
