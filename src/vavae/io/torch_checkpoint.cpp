#include "vavae/io/torch_checkpoint.h"

#include <caffe2/serialize/inline_container.h>

#include <cstring>
#include <fstream>
#include <map>

#include "vavae/common/error.h"
#include "vavae/io/files.h"

namespace vavae::io {
namespace {

bool starts_with_zip_magic(const uint8_t* p, size_t n) { return n >= 4 && std::memcmp(p, "PK\x03\x04", 4) == 0; }

// The legacy format's first pickle is this 80-bit magic number.
const uint8_t kLegacyMagic[] = {0x6c, 0xfc, 0x9c, 0x46, 0xf9, 0x20, 0x6a, 0xa8, 0x50, 0x19};

std::string first_line(const std::string& s) { return s.substr(0, s.find('\n')); }

pickle::ValuePtr read_zip(const std::string& path) {
  try {
    caffe2::serialize::PyTorchStreamReader reader(path);
    if (reader.hasRecord("byteorder")) {
      auto [ptr, n] = reader.getRecord("byteorder");
      const std::string order(static_cast<const char*>(ptr.get()), n);
      if (order != "little") throw Error(path + ": byte order '" + order + "' is not supported (only little-endian)");
    }
    auto [pkl, pkl_size] = reader.getRecord("data.pkl");
    std::map<std::string, torch::Tensor> storages;
    pickle::StorageLoader load = [&](const std::string& key, torch::ScalarType dtype, int64_t numel) {
      auto it = storages.find(key);
      if (it != storages.end()) return it->second;
      const std::string record = "data/" + key;
      if (!reader.hasRecord(record)) throw Error(path + ": storage record '" + record + "' is missing");
      auto [data, bytes] = reader.getRecord(record);
      const size_t expected = static_cast<size_t>(numel) * c10::elementSize(dtype);
      if (bytes != expected)
        throw Error(path + ": storage '" + key + "' has " + std::to_string(bytes) + " bytes, expected " +
                    std::to_string(expected) + " for " + std::to_string(numel) + " elements of " + c10::toString(dtype));
      torch::Tensor t = torch::empty({numel}, torch::TensorOptions().dtype(dtype));
      if (bytes) std::memcpy(t.data_ptr(), data.get(), bytes);
      storages.emplace(key, t);
      return t;
    };
    return pickle::unpickle(static_cast<const uint8_t*>(pkl.get()), pkl_size, load, path).value;
  } catch (const c10::Error& e) {
    throw Error(path + ": not a readable torch zip checkpoint: " + first_line(e.what_without_backtrace()));
  }
}

pickle::ValuePtr read_legacy(const MappedFile& file) {
  const std::string& path = file.path();
  const uint8_t* p = file.data();
  size_t remaining = file.size();
  pickle::StorageLoader no_storage = [&](const std::string&, torch::ScalarType, int64_t) -> torch::Tensor {
    throw Error(path + ": storage reference in a legacy header pickle");
  };
  auto next = [&](const pickle::StorageLoader& loader) {
    auto r = pickle::unpickle(p, remaining, loader, path);
    p += r.bytes_read;
    remaining -= r.bytes_read;
    return r.value;
  };
  auto magic = next(no_storage);
  if (magic->kind != pickle::Value::Kind::BigInt || magic->text.size() != sizeof(kLegacyMagic) ||
      std::memcmp(magic->text.data(), kLegacyMagic, sizeof(kLegacyMagic)) != 0)
    throw Error(path + ": not a torch checkpoint (legacy magic number missing)");
  auto protocol = next(no_storage);
  if (protocol->kind != pickle::Value::Kind::Int || protocol->integer != 1001)
    throw Error(path + ": unsupported legacy protocol version");
  next(no_storage);  // sys_info: endianness and type sizes, always little-endian on supported writers

  // Storages are declared by the main pickle and their bytes follow it, in the order of a key list.
  std::map<std::string, torch::Tensor> storages;
  pickle::StorageLoader declare = [&](const std::string& key, torch::ScalarType dtype, int64_t numel) {
    auto it = storages.find(key);
    if (it != storages.end()) return it->second;
    torch::Tensor t = torch::empty({numel}, torch::TensorOptions().dtype(dtype));
    storages.emplace(key, t);
    return t;
  };
  auto value = next(declare);
  auto keys = next(no_storage);
  if (keys->kind != pickle::Value::Kind::List) throw Error(path + ": legacy storage key list missing");
  for (const auto& k : keys->items) {
    if (!k->is_string()) throw Error(path + ": legacy storage key is not a string");
    auto it = storages.find(k->text);
    if (it == storages.end()) throw Error(path + ": storage '" + k->text + "' listed but never used");
    if (remaining < 8) throw Error(path + ": truncated before storage '" + k->text + "'");
    int64_t numel = 0;
    std::memcpy(&numel, p, 8);
    p += 8;
    remaining -= 8;
    torch::Tensor& t = it->second;
    if (numel != t.numel())
      throw Error(path + ": storage '" + k->text + "' holds " + std::to_string(numel) + " elements, declared " + std::to_string(t.numel()));
    const size_t bytes = static_cast<size_t>(numel) * t.element_size();
    if (bytes > remaining) throw Error(path + ": storage '" + k->text + "' is truncated");
    if (bytes) std::memcpy(t.data_ptr(), p, bytes);
    p += bytes;
    remaining -= bytes;
  }
  return value;
}

}  // namespace

bool looks_like_torch_checkpoint(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  uint8_t head[4] = {0, 0, 0, 0};
  in.read(reinterpret_cast<char*>(head), 4);
  return starts_with_zip_magic(head, 4) || (head[0] == 0x80 && head[1] == 0x02 && head[2] == 0x8a);
}

pickle::ValuePtr read_torch_checkpoint(const std::string& path) {
  MappedFile file(path);
  if (starts_with_zip_magic(file.data(), file.size())) return read_zip(path);
  if (file.size() >= 2 && file.data()[0] == 0x80) return read_legacy(file);
  throw Error(path + ": not a torch checkpoint (neither a zip archive nor a legacy pickle)");
}

}  // namespace vavae::io
