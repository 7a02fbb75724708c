#pragma once
#include <nlohmann/json.hpp>

#include <string>

#include "vavae/loss/objective.h"
#include "vavae/nn/autoencoder.h"

namespace vavae::config {

// The autoencoder section of a config in any of its three shapes: the upstream layout
// (model.params.ddconfig + model.params.embed_dim), that `params` level alone
// ({ddconfig: {...}, embed_dim: E}), or the ddconfig keys plus embed_dim flat. Other keys are
// ignored; unknown ddconfig keys and wrong types are Errors naming the key.
nn::AutoencoderConfig autoencoder_config_from_json(const nlohmann::json& root, const std::string& source);

nn::AutoencoderConfig load_autoencoder_config(const std::string& path);

// The objective from `model.params.lossconfig.params` (or lossconfig.params, lossconfig, params, or
// the keys flat), with
// upstream's keys and defaults; unknown keys and wrong types are Errors naming the key.
loss::ObjectiveConfig objective_config_from_json(const nlohmann::json& root, const std::string& source);

}  // namespace vavae::config
