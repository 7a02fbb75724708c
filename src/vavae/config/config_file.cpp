#include "vavae/config/config_file.h"

#include <yaml-cpp/yaml.h>

#include <fstream>
#include <sstream>

#include "vavae/common/error.h"
#include "vavae/common/json.h"
#include "vavae/common/runtime.h"
#include "vavae/io/files.h"

namespace vavae::config {
namespace {

nlohmann::json scalar_to_json(const YAML::Node& node) {
  const std::string& s = node.Scalar();
  if (node.Tag() == "!") return s;  // quoted: always a string
  if (s == "null" || s == "~" || s.empty()) return nullptr;
  if (s == "true" || s == "True") return true;
  if (s == "false" || s == "False") return false;
  try {
    size_t used = 0;
    long long i = std::stoll(s, &used);
    if (used == s.size()) return i;
  } catch (const std::exception&) {
  }
  try {
    size_t used = 0;
    double d = std::stod(s, &used);
    if (used == s.size()) return d;
  } catch (const std::exception&) {
  }
  return s;
}

// YAML aliases share nodes, so a small file can describe an exponentially large tree ("billion
// laughs"); the conversion counts every node it produces and stops at a bound no config approaches.
constexpr size_t kMaxConfigNodes = 1u << 20;
constexpr int kMaxConfigDepth = 64;

struct NodeBudget {
  size_t nodes = 0;
};

nlohmann::json yaml_to_json(const YAML::Node& node, NodeBudget& budget, int depth) {
  if (++budget.nodes > kMaxConfigNodes)
    throw Error("the YAML expands to more than " + std::to_string(kMaxConfigNodes) + " nodes (aliases nested too deep?)");
  if (depth > kMaxConfigDepth) throw Error("the YAML nests deeper than " + std::to_string(kMaxConfigDepth) + " levels");
  switch (node.Type()) {
    case YAML::NodeType::Null:
    case YAML::NodeType::Undefined:
      return nullptr;
    case YAML::NodeType::Scalar:
      return scalar_to_json(node);
    case YAML::NodeType::Sequence: {
      nlohmann::json out = nlohmann::json::array();
      for (const auto& item : node) out.push_back(yaml_to_json(item, budget, depth + 1));
      return out;
    }
    case YAML::NodeType::Map: {
      nlohmann::json out = nlohmann::json::object();
      for (const auto& kv : node) {
        if (!kv.first.IsScalar()) throw Error("a YAML mapping key is not a plain value");
        out[kv.first.Scalar()] = yaml_to_json(kv.second, budget, depth + 1);
      }
      return out;
    }
  }
  return nullptr;
}

nlohmann::json yaml_to_json(const YAML::Node& node) {
  NodeBudget budget;
  return yaml_to_json(node, budget, 0);
}

// JSON configs get the same depth bound; nlohmann's parser itself does not recurse.
nlohmann::json parse_json_config(const std::string& text) {
  auto depth_guard = [](int depth, nlohmann::json::parse_event_t, nlohmann::json&) {
    if (depth > kMaxConfigDepth) throw Error("the JSON nests deeper than " + std::to_string(kMaxConfigDepth) + " levels");
    return true;
  };
  return nlohmann::json::parse(text, depth_guard);
}

size_t edit_distance(const std::string& a, const std::string& b) {
  std::vector<size_t> row(b.size() + 1);
  for (size_t j = 0; j <= b.size(); ++j) row[j] = j;
  for (size_t i = 1; i <= a.size(); ++i) {
    size_t diag = row[0];
    row[0] = i;
    for (size_t j = 1; j <= b.size(); ++j) {
      size_t up = row[j];
      row[j] = std::min({row[j] + 1, row[j - 1] + 1, diag + (a[i - 1] != b[j - 1])});
      diag = up;
    }
  }
  return row[b.size()];
}

template <typename T>
const char* type_name() {
  if constexpr (std::is_same_v<T, bool>) return "a boolean";
  else if constexpr (std::is_integral_v<T>) return "an integer";
  else if constexpr (std::is_floating_point_v<T>) return "a number";
  else if constexpr (std::is_same_v<T, std::string>) return "a string";
  else return "a list of integers";
}

template <typename T>
bool has_type(const nlohmann::json& v) {
  if constexpr (std::is_same_v<T, bool>) return v.is_boolean();
  else if constexpr (std::is_integral_v<T>) return v.is_number_integer();
  else if constexpr (std::is_floating_point_v<T>) return v.is_number();
  else if constexpr (std::is_same_v<T, std::string>) return v.is_string();
  else {
    if (!v.is_array()) return false;
    for (const auto& x : v)
      if (!x.is_number_integer()) return false;
    return true;
  }
}

}  // namespace

nlohmann::json load_config_file(const std::string& path) {
  std::ifstream in(path);
  if (!in) throw Error(path + ": cannot open config file");
  std::stringstream text;
  text << in.rdbuf();
  if (io::ends_with(path, ".json")) {
    try {
      return parse_json_config(text.str());
    } catch (const nlohmann::json::exception& e) {
      throw Error(path + ": invalid JSON: " + e.what());
    } catch (const Error& e) {
      throw Error(path + ": " + e.what());
    }
  }
  try {
    return load_config_text(text.str());
  } catch (const Error& e) {
    throw Error(path + ": " + e.what());
  }
}

nlohmann::json load_config_text(const std::string& yaml) {
  try {
    return yaml_to_json(YAML::Load(yaml));
  } catch (const YAML::Exception& e) {
    throw Error(std::string("invalid YAML: ") + e.what());
  }
}

template <typename T>
T get_or(const nlohmann::json& section, const std::string& key, const T& fallback, const std::string& where) {
  if (!section.contains(key) || section[key].is_null()) return fallback;
  const auto& v = section[key];
  if (!has_type<T>(v)) throw Error(where + "." + key + " must be " + type_name<T>() + ", got " + printable(json_text(v), 80));
  return v.get<T>();
}

template bool get_or<bool>(const nlohmann::json&, const std::string&, const bool&, const std::string&);
template int64_t get_or<int64_t>(const nlohmann::json&, const std::string&, const int64_t&, const std::string&);
template double get_or<double>(const nlohmann::json&, const std::string&, const double&, const std::string&);
template std::string get_or<std::string>(const nlohmann::json&, const std::string&, const std::string&, const std::string&);
template std::vector<int64_t> get_or<std::vector<int64_t>>(const nlohmann::json&, const std::string&,
                                                           const std::vector<int64_t>&, const std::string&);

void reject_unknown_keys(const nlohmann::json& section, const std::vector<std::string>& allowed, const std::string& where) {
  for (auto it = section.begin(); it != section.end(); ++it) {
    if (std::find(allowed.begin(), allowed.end(), it.key()) != allowed.end()) continue;
    std::string message = where + ": unknown key '" + it.key() + "'";
    size_t best = 3;
    std::string suggestion;
    for (const auto& a : allowed) {
      size_t d = edit_distance(it.key(), a);
      if (d < best) best = d, suggestion = a;
    }
    if (!suggestion.empty()) message += " (did you mean '" + suggestion + "'?)";
    throw Error(message);
  }
}

}  // namespace vavae::config
