#pragma once
#include <torch/torch.h>

#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "vavae/io/files.h"

namespace vavae::io {

// Tensors in a fixed order, as they are written to or read from a weight file.
using NamedTensors = std::vector<std::pair<std::string, torch::Tensor>>;

struct SafetensorsEntry {
  std::string name;
  std::string dtype;  // the format's name: F32, BF16, I64, BOOL, ...
  torch::ScalarType scalar_type;
  std::vector<int64_t> shape;
  uint64_t begin = 0, end = 0;  // byte range relative to the end of the header
};

// A validated, memory-mapped safetensors file. The constructor checks the whole header
// (size cap, JSON, dtypes, shapes, offsets in bounds, contiguous and non-overlapping, byte
// sizes) and throws vavae::Error naming the tensor at fault.
class SafetensorsReader {
 public:
  explicit SafetensorsReader(const std::string& path);

  const std::string& path() const { return file_->path(); }
  const std::vector<SafetensorsEntry>& entries() const { return entries_; }  // in data order
  const std::map<std::string, std::string>& metadata() const { return metadata_; }
  bool contains(const std::string& name) const { return index_.count(name) > 0; }
  const SafetensorsEntry& entry(const std::string& name) const;

  // A CPU tensor owning a copy of the stored bytes.
  torch::Tensor tensor(const std::string& name) const;
  NamedTensors all() const;

 private:
  std::shared_ptr<MappedFile> file_;
  size_t data_start_ = 0;
  std::vector<SafetensorsEntry> entries_;
  std::map<std::string, size_t> index_;
  std::map<std::string, std::string> metadata_;
};

// Writes tensors (moved to CPU, made contiguous) and optional metadata atomically.
void write_safetensors(const std::string& path, const NamedTensors& tensors,
                       const std::map<std::string, std::string>& metadata = {});

// The format's dtype name for a LibTorch scalar type (Error for types the format lacks).
std::string safetensors_dtype_name(torch::ScalarType type);

}  // namespace vavae::io
