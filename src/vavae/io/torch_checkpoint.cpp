#include "vavae/io/torch_checkpoint.h"

#include <cstring>
#include <fstream>
#include <map>
#include <set>

#include "vavae/common/checked.h"
#include "vavae/common/error.h"
#include "vavae/io/files.h"
#include "vavae/io/zip.h"

namespace vavae::io {
namespace {

bool starts_with_zip_magic(const uint8_t* p, size_t n) { return n >= 4 && std::memcmp(p, "PK\x03\x04", 4) == 0; }

// The legacy format's first pickle is this 80-bit magic number.
const uint8_t kLegacyMagic[] = {0x6c, 0xfc, 0x9c, 0x46, 0xf9, 0x20, 0x6a, 0xa8, 0x50, 0x19};

// PyTorch writes every record stored; a re-zipped (deflated) record may expand at most this much,
// so a small file cannot ask for a huge buffer.
constexpr uint64_t kMaxInflation = 64;
constexpr uint64_t kMaxPickleBytes = 1ull << 30;

uint64_t inflation_bound(const ZipArchive::Entry& e) {
  return e.method == 0 ? e.uncompressed : std::min<uint64_t>(e.compressed, ~uint64_t{0} / kMaxInflation) * kMaxInflation + 4096;
}

// The cache of storages a pickle references: a key always names one dtype and one length.
class StorageCache {
 public:
  explicit StorageCache(std::string path) : path_(std::move(path)) {}
  const torch::Tensor* find(const std::string& key, torch::ScalarType dtype, int64_t numel) const {
    auto it = storages_.find(key);
    if (it == storages_.end()) return nullptr;
    if (it->second.scalar_type() != dtype || it->second.numel() != numel)
      throw Error(path_ + ": storage '" + key + "' is referenced as " + std::to_string(numel) + " x " + c10::toString(dtype) +
                  " after " + std::to_string(it->second.numel()) + " x " + c10::toString(it->second.scalar_type()));
    return &it->second;
  }
  torch::Tensor& add(const std::string& key, torch::Tensor t) { return storages_[key] = std::move(t); }
  std::map<std::string, torch::Tensor>& all() { return storages_; }

 private:
  std::string path_;
  std::map<std::string, torch::Tensor> storages_;
};

pickle::ValuePtr read_zip(const std::shared_ptr<MappedFile>& file) {
  const std::string& path = file->path();
  const ZipArchive zip(file);
  if (zip.entries().empty()) throw Error(path + ": empty zip archive");
  // Records sit in one top folder named after the archive, as PyTorch's reader assumes.
  const std::string& first = zip.entries().front().name;
  const std::string prefix = first.substr(0, first.find('/') + 1);
  auto record = [&](const std::string& name) { return zip.find(prefix + name); };
  if (const auto* order = record("byteorder")) {
    const auto bytes = zip.read(*order, 16);
    const std::string text(reinterpret_cast<const char*>(bytes.data), bytes.size);
    if (text != "little") throw Error(path + ": byte order '" + text + "' is not supported (only little-endian)");
  }
  const auto* pkl_entry = record("data.pkl");
  if (!pkl_entry) throw Error(path + ": zip archive without " + prefix + "data.pkl: not a torch checkpoint");
  const auto pkl = zip.read(*pkl_entry, std::min(kMaxPickleBytes, inflation_bound(*pkl_entry)));
  StorageCache storages(path);
  pickle::StorageLoader load = [&](const std::string& key, torch::ScalarType dtype, int64_t numel) {
    if (const torch::Tensor* cached = storages.find(key, dtype, numel)) return *cached;
    const auto* entry = record("data/" + key);
    if (!entry) throw Error(path + ": storage record '" + prefix + "data/" + key + "' is missing");
    const uint64_t expected = static_cast<uint64_t>(checked_mul(numel, static_cast<int64_t>(c10::elementSize(dtype)), path + ": storage '" + key + "'"));
    if (entry->uncompressed != expected)
      throw Error(path + ": storage '" + key + "' has " + std::to_string(entry->uncompressed) + " bytes, expected " +
                  std::to_string(expected) + " for " + std::to_string(numel) + " elements of " + c10::toString(dtype));
    const auto bytes = zip.read(*entry, std::min(expected, inflation_bound(*entry)));
    torch::Tensor t = torch::empty({numel}, torch::TensorOptions().dtype(dtype));
    if (bytes.size) std::memcpy(t.data_ptr(), bytes.data, bytes.size);
    return storages.add(key, std::move(t));
  };
  return pickle::unpickle(pkl.data, pkl.size, load, path).value;
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
  // A storage is allocated when declared (views are built on it while unpickling), so its size is
  // first checked against the bytes that are left in the file to fill it.
  StorageCache storages(path);
  uint64_t declared_bytes = 0;
  pickle::StorageLoader declare = [&](const std::string& key, torch::ScalarType dtype, int64_t numel) {
    if (const torch::Tensor* cached = storages.find(key, dtype, numel)) return *cached;
    const int64_t bytes = checked_mul(numel, static_cast<int64_t>(c10::elementSize(dtype)), path + ": storage '" + key + "'");
    declared_bytes += static_cast<uint64_t>(bytes);
    if (declared_bytes > remaining)
      throw Error(path + ": storage '" + key + "' declares " + std::to_string(numel) + " elements of " + c10::toString(dtype) +
                  ", more than the file's remaining " + std::to_string(remaining) + " bytes can hold");
    return storages.add(key, torch::empty({numel}, torch::TensorOptions().dtype(dtype)));
  };
  auto value = next(declare);
  auto keys = next(no_storage);
  if (keys->kind != pickle::Value::Kind::List) throw Error(path + ": legacy storage key list missing");
  std::set<std::string> filled;
  for (const auto& k : keys->items) {
    if (!k->is_string()) throw Error(path + ": legacy storage key is not a string");
    auto it = storages.all().find(k->text);
    if (it == storages.all().end()) throw Error(path + ": storage '" + k->text + "' listed but never used");
    if (!filled.insert(k->text).second) throw Error(path + ": storage '" + k->text + "' listed twice");
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
  for (const auto& [key, t] : storages.all())
    if (!filled.count(key)) throw Error(path + ": storage '" + key + "' is declared but its data is not in the file");
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
  auto file = std::make_shared<MappedFile>(path);
  if (starts_with_zip_magic(file->data(), file->size())) return read_zip(file);
  if (file->size() >= 2 && file->data()[0] == 0x80) return read_legacy(*file);
  throw Error(path + ": not a torch checkpoint (neither a zip archive nor a legacy pickle)");
}

}  // namespace vavae::io
