#pragma once
#include <nlohmann/json.hpp>

#include <string>

namespace vavae::config {

// A YAML or JSON file as JSON (YAML scalars keep their YAML type: 1 int, 1.0 float, true bool).
nlohmann::json load_config_file(const std::string& path);
nlohmann::json load_config_text(const std::string& yaml);

}  // namespace vavae::config
