// YAML configs: parsing (aliases, nesting), then the training and autoencoder schemas.
#include <string>

#include "vavae/common/error.h"
#include "vavae/config/config_file.h"
#include "vavae/config/model_config.h"
#include "vavae/config/train_config.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string text(reinterpret_cast<const char*>(data), size);
  try {
    const nlohmann::json tree = vavae::config::load_config_text(text);
    try {
      vavae::config::autoencoder_config_from_json(tree, "fuzz.yaml");
    } catch (const vavae::Error&) {
    }
    vavae::config::train_config_from_json(tree, "fuzz.yaml");
  } catch (const vavae::Error&) {
  }
  return 0;
}
