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

}  // namespace vavae::config
