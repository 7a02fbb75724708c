#include "vavae/config/schema.h"

#include <algorithm>
#include <sstream>

namespace vavae::config {
namespace {

size_t edit_distance(const std::string& a, const std::string& b) {
  std::vector<size_t> row(b.size() + 1);
  for (size_t j = 0; j <= b.size(); ++j) row[j] = j;
  for (size_t i = 1; i <= a.size(); ++i) {
    size_t diag = row[0];
    row[0] = i;
    for (size_t j = 1; j <= b.size(); ++j) {
      const size_t up = row[j];
      row[j] = std::min({row[j] + 1, row[j - 1] + 1, diag + (a[i - 1] != b[j - 1])});
      diag = up;
    }
  }
  return row[b.size()];
}

bool starts_with(const std::string& text, const std::string& prefix) { return text.compare(0, prefix.size(), prefix) == 0; }

}  // namespace

std::string closest_name(const std::string& name, const std::vector<std::string>& candidates) {
  size_t best = 3;
  std::string suggestion;
  for (const auto& c : candidates) {
    const size_t d = edit_distance(name, c);
    if (d < best) best = d, suggestion = c;
  }
  return suggestion;
}

const nlohmann::json* find_path(const nlohmann::json& root, const std::string& path) {
  const nlohmann::json* node = &root;
  size_t start = 0;
  for (;;) {
    const auto dot = path.find('.', start);
    const std::string key = path.substr(start, dot == std::string::npos ? std::string::npos : dot - start);
    if (!node->is_object()) return nullptr;
    const auto it = node->find(key);
    if (it == node->end()) return nullptr;
    node = &*it;
    if (dot == std::string::npos) return node;
    start = dot + 1;
  }
}

void set_path(nlohmann::json& root, const std::string& path, nlohmann::json value) {
  nlohmann::json* node = &root;
  size_t start = 0;
  for (;;) {
    const auto dot = path.find('.', start);
    const std::string key = path.substr(start, dot == std::string::npos ? std::string::npos : dot - start);
    if (dot == std::string::npos) {
      (*node)[key] = std::move(value);
      return;
    }
    if (!node->contains(key) || !(*node)[key].is_object()) (*node)[key] = nlohmann::json::object();
    node = &(*node)[key];
    start = dot + 1;
  }
}

std::vector<std::pair<std::string, std::string>> SchemaReader::finish(const std::string& subtree) const {
  std::vector<std::pair<std::string, std::string>> ignored;
  const nlohmann::json* node = subtree.empty() ? &root_ : find_path(root_, subtree);
  if (!node || !node->is_object()) throw Error(source_ + ": " + (subtree.empty() ? "the config" : subtree) + " is not a mapping");
  walk(*node, subtree, ignored);
  if (!empty_.empty()) {
    std::ostringstream names;
    for (size_t i = 0; i < empty_.size(); ++i) names << (i ? ", " : "") << empty_[i];
    throw Error(source_ + ": " + std::to_string(empty_.size()) + (empty_.size() == 1 ? " key is" : " keys are") +
                " empty (a template? give each a value, e.g. with --set KEY=VALUE): " + names.str());
  }
  return ignored;
}

void SchemaReader::walk(const nlohmann::json& node, const std::string& path,
                        std::vector<std::pair<std::string, std::string>>& ignored) const {
  for (auto it = node.begin(); it != node.end(); ++it) {
    const std::string p = path.empty() ? it.key() : path + "." + it.key();
    if (std::find(known_.begin(), known_.end(), p) != known_.end()) continue;
    if (std::find(lists_.begin(), lists_.end(), p) != lists_.end()) continue;
    bool is_ignored = false;
    for (const auto& [prefix, reason] : ignored_)
      if (p == prefix || starts_with(p, prefix + ".")) {
        if (!it.value().is_null() || p == prefix) ignored.emplace_back(p, reason);
        is_ignored = true;
        break;
      }
    if (is_ignored) continue;
    if (std::find(fixed_here_.begin(), fixed_here_.end(), p) != fixed_here_.end())
      throw Error(source_ + ": " + p + " cannot change between stages; set it in model.params.lossconfig.params");
    // A section: some declared key lies below it.
    bool section = false;
    for (const auto* names : {&known_, &lists_})
      for (const auto& k : *names) section |= starts_with(k, p + ".");
    for (const auto& [prefix, reason] : ignored_) section |= starts_with(prefix, p + ".");
    if (section) {
      if (it.value().is_null()) continue;  // an empty section: all defaults
      if (!it.value().is_object()) throw Error(source_ + ": " + p + " must be a mapping");
      walk(it.value(), p, ignored);
      continue;
    }
    // Unknown: suggest the nearest name declared at the same level.
    std::vector<std::string> siblings;
    auto add_sibling = [&](const std::string& declared) {
      if (!starts_with(declared, path.empty() ? "" : path + ".")) return;
      const std::string rest = path.empty() ? declared : declared.substr(path.size() + 1);
      siblings.push_back(rest.substr(0, rest.find('.')));
    };
    for (const auto& k : known_) add_sibling(k);
    for (const auto& k : lists_) add_sibling(k);
    for (const auto& k : fixed_here_) add_sibling(k);
    for (const auto& [k, reason] : ignored_) add_sibling(k);
    std::string message = source_ + ": unknown key '" + printable(p, 120) + "'";
    const std::string suggestion = closest_name(it.key(), siblings);
    if (!suggestion.empty()) message += " (did you mean '" + suggestion + "'?)";
    throw Error(message);
  }
}

}  // namespace vavae::config
