#include "vavae/io/weights.h"

#include <algorithm>
#include <fstream>
#include <sstream>
#include <unordered_map>

#include "vavae/common/error.h"
#include "vavae/common/runtime.h"
#include "vavae/io/torch_checkpoint.h"

namespace vavae::io {
namespace {

using pickle::Value;

// A dict whose string keys map to tensors; non-tensor entries are skipped.
size_t count_tensor_entries(const pickle::ValuePtr& v) {
  if (v->kind != Value::Kind::Dict) return 0;
  size_t n = 0;
  for (const auto& [k, val] : v->entries) n += k->is_string() && val->kind == Value::Kind::Tensor;
  return n;
}

NamedTensors tensors_of(const pickle::ValuePtr& dict) {
  NamedTensors out;
  for (const auto& [k, val] : dict->entries)
    if (k->is_string() && val->kind == Value::Kind::Tensor) out.emplace_back(k->text, val->tensor);
  return out;
}

void find_state_dict(const pickle::ValuePtr& top, WeightFile& out, const std::vector<std::string>& preferred) {
  if (top->kind != Value::Kind::Dict) throw Error(out.path + ": the checkpoint's top level is not a dict");
  std::vector<std::string> order = preferred;
  for (const char* key : {"state_dict", "model", "ema", "module"}) order.push_back(key);
  for (const std::string& key : order) {
    for (const auto& [k, val] : top->entries) {
      if (k->is_string() && k->text == key && count_tensor_entries(val) > 0) {
        out.location = key;
        out.tensors = tensors_of(val);
        return;
      }
    }
  }
  if (count_tensor_entries(top) == 0)
    throw Error(out.path + ": no tensors at the top level nor under state_dict / model / ema / module");
  out.location = "top level";
  out.tensors = tensors_of(top);
}

const char* kKnownPrefixes[] = {"first_stage_model.", "model.", "module.", "vae.", "autoencoder.",
                                "loss.", "loss.perceptual_loss.", "loss.discriminator.", "foundation_model.model."};

std::string first_part(const std::string& key) { return key.substr(0, key.find('.')); }

std::string list_some(const std::vector<std::string>& names) {
  std::ostringstream s;
  for (size_t i = 0; i < names.size() && i < 5; ++i) s << (i ? ", " : "") << names[i];
  if (names.size() > 5) s << " and " << names.size() - 5 << " more";
  return s.str();
}

}  // namespace

WeightFile read_weights(const std::string& path, const std::vector<std::string>& preferred_keys) {
  WeightFile out;
  out.path = path;
  if (!looks_like_torch_checkpoint(path)) {
    SafetensorsReader reader(path);
    out.format = "safetensors";
    out.location = "top level";
    out.tensors = reader.all();
    out.metadata = reader.metadata();
    return out;
  }
  auto top = read_torch_checkpoint(path);
  {
    std::ifstream in(path, std::ios::binary);
    out.format = in.get() == 'P' ? "torch zip" : "torch legacy";
  }
  find_state_dict(top, out, preferred_keys);
  return out;
}

NamedTensors state_dict(const torch::nn::Module& module) {
  NamedTensors out;
  for (const auto& p : module.named_parameters()) out.emplace_back(p.key(), p.value());
  for (const auto& b : module.named_buffers()) out.emplace_back(b.key(), b.value());
  return out;
}

std::string LoadReport::summary() const {
  std::ostringstream s;
  s << "loaded " << loaded << " tensors";
  if (!prefix.empty()) s << " (prefix '" << prefix << "')";
  if (!missing.empty()) s << "; missing: " << list_some(missing);
  if (!mismatched.empty()) s << "; shape mismatch: " << list_some(mismatched);
  if (!ignored.empty()) {
    size_t total = 0;
    std::ostringstream groups;
    for (const auto& [group, n] : ignored) {
      groups << (total ? ", " : "") << group << ".* (" << n << ")";
      total += n;
    }
    s << "; ignored " << total << " the model does not own: " << groups.str();
  }
  return s.str();
}

LoadReport load_into(torch::nn::Module& module, const WeightFile& weights, const LoadOptions& options) {
  const NamedTensors targets = state_dict(module);
  std::unordered_map<std::string, const torch::Tensor*> file;
  for (const auto& [k, t] : weights.tensors) file[k] = &t;

  LoadReport report;
  size_t best = 0;
  std::vector<std::string> prefixes{""};
  prefixes.insert(prefixes.end(), std::begin(kKnownPrefixes), std::end(kKnownPrefixes));
  for (const auto& prefix : prefixes) {
    size_t hits = 0;
    for (const auto& [k, t] : targets) hits += file.count(prefix + k);
    if (hits > best) {
      best = hits;
      report.prefix = prefix;
    }
  }

  std::unordered_map<std::string, bool> used;
  torch::NoGradGuard no_grad;
  for (const auto& [k, target] : targets) {
    auto it = file.find(report.prefix + k);
    if (it == file.end()) {
      report.missing.push_back(k);
      continue;
    }
    used[it->first] = true;
    const torch::Tensor& source = *it->second;
    if (source.sizes() != target.sizes()) {
      report.mismatched.push_back(k + " " + shape_string(source.sizes()) + " vs model " + shape_string(target.sizes()));
      continue;
    }
    if (!source.is_floating_point() && target.is_floating_point())
      throw Error(weights.path + ": tensor '" + it->first + "' is " + c10::toString(source.scalar_type()) +
                  ", the model expects a floating-point tensor");
    target.copy_(source);
    ++report.loaded;
  }
  for (const auto& [k, t] : weights.tensors) {
    if (used.count(k)) continue;
    const std::string stripped = k.rfind(report.prefix, 0) == 0 ? k.substr(report.prefix.size()) : k;
    ++report.ignored[first_part(stripped)];
  }
  if (!options.partial && !report.mismatched.empty())
    throw Error(weights.path + ": shape mismatch for " + list_some(report.mismatched));
  if (!options.partial && !report.missing.empty())
    throw Error(weights.path + ": " + std::to_string(report.missing.size()) + " of " + std::to_string(targets.size()) +
                " model tensors missing: " + list_some(report.missing) + " (use a partial load to accept this)");
  return report;
}

}  // namespace vavae::io
