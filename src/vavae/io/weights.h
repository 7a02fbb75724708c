#pragma once
#include <torch/torch.h>

#include <map>
#include <string>
#include <vector>

#include "vavae/io/safetensors.h"

namespace vavae::io {

// The tensors of a weight file, whatever its format, and where in the file they were found.
struct WeightFile {
  std::string path;
  std::string format;    // "safetensors", "torch zip", "torch legacy"
  std::string location;  // "top level", or the key of the dict that held them ("state_dict", ...)
  NamedTensors tensors;
  std::map<std::string, std::string> metadata;  // safetensors __metadata__
};

// Reads safetensors or any torch.save file. A state dict may sit at the top or under
// `state_dict`, `model`, `ema` or `module` (after `preferred_keys`, tried first); it is the dict of
// tensors found first.
WeightFile read_weights(const std::string& path, const std::vector<std::string>& preferred_keys = {});

struct LoadOptions {
  bool partial = false;  // load what matches, report the rest instead of failing
};

struct LoadReport {
  std::string prefix;                      // e.g. "first_stage_model." ("" when none)
  size_t loaded = 0;
  std::vector<std::string> missing;        // module keys absent from the file (partial loads only)
  std::vector<std::string> mismatched;     // shape mismatches (partial loads only)
  std::map<std::string, size_t> ignored;   // file keys the module does not own, by first name part
  std::string summary() const;             // one line
};

// Copies the file's tensors into the module's parameters and buffers by name, converting dtype
// (F16 weights load into float32 modules). A key prefix such as `first_stage_model.` is detected.
// Missing keys and shape mismatches fail with their names unless options.partial.
LoadReport load_into(torch::nn::Module& module, const WeightFile& weights, const LoadOptions& options = {});

// The module's parameters and buffers, in state_dict order, as tensors for writing.
NamedTensors state_dict(const torch::nn::Module& module);

}  // namespace vavae::io
