#pragma once
#include <torch/torch.h>

#include <functional>
#include <memory>
#include <string>
#include <utility>
#include <vector>

// A restricted unpickler for PyTorch checkpoints. It understands plain containers, numbers,
// strings, OrderedDict, tensor and parameter rebuilds and storages; every other global becomes an
// inert placeholder that is never imported or called, so no file can run code through it.
namespace vavae::io::pickle {

struct Value;
using ValuePtr = std::shared_ptr<Value>;

struct Value {
  enum class Kind { None, Bool, Int, BigInt, Float, String, Bytes, Tuple, List, Dict, Global, Storage, Tensor, Object };
  Kind kind = Kind::None;
  bool boolean = false;
  int64_t integer = 0;
  double real = 0.0;
  std::string text;  // String/Bytes/BigInt (raw little-endian bytes) payload; Global/Object: "module.name"
  std::vector<ValuePtr> items;                            // Tuple, List; Object: constructor args and state
  std::vector<std::pair<ValuePtr, ValuePtr>> entries;     // Dict, in insertion order
  torch::Tensor tensor;                                   // Storage (flat, typed) or Tensor
  int depth = 0;        // nesting depth of containers below this value (bounded, see unpickle)
  bool nested = false;   // already an item of another container: then it can no longer change

  bool is_string() const { return kind == Kind::String; }
};

// Resolves a persistent id ('storage', <type>, key, location, numel) to a flat tensor of that
// dtype and length; storages with the same key must come back as the same tensor.
using StorageLoader = std::function<torch::Tensor(const std::string& key, torch::ScalarType dtype, int64_t numel)>;

constexpr int kMaxDepth = 1000;

struct Unpickled {
  ValuePtr value;
  size_t bytes_read = 0;
};

// Reads one pickle starting at `data`. `context` (usually the file name) prefixes every error.
// Hostile input is bounded: nesting deeper than kMaxDepth, a container changed after it was nested
// (the only way to build a cycle), and more values than a fixed factor of the pickle's bytes are
// errors, so neither memory nor the recursion that frees a value grows beyond what the bytes justify.
Unpickled unpickle(const uint8_t* data, size_t size, const StorageLoader& load_storage, const std::string& context);

// The dtype of a legacy storage class name such as "torch.HalfStorage".
torch::ScalarType storage_dtype(const std::string& storage_class, const std::string& context);

}  // namespace vavae::io::pickle
