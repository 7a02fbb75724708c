#pragma once
#include <nlohmann/json.hpp>

#include <string>

namespace vavae::config {

// A YAML or JSON file as JSON (YAML scalars keep their YAML type: 1 int, 1.0 float, true bool).
nlohmann::json load_config_file(const std::string& path);
nlohmann::json load_config_text(const std::string& yaml);

// Reads `key` of `section` as T; an absent key gives `fallback`, a wrong type an Error naming
// `where`.key and the expected type.
template <typename T>
T get_or(const nlohmann::json& section, const std::string& key, const T& fallback, const std::string& where);

// Throws an Error naming the first key of `section` not in `allowed`, with a did-you-mean
// when a known key is within two edits.
void reject_unknown_keys(const nlohmann::json& section, const std::vector<std::string>& allowed, const std::string& where);

}  // namespace vavae::config
