#include "vavae/io/torch_writer.h"

#include <cstring>
#include <filesystem>

#include "vavae/common/error.h"
#include "vavae/io/zip.h"

namespace vavae::io {
namespace {

// Protocol 2 pickle opcodes, the few torch.save uses for a dict of tensors.
struct Pickle {
  std::string out = std::string("\x80\x02", 2);
  void global(const std::string& module, const std::string& name) { out += "c" + module + "\n" + name + "\n"; }
  void text(const std::string& s) {
    out += 'X';
    for (int i = 0; i < 4; ++i) out += static_cast<char>((s.size() >> (8 * i)) & 0xff);
    out += s;
  }
  void integer(int64_t v) {
    if (v < 0 || v > 0x7fffffff) throw Error("torch writer: size " + std::to_string(v) + " does not fit a 32-bit pickle integer");
    out += 'J';
    for (int i = 0; i < 4; ++i) out += static_cast<char>((v >> (8 * i)) & 0xff);
  }
  void int_tuple(at::IntArrayRef values) {
    out += '(';
    for (int64_t v : values) integer(v);
    out += 't';
  }
};

const char* storage_class(torch::ScalarType t) {
  switch (t) {
    case torch::kFloat32: return "FloatStorage";
    case torch::kFloat64: return "DoubleStorage";
    case torch::kFloat16: return "HalfStorage";
    case torch::kBFloat16: return "BFloat16Storage";
    case torch::kInt64: return "LongStorage";
    case torch::kInt32: return "IntStorage";
    case torch::kUInt8: return "ByteStorage";
    case torch::kBool: return "BoolStorage";
    default: throw Error(std::string("torch writer: no storage class for ") + c10::toString(t));
  }
}

}  // namespace

void write_torch_dict(const std::string& path, const NamedTensors& tensors) {
  const std::string archive = std::filesystem::path(path).stem().string();
  Pickle p;
  p.out += "}(";  // EMPTY_DICT, MARK ... SETITEMS
  std::vector<std::pair<std::string, std::string>> entries;
  for (size_t i = 0; i < tensors.size(); ++i) {
    const torch::Tensor t = tensors[i].second.detach().to(torch::kCPU).contiguous();
    const std::string key = std::to_string(i);
    p.text(tensors[i].first);
    p.global("torch._utils", "_rebuild_tensor_v2");
    p.out += '(';
    p.out += '(';  // the persistent id ('storage', class, key, location, numel)
    p.text("storage");
    p.global("torch", storage_class(t.scalar_type()));
    p.text(key);
    p.text("cpu");
    p.integer(t.numel());
    p.out += "tQ";
    p.integer(0);  // storage offset
    p.int_tuple(t.sizes());
    p.int_tuple(t.strides());
    p.out += '\x89';  // requires_grad False
    p.global("collections", "OrderedDict");
    p.out += ")R";  // empty backward hooks
    p.out += "tR";
    entries.emplace_back(archive + "/data/" + key,
                         std::string(static_cast<const char*>(t.data_ptr()), static_cast<size_t>(t.numel()) * t.element_size()));
  }
  p.out += "u.";
  entries.insert(entries.begin(), {archive + "/data.pkl", p.out});
  entries.insert(entries.begin() + 1, {archive + "/byteorder", "little"});
  entries.emplace_back(archive + "/version", "3\n");
  write_zip_stored(path, entries);
}

}  // namespace vavae::io
