#include "vavae/io/safetensors.h"

#include <nlohmann/json.hpp>

#include <algorithm>
#include <cstring>
#include <limits>
#include <set>
#include <vector>

#include "vavae/common/error.h"
#include "vavae/common/runtime.h"

namespace vavae::io {
namespace {

constexpr uint64_t kMaxHeaderBytes = 100ull << 20;  // the reference implementation's cap

struct DTypeInfo {
  const char* name;
  torch::ScalarType type;
};
constexpr DTypeInfo kDTypes[] = {
    {"F64", torch::kFloat64}, {"F32", torch::kFloat32}, {"F16", torch::kFloat16},
    {"BF16", torch::kBFloat16}, {"I64", torch::kInt64},  {"I32", torch::kInt32},
    {"I16", torch::kInt16},     {"I8", torch::kInt8},     {"U8", torch::kUInt8},
    {"BOOL", torch::kBool},
};

const DTypeInfo* find_dtype(const std::string& name) {
  for (const auto& d : kDTypes)
    if (name == d.name) return &d;
  return nullptr;
}

uint64_t read_u64_le(const uint8_t* p) {
  uint64_t v = 0;
  for (int i = 7; i >= 0; --i) v = (v << 8) | p[i];
  return v;
}

// The header as JSON: nesting deeper than the format needs and repeated keys (which a plain parse
// would silently overwrite) are errors.
nlohmann::ordered_json parse_header(const std::string& path, const uint8_t* begin, const uint8_t* end) {
  constexpr int kMaxDepth = 4;  // {name: {shape: [..]}} and __metadata__ need 3
  std::vector<std::set<std::string>> keys;
  auto check = [&](int depth, nlohmann::ordered_json::parse_event_t event, nlohmann::ordered_json& parsed) {
    using Event = nlohmann::ordered_json::parse_event_t;
    if (event == Event::object_start || event == Event::array_start) {
      if (depth >= kMaxDepth) throw Error(path + ": safetensors header nests deeper than " + std::to_string(kMaxDepth) + " levels");
      if (event == Event::object_start) keys.emplace_back();
    } else if (event == Event::object_end) {
      keys.pop_back();
    } else if (event == Event::key) {
      if (!keys.back().insert(parsed.get<std::string>()).second)
        throw Error(path + ": safetensors header has the key '" + printable(parsed.get<std::string>()) + "' twice");
    }
    return true;
  };
  try {
    return nlohmann::ordered_json::parse(begin, end, check);
  } catch (const nlohmann::json::exception& e) {
    throw Error(path + ": safetensors header is not valid JSON: " + e.what());
  }
}

}  // namespace

std::string safetensors_dtype_name(torch::ScalarType type) {
  for (const auto& d : kDTypes)
    if (d.type == type) return d.name;
  throw Error(std::string("safetensors has no dtype for ") + c10::toString(type));
}

SafetensorsReader::SafetensorsReader(const std::string& path) : file_(std::make_shared<MappedFile>(path)) {
  const size_t size = file_->size();
  if (size < 8) throw Error(path + ": not a safetensors file (" + std::to_string(size) + " bytes, shorter than the 8-byte header length)");
  const uint64_t header_len = read_u64_le(file_->data());
  if (header_len > kMaxHeaderBytes)
    throw Error(path + ": safetensors header length " + std::to_string(header_len) + " exceeds the 100 MiB cap");
  if (header_len > size - 8)
    throw Error(path + ": safetensors header length " + std::to_string(header_len) + " runs past the end of the file (" +
                std::to_string(size) + " bytes)");
  data_start_ = 8 + header_len;
  const uint64_t data_size = size - data_start_;

  nlohmann::ordered_json header = parse_header(path, file_->data() + 8, file_->data() + data_start_);
  if (!header.is_object()) throw Error(path + ": safetensors header is not a JSON object");

  for (auto it = header.begin(); it != header.end(); ++it) {
    const std::string& name = it.key();
    const auto& value = it.value();
    if (name == "__metadata__") {
      if (!value.is_object()) throw Error(path + ": __metadata__ is not an object");
      for (auto m = value.begin(); m != value.end(); ++m) {
        if (!m.value().is_string()) throw Error(path + ": __metadata__ value '" + m.key() + "' is not a string");
        metadata_[m.key()] = m.value().get<std::string>();
      }
      continue;
    }
    const std::string where = path + ": tensor '" + name + "'";
    if (!value.is_object() || !value.contains("dtype") || !value.contains("shape") || !value.contains("data_offsets"))
      throw Error(where + " needs dtype, shape and data_offsets");
    if (!value["dtype"].is_string()) throw Error(where + ": dtype is not a string");
    SafetensorsEntry e;
    e.name = name;
    e.dtype = value["dtype"].get<std::string>();
    const DTypeInfo* dt = find_dtype(e.dtype);
    if (!dt) throw Error(where + ": unsupported dtype '" + e.dtype + "'");
    e.scalar_type = dt->type;
    const auto& shape = value["shape"];
    if (!shape.is_array()) throw Error(where + ": shape is not an array");
    uint64_t numel = 1;
    for (const auto& d : shape) {
      if (!d.is_number_unsigned()) throw Error(where + ": shape entry " + (d.is_primitive() ? printable(d.dump(), 40) : std::string("of type ") + d.type_name()) +
                    " is not a non-negative integer");
      const uint64_t n = d.get<uint64_t>();
      if (n > static_cast<uint64_t>(std::numeric_limits<int64_t>::max()) || __builtin_mul_overflow(numel, n, &numel))
        throw Error(where + ": shape overflows");
      e.shape.push_back(static_cast<int64_t>(n));
    }
    const auto& offsets = value["data_offsets"];
    if (!offsets.is_array() || offsets.size() != 2 || !offsets[0].is_number_unsigned() || !offsets[1].is_number_unsigned())
      throw Error(where + ": data_offsets must be two non-negative integers");
    e.begin = offsets[0].get<uint64_t>();
    e.end = offsets[1].get<uint64_t>();
    if (e.begin > e.end) throw Error(where + ": data_offsets [" + std::to_string(e.begin) + "," + std::to_string(e.end) + "] are reversed");
    if (e.end > data_size)
      throw Error(where + ": data_offsets end " + std::to_string(e.end) + " is past the data section (" + std::to_string(data_size) + " bytes)");
    const uint64_t elem = c10::elementSize(e.scalar_type);
    if (numel > std::numeric_limits<uint64_t>::max() / elem) throw Error(where + ": byte size overflows");
    if (e.end - e.begin != numel * elem)
      throw Error(where + ": holds " + std::to_string(e.end - e.begin) + " bytes, but " + e.dtype + " " +
                  vavae::shape_string(e.shape) + " needs " + std::to_string(numel * elem));
    if (index_.count(name)) throw Error(where + " appears twice");
    index_[name] = entries_.size();
    entries_.push_back(std::move(e));
  }

  std::sort(entries_.begin(), entries_.end(), [](const auto& a, const auto& b) {
    return a.begin != b.begin ? a.begin < b.begin : a.end < b.end;
  });
  uint64_t expected = 0;
  for (size_t i = 0; i < entries_.size(); ++i) {
    const auto& e = entries_[i];
    if (e.begin < expected)
      throw Error(path + ": tensor '" + e.name + "' overlaps '" + entries_[i - 1].name + "' (starts at byte " +
                  std::to_string(e.begin) + ", previous ends at " + std::to_string(expected) + ")");
    if (e.begin > expected)
      throw Error(path + ": tensor '" + e.name + "' starts at byte " + std::to_string(e.begin) +
                  ", leaving a gap after byte " + std::to_string(expected));
    expected = e.end;
    index_[e.name] = i;
  }
  if (expected != data_size)
    throw Error(path + ": data section has " + std::to_string(data_size) + " bytes but the tensors cover " + std::to_string(expected));
}

const SafetensorsEntry& SafetensorsReader::entry(const std::string& name) const {
  auto it = index_.find(name);
  if (it == index_.end()) throw Error(path() + ": no tensor named '" + name + "'");
  return entries_[it->second];
}

torch::Tensor SafetensorsReader::tensor(const std::string& name) const {
  const auto& e = entry(name);
  torch::Tensor t = torch::empty(e.shape, torch::TensorOptions().dtype(e.scalar_type));
  if (e.end > e.begin) std::memcpy(t.data_ptr(), file_->data() + data_start_ + e.begin, e.end - e.begin);
  return t;
}

NamedTensors SafetensorsReader::all() const {
  NamedTensors out;
  out.reserve(entries_.size());
  for (const auto& e : entries_) out.emplace_back(e.name, tensor(e.name));
  return out;
}

void write_safetensors(const std::string& path, const NamedTensors& tensors,
                       const std::map<std::string, std::string>& metadata) {
  nlohmann::ordered_json header = nlohmann::ordered_json::object();
  if (!metadata.empty()) header["__metadata__"] = metadata;
  std::vector<torch::Tensor> contiguous;
  contiguous.reserve(tensors.size());
  uint64_t offset = 0;
  for (const auto& [name, t] : tensors) {
    if (header.contains(name)) throw Error(path + ": tensor name '" + name + "' given twice");
    torch::Tensor c = t.detach().to(torch::kCPU).contiguous();
    const uint64_t bytes = c.numel() * c.element_size();
    header[name] = {{"dtype", safetensors_dtype_name(c.scalar_type())},
                    {"shape", c.sizes().vec()},
                    {"data_offsets", {offset, offset + bytes}}};
    offset += bytes;
    contiguous.push_back(std::move(c));
  }
  std::string text;
  try {
    text = header.dump();
  } catch (const nlohmann::json::type_error&) {
    throw Error(path + ": a tensor name or metadata value is not valid UTF-8");
  }
  text.append((8 - text.size() % 8) % 8, ' ');
  write_file_atomically(path, [&](std::ostream& out) {
    uint8_t len[8];
    uint64_t n = text.size();
    for (int i = 0; i < 8; ++i) len[i] = static_cast<uint8_t>(n >> (8 * i));
    out.write(reinterpret_cast<const char*>(len), 8);
    out.write(text.data(), static_cast<std::streamsize>(text.size()));
    for (const auto& c : contiguous)
      out.write(static_cast<const char*>(c.data_ptr()), static_cast<std::streamsize>(c.numel() * c.element_size()));
  });
}

}  // namespace vavae::io
