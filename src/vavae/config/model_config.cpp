#include "vavae/config/model_config.h"

#include "vavae/common/error.h"
#include "vavae/config/config_file.h"

namespace vavae::config {
namespace {

const std::vector<std::string> kDdconfigKeys = {"ch",         "ch_mult",     "num_res_blocks", "attn_resolutions",
                                                "z_channels", "embed_dim",   "double_z",       "in_channels",
                                                "out_ch",     "resolution",  "dropout"};

void validate(const nn::AutoencoderConfig& c, const std::string& where) {
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
  for (int64_t m : c.ch_mult) positive(m, "ch_mult");
  for (int64_t m : c.ch_mult)
    if ((c.ch * m) % 32 != 0)
      throw Error(where + ": ch * ch_mult = " + std::to_string(c.ch * m) + " is not divisible by GroupNorm's 32 groups");
  if (c.resolution % c.downsample_factor() != 0)
    throw Error(where + ".resolution " + std::to_string(c.resolution) + " is not divisible by the downsampling factor " +
                std::to_string(c.downsample_factor()));
  if (c.dropout < 0 || c.dropout >= 1) throw Error(where + ".dropout must be in [0, 1)");
}

}  // namespace

nn::AutoencoderConfig autoencoder_config_from_json(const nlohmann::json& root, const std::string& source) {
  if (!root.is_object()) throw Error(source + ": the config is not a mapping");
  const nlohmann::json* params = &root;
  std::string where = source;
  if (root.contains("model")) {
    const auto& model = root["model"];
    if (!model.is_object() || !model.contains("params") || !model["params"].is_object())
      throw Error(source + ": model.params is missing");
    params = &model["params"];
    where = source + ": model.params";
  }
  const nlohmann::json* dd = params;
  std::string dd_where = where;
  if (params->contains("ddconfig")) {
    dd = &(*params)["ddconfig"];
    dd_where = where + (where == source ? ": ddconfig" : ".ddconfig");
    if (!dd->is_object()) throw Error(dd_where + " is not a mapping");
    reject_unknown_keys(*dd, kDdconfigKeys, dd_where);
  } else if (!params->contains("ch") || !params->contains("z_channels")) {
    throw Error(source + ": no autoencoder settings found (expected model.params.ddconfig, ddconfig, or flat ch/z_channels keys)");
  }
  nn::AutoencoderConfig c;
  c.ch = get_or<int64_t>(*dd, "ch", c.ch, dd_where);
  c.ch_mult = get_or<std::vector<int64_t>>(*dd, "ch_mult", c.ch_mult, dd_where);
  c.num_res_blocks = get_or<int64_t>(*dd, "num_res_blocks", c.num_res_blocks, dd_where);
  c.attn_resolutions = get_or<std::vector<int64_t>>(*dd, "attn_resolutions", c.attn_resolutions, dd_where);
  c.z_channels = get_or<int64_t>(*dd, "z_channels", c.z_channels, dd_where);
  c.double_z = get_or<bool>(*dd, "double_z", c.double_z, dd_where);
  c.in_channels = get_or<int64_t>(*dd, "in_channels", c.in_channels, dd_where);
  c.out_ch = get_or<int64_t>(*dd, "out_ch", c.out_ch, dd_where);
  c.resolution = get_or<int64_t>(*dd, "resolution", c.resolution, dd_where);
  c.dropout = get_or<double>(*dd, "dropout", c.dropout, dd_where);
  // embed_dim sits beside ddconfig upstream; accept it inside too.
  c.embed_dim = get_or<int64_t>(*dd, "embed_dim", c.z_channels, dd_where);
  c.embed_dim = get_or<int64_t>(*params, "embed_dim", c.embed_dim, where);
  validate(c, dd_where);
  return c;
}

nn::AutoencoderConfig load_autoencoder_config(const std::string& path) {
  return autoencoder_config_from_json(load_config_file(path), path);
}

loss::ObjectiveConfig objective_config_from_json(const nlohmann::json& root, const std::string& source) {
  const nlohmann::json* p = &root;
  std::string where = source;
  if (p->contains("model")) {
    p = &root["model"];
    where += ": model";
    if (!p->contains("params") || !(*p)["params"].is_object()) throw Error(where + ".params is missing");
    p = &(*p)["params"];
    where += ".params";
  }
  if (p->contains("lossconfig")) {
    p = &(*p)["lossconfig"];
    where += where == source ? ": lossconfig" : ".lossconfig";
  }
  if (p->contains("target") || p->contains("params")) {
    if (!p->contains("params") || !(*p)["params"].is_object()) throw Error(where + ".params is missing");
    p = &(*p)["params"];
    where += ".params";
  }
  const nlohmann::json& j = *p;
  if (!j.is_object()) throw Error(where + " is not a mapping");
  reject_unknown_keys(j,
                      {"disc_start", "logvar_init", "kl_weight", "pixelloss_weight", "disc_num_layers", "disc_in_channels",
                       "disc_factor", "disc_weight", "perceptual_weight", "use_actnorm", "disc_conditional", "disc_loss",
                       "pp_style", "vf_weight", "adaptive_vf", "cos_margin", "distmat_margin", "cos_weight", "distmat_weight",
                       "disc_ndf"},
                      where);
  loss::ObjectiveConfig c;
  c.disc_start = get_or<int64_t>(j, "disc_start", c.disc_start, where);
  c.logvar_init = get_or<double>(j, "logvar_init", c.logvar_init, where);
  c.kl_weight = get_or<double>(j, "kl_weight", c.kl_weight, where);
  c.pixelloss_weight = get_or<double>(j, "pixelloss_weight", c.pixelloss_weight, where);
  c.disc_num_layers = get_or<int64_t>(j, "disc_num_layers", c.disc_num_layers, where);
  c.disc_in_channels = get_or<int64_t>(j, "disc_in_channels", c.disc_in_channels, where);
  c.disc_ndf = get_or<int64_t>(j, "disc_ndf", c.disc_ndf, where);
  c.disc_factor = get_or<double>(j, "disc_factor", c.disc_factor, where);
  c.disc_weight = get_or<double>(j, "disc_weight", c.disc_weight, where);
  c.perceptual_weight = get_or<double>(j, "perceptual_weight", c.perceptual_weight, where);
  c.use_actnorm = get_or<bool>(j, "use_actnorm", c.use_actnorm, where);
  c.disc_loss = get_or<std::string>(j, "disc_loss", c.disc_loss, where);
  c.vf_weight = get_or<double>(j, "vf_weight", c.vf_weight, where);
  c.adaptive_vf = get_or<bool>(j, "adaptive_vf", c.adaptive_vf, where);
  c.vf.cos_margin = get_or<double>(j, "cos_margin", c.vf.cos_margin, where);
  c.vf.distmat_margin = get_or<double>(j, "distmat_margin", c.vf.distmat_margin, where);
  c.vf.cos_weight = get_or<double>(j, "cos_weight", c.vf.cos_weight, where);
  c.vf.distmat_weight = get_or<double>(j, "distmat_weight", c.vf.distmat_weight, where);
  if (get_or<bool>(j, "disc_conditional", false, where)) throw Error(where + ".disc_conditional: conditional discriminators are not supported");
  if (get_or<bool>(j, "pp_style", false, where)) throw Error(where + ".pp_style: only false is supported (as in the released configs)");
  if (c.disc_loss != "hinge" && c.disc_loss != "vanilla")
    throw Error(where + ".disc_loss must be 'hinge' or 'vanilla', got '" + c.disc_loss + "'");
  if (c.disc_start < 0) throw Error(where + ".disc_start must be >= 0");
  return c;
}

nlohmann::json objective_config_to_json(const loss::ObjectiveConfig& c) {
  return {{"disc_start", c.disc_start},          {"logvar_init", c.logvar_init},
          {"kl_weight", c.kl_weight},            {"pixelloss_weight", c.pixelloss_weight},
          {"disc_num_layers", c.disc_num_layers}, {"disc_in_channels", c.disc_in_channels},
          {"disc_ndf", c.disc_ndf},              {"disc_factor", c.disc_factor},
          {"disc_weight", c.disc_weight},        {"perceptual_weight", c.perceptual_weight},
          {"use_actnorm", c.use_actnorm},        {"disc_loss", c.disc_loss},
          {"vf_weight", c.vf_weight},            {"adaptive_vf", c.adaptive_vf},
          {"cos_margin", c.vf.cos_margin},       {"distmat_margin", c.vf.distmat_margin},
          {"cos_weight", c.vf.cos_weight},       {"distmat_weight", c.vf.distmat_weight}};
}

}  // namespace vavae::config
