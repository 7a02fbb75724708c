#pragma once
#include <nlohmann/json.hpp>

#include <map>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "vavae/common/error.h"
#include "vavae/common/json.h"
#include "vavae/common/runtime.h"

// The config schema, declared once. A `describe(config, visitor)` function names every key of a
// config struct with its dotted path, its member, a one-line doc and whether stages may change it;
// the visitors below turn that one declaration into parsing (types, unknown keys with a
// did-you-mean, empty template values), serialisation of the resolved config, and the listing
// behind `--dry-run` and the README's key table.
namespace vavae::config {

// Key flags.
constexpr unsigned kPerStage = 1;  // a stage may override it (stages[i].lossconfig.<name>)

template <typename T>
const char* type_name() {
  if constexpr (std::is_same_v<T, bool>) return "a boolean";
  else if constexpr (std::is_integral_v<T>) return "an integer";
  else if constexpr (std::is_floating_point_v<T>) return "a number";
  else if constexpr (std::is_same_v<T, std::string>) return "a string";
  else if constexpr (std::is_same_v<T, std::vector<std::string>>) return "a list of strings";
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
      if (!has_type<typename T::value_type>(x)) return false;
    return true;
  }
}

// The closest of `candidates` to `name` within two edits ("" when none).
std::string closest_name(const std::string& name, const std::vector<std::string>& candidates);

// The value at a dotted path, or nullptr.
const nlohmann::json* find_path(const nlohmann::json& root, const std::string& path);
void set_path(nlohmann::json& root, const std::string& path, nlohmann::json value);

// Where each key's value came from: "file", "--set", "stage NAME"; absent means the default.
using Provenance = std::map<std::string, std::string>;

// Reads declared keys from a JSON tree into the members.
class SchemaReader {
 public:
  SchemaReader(const nlohmann::json& root, std::string source, std::string origin, Provenance* provenance = nullptr,
               std::string provenance_prefix = "")
      : root_(root), source_(std::move(source)), origin_(std::move(origin)), provenance_(provenance),
        provenance_prefix_(std::move(provenance_prefix)) {}

  // Only keys flagged kPerStage may appear (a stage's lossconfig).
  void per_stage_only() { per_stage_only_ = true; }

  template <typename T>
  void key(const std::string& path, T& member, const char* /*doc*/, unsigned flags = 0) {
    if (per_stage_only_ && !(flags & kPerStage)) {
      fixed_here_.push_back(path);
      return;
    }
    known_.push_back(path);
    const nlohmann::json* v = find_path(root_, path);
    if (!v) return;
    if (v->is_null()) {
      empty_.push_back(path);
      return;
    }
    if (!has_type<T>(*v)) throw Error(where(path) + " must be " + type_name<T>() + ", got " + printable(json_text(*v), 80));
    member = v->get<T>();
    if (provenance_) (*provenance_)[provenance_prefix_ + path] = origin_;
  }

  // A key whose value, when given, must be `value` (upstream's class paths, unsupported options).
  void fixed(const std::string& path, const nlohmann::json& value, const char* /*doc*/) {
    if (per_stage_only_) return;
    known_.push_back(path);
    const nlohmann::json* v = find_path(root_, path);
    if (v && !v->is_null() && *v != value)
      throw Error(where(path) + " must be " + printable(json_text(value), 80) + " here, got " + printable(json_text(*v), 80));
  }

  // Accepted and not used (keys only upstream's Lightning code read), with the reason.
  void ignored(const std::string& path, const char* reason) {
    if (!per_stage_only_) ignored_.emplace_back(path, reason);
  }

  // A list of mappings read by the caller (stages).
  void list(const std::string& path) { lists_.push_back(path); }

  // After the visit: every key of the tree is declared, ignored, or lies in a section of declared
  // keys; otherwise an Error naming it (with a did-you-mean). Empty (null) declared keys are one
  // Error naming them all. Returns the ignored keys present, with their reasons.
  // `subtree` limits the check to the keys below one path ("" = the whole tree).
  std::vector<std::pair<std::string, std::string>> finish(const std::string& subtree = "") const;

 private:
  std::string where(const std::string& path) const { return source_ + ": " + path; }
  void walk(const nlohmann::json& node, const std::string& path, std::vector<std::pair<std::string, std::string>>& ignored) const;

  const nlohmann::json& root_;
  std::string source_, origin_;
  Provenance* provenance_;
  std::string provenance_prefix_;
  bool per_stage_only_ = false;
  std::vector<std::string> known_, empty_, lists_, fixed_here_;
  std::vector<std::pair<std::string, std::string>> ignored_;
};

// Writes every declared key's current value into a JSON tree (the resolved config).
class SchemaWriter {
 public:
  template <typename T>
  void key(const std::string& path, T& member, const char*, unsigned = 0) {
    set_path(tree, path, member);
  }
  void fixed(const std::string& path, const nlohmann::json& value, const char*) { set_path(tree, path, value); }
  void ignored(const std::string&, const char*) {}
  void list(const std::string&) {}
  nlohmann::json tree = nlohmann::json::object();
};

// Every declared key with its type, value and doc, in declaration order.
struct KeyRow {
  std::string path, type, doc;
  nlohmann::json value;
  bool per_stage = false;
};

class SchemaLister {
 public:
  template <typename T>
  void key(const std::string& path, T& member, const char* doc, unsigned flags = 0) {
    rows.push_back({path, type_name<T>(), doc, member, (flags & kPerStage) != 0});
  }
  void fixed(const std::string& path, const nlohmann::json& value, const char* doc) {
    rows.push_back({path, "fixed", doc, value, false});
  }
  void ignored(const std::string& path, const char* reason) { ignored_rows.emplace_back(path, reason); }
  void list(const std::string&) {}
  std::vector<KeyRow> rows;
  std::vector<std::pair<std::string, std::string>> ignored_rows;
};

}  // namespace vavae::config
