#include "vavae/io/pickle.h"

#include <cstring>
#include <unordered_map>

#include "vavae/common/error.h"
#include "vavae/common/runtime.h"

namespace vavae::io::pickle {
namespace {

ValuePtr make(Value::Kind kind) {
  auto v = std::make_shared<Value>();
  v->kind = kind;
  return v;
}
ValuePtr make_int(int64_t i) {
  auto v = make(Value::Kind::Int);
  v->integer = i;
  return v;
}
ValuePtr make_text(Value::Kind kind, std::string s) {
  auto v = make(kind);
  v->text = std::move(s);
  return v;
}

class Machine {
 public:
  Machine(const uint8_t* data, size_t size, const StorageLoader& loader, const std::string& context)
      : data_(data), size_(size), loader_(loader), context_(context) {}

  Unpickled run() {
    for (;;) {
      const uint8_t op = byte();
      switch (op) {
        case 0x80: byte(); break;                 // PROTO
        case 0x95: bytes(8); break;               // FRAME: framing is only a hint
        case '.': return finish();                // STOP
        case '(': charge(1); marks_.push_back(stack_.size()); break;
        case '0': pop(); break;
        case '1': pop_mark(); break;
        case '2': push(top()); break;             // DUP
        case 'N': push(make(Value::Kind::None)); break;
        case 0x88: push_bool(true); break;
        case 0x89: push_bool(false); break;
        case 'J': push(make_int(static_cast<int32_t>(le(4)))); break;
        case 'K': push(make_int(static_cast<int64_t>(le(1)))); break;
        case 'M': push(make_int(static_cast<int64_t>(le(2)))); break;
        case 0x8a: push_long(le(1)); break;       // LONG1
        case 0x8b: push_long(le(4)); break;       // LONG4
        case 'I': push_text_int(line()); break;
        case 'L': push_text_int(line()); break;
        case 'G': push_float_be(); break;
        case 'F': push_float_text(line()); break;
        case 'X': push(make_text(Value::Kind::String, bytes(le(4)))); break;
        case 0x8c: push(make_text(Value::Kind::String, bytes(le(1)))); break;
        case 0x8d: push(make_text(Value::Kind::String, bytes(le(8)))); break;
        case 'V': push(make_text(Value::Kind::String, line())); break;
        case 'T': push(make_text(Value::Kind::String, bytes(le(4)))); break;
        case 'U': push(make_text(Value::Kind::String, bytes(le(1)))); break;
        case 'B': push(make_text(Value::Kind::Bytes, bytes(le(4)))); break;
        case 'C': push(make_text(Value::Kind::Bytes, bytes(le(1)))); break;
        case 0x8e: push(make_text(Value::Kind::Bytes, bytes(le(8)))); break;
        case 0x96: push(make_text(Value::Kind::Bytes, bytes(le(8)))); break;
        case ')': push(make(Value::Kind::Tuple)); break;
        case 't': push(sequence(Value::Kind::Tuple, pop_mark())); break;
        case 0x85: push(tuple_of(1)); break;
        case 0x86: push(tuple_of(2)); break;
        case 0x87: push(tuple_of(3)); break;
        case ']': push(make(Value::Kind::List)); break;
        case 'l': push(sequence(Value::Kind::List, pop_mark())); break;
        case 'a': { auto v = pop(); append_to(top(), {v}); break; }
        case 'e': { auto vs = pop_mark(); append_to(top(), vs); break; }
        case 0x8f: push(make(Value::Kind::List)); break;          // EMPTY_SET: kept as a list
        case 0x90: { auto vs = pop_mark(); append_to(top(), vs); break; }  // ADDITEMS
        case 0x91: push(sequence(Value::Kind::List, pop_mark())); break;   // FROZENSET
        case '}': push(make(Value::Kind::Dict)); break;
        case 'd': { auto d = make(Value::Kind::Dict); set_items(d, pop_mark()); push(d); break; }
        case 's': { auto v = pop(); auto k = pop(); set_items(top(), {k, v}); break; }
        case 'u': { auto kv = pop_mark(); set_items(top(), kv); break; }
        case 'c': { auto module = line(); auto name = line(); push(make_text(Value::Kind::Global, module + "." + name)); break; }
        case 0x93: {  // STACK_GLOBAL
          auto name = pop();
          auto module = pop();
          if (!name->is_string() || !module->is_string()) fail("STACK_GLOBAL needs two strings");
          push(make_text(Value::Kind::Global, module->text + "." + name->text));
          break;
        }
        case 'R': { auto args = pop(); auto callable = pop(); push(reduce(callable, args)); break; }
        case 'b': { auto state = pop(); build(top(), state); break; }
        case 0x81: { auto args = pop(); auto cls = pop(); push(placeholder(cls->text, args)); break; }
        case 0x92: { pop(); auto args = pop(); auto cls = pop(); push(placeholder(cls->text, args)); break; }
        case 'i': { auto module = line(); auto name = line(); push(placeholder(module + "." + name, sequence(Value::Kind::Tuple, pop_mark()))); break; }
        case 'o': { auto vs = pop_mark(); if (vs.empty()) fail("OBJ without a class"); auto cls = vs.front(); vs.erase(vs.begin()); push(placeholder(cls->text, sequence(Value::Kind::Tuple, vs))); break; }
        case 'q': memo_[le(1)] = top(); break;
        case 'r': memo_[le(4)] = top(); break;
        case 'p': memo_[memo_id(line())] = top(); break;
        case 0x94: { const uint64_t id = memo_.size(); memo_[id] = top(); break; }
        case 'h': push(memo(le(1))); break;
        case 'j': push(memo(le(4))); break;
        case 'g': push(memo(memo_id(line()))); break;
        case 'Q': push(persistent_load(pop())); break;
        case 'P': fail("text persistent ids (PERSID) are not used by PyTorch checkpoints");
        default: fail("unsupported pickle opcode 0x" + hex(op));
      }
    }
  }

 private:
  [[noreturn]] void fail(const std::string& what) const {
    throw Error(context_ + ": " + what + " (at byte " + std::to_string(pos_) + " of the pickle)");
  }
  static std::string hex(uint8_t b) {
    const char* digits = "0123456789abcdef";
    return std::string{digits[b >> 4], digits[b & 15]};
  }

  uint8_t byte() {
    if (pos_ >= size_) fail("pickle ends without STOP");
    return data_[pos_++];
  }
  std::string bytes(uint64_t n) {
    if (n > size_ - pos_) fail("a string of " + std::to_string(n) + " bytes runs past the end of the data");
    std::string s(reinterpret_cast<const char*>(data_ + pos_), n);
    pos_ += n;
    return s;
  }
  uint64_t le(int n) {
    const std::string b = bytes(n);
    uint64_t v = 0;
    for (int i = n - 1; i >= 0; --i) v = (v << 8) | static_cast<uint8_t>(b[i]);
    return v;
  }
  std::string line() {
    const void* nl = std::memchr(data_ + pos_, '\n', size_ - pos_);
    if (!nl) fail("unterminated text argument");
    const size_t n = static_cast<const uint8_t*>(nl) - (data_ + pos_);
    std::string s = bytes(n);
    ++pos_;
    return s;
  }

  void push(ValuePtr v) {
    charge(1);
    stack_.push_back(std::move(v));
  }
  // Every value and item slot the pickle makes is paid for from a budget proportional to its size.
  void charge(size_t units) {
    units_ += units;
    if (units_ > budget_)
      fail("the pickle builds more values than its " + std::to_string(size_) + " bytes can justify (over " +
           std::to_string(budget_) + "); refusing to amplify memory");
  }
  uint64_t memo_id(const std::string& text) {
    if (text.empty() || text.size() > 18 || text.find_first_not_of("0123456789") != std::string::npos)
      fail("bad memo key '" + text.substr(0, 40) + "'");
    return std::stoull(text);
  }
  ValuePtr pop() {
    if (stack_.empty() || (!marks_.empty() && stack_.size() <= marks_.back())) fail("pickle stack underflow");
    ValuePtr v = std::move(stack_.back());
    stack_.pop_back();
    return v;
  }
  ValuePtr top() {
    if (stack_.empty()) fail("pickle stack underflow");
    return stack_.back();
  }
  std::vector<ValuePtr> pop_mark() {
    if (marks_.empty()) fail("pickle MARK missing");
    const size_t m = marks_.back();
    marks_.pop_back();
    std::vector<ValuePtr> vs(stack_.begin() + static_cast<std::ptrdiff_t>(m), stack_.end());
    stack_.resize(m);
    return vs;
  }
  ValuePtr memo(uint64_t id) {
    auto it = memo_.find(id);
    if (it == memo_.end()) fail("memo entry " + std::to_string(id) + " read before it was written");
    return it->second;
  }

  void push_bool(bool b) {
    auto v = make(Value::Kind::Bool);
    v->boolean = b;
    push(v);
  }
  void push_long(uint64_t n) {
    std::string raw = bytes(n);
    if (n <= 8) {
      uint64_t u = 0;
      for (size_t i = n; i-- > 0;) u = (u << 8) | static_cast<uint8_t>(raw[i]);
      if (n > 0 && n < 8 && (static_cast<uint8_t>(raw[n - 1]) & 0x80)) u |= ~uint64_t{0} << (8 * n);  // sign-extend
      push(make_int(static_cast<int64_t>(u)));
    } else {
      push(make_text(Value::Kind::BigInt, std::move(raw)));
    }
  }
  void push_text_int(const std::string& s) {
    if (s == "01" || s == "00") return push_bool(s == "01");
    if (s.empty()) fail("empty text integer");
    try {
      push(make_int(std::stoll(s.back() == 'L' ? s.substr(0, s.size() - 1) : s)));
    } catch (const std::exception&) {
      fail("bad text integer '" + s + "'");
    }
  }
  void push_float_be() {
    uint64_t u = 0;
    const std::string b = bytes(8);
    for (char c : b) u = (u << 8) | static_cast<uint8_t>(c);
    auto v = make(Value::Kind::Float);
    std::memcpy(&v->real, &u, 8);
    push(v);
  }
  void push_float_text(const std::string& s) {
    auto v = make(Value::Kind::Float);
    try {
      v->real = std::stod(s);
    } catch (const std::exception&) {
      fail("bad text float '" + s + "'");
    }
    push(v);
  }

  // Puts items into a container, keeping depth exact: a container that is already nested never
  // changes again, so no cycle can form and no ancestor's depth goes stale.
  void adopt(const ValuePtr& container, const std::vector<ValuePtr>& items) {
    if (container->nested) fail("a container is modified after being nested in another (a recursive structure)");
    charge(items.size());
    for (const auto& item : items) {
      if (item.get() == container.get()) fail("a container is put inside itself");
      item->nested = true;
      container->depth = std::max(container->depth, item->depth + 1);
    }
    if (container->depth > kMaxDepth) fail("values nested deeper than " + std::to_string(kMaxDepth) + " levels");
  }
  void add_items(const ValuePtr& container, const std::vector<ValuePtr>& items) {
    adopt(container, items);
    container->items.insert(container->items.end(), items.begin(), items.end());
  }
  ValuePtr sequence(Value::Kind kind, const std::vector<ValuePtr>& items) {
    auto v = make(kind);
    add_items(v, items);
    return v;
  }
  ValuePtr tuple_of(int n) {
    std::vector<ValuePtr> items(n);
    for (int i = n - 1; i >= 0; --i) items[i] = pop();
    return sequence(Value::Kind::Tuple, std::move(items));
  }
  void append_to(const ValuePtr& list, const std::vector<ValuePtr>& vs) {
    if (list->kind == Value::Kind::Object) return;  // inert: a placeholder list subclass
    if (list->kind != Value::Kind::List) fail("APPEND to a non-list");
    add_items(list, vs);
  }
  void set_items(const ValuePtr& dict, const std::vector<ValuePtr>& kv) {
    if (kv.size() % 2) fail("odd number of dict items");
    if (dict->kind == Value::Kind::Object) return;  // inert: a placeholder dict subclass
    if (dict->kind != Value::Kind::Dict) fail("SETITEM on a non-dict");
    adopt(dict, kv);
    for (size_t i = 0; i < kv.size(); i += 2) dict->entries.emplace_back(kv[i], kv[i + 1]);
  }

  ValuePtr placeholder(const std::string& type_name, const ValuePtr& args) {
    auto v = make_text(Value::Kind::Object, type_name);
    add_items(v, {args});
    return v;
  }

  void build(const ValuePtr& target, const ValuePtr& state) {
    // Only placeholders keep their state; on real values (tensors, dicts) BUILD would call Python
    // code (__setstate__) that we deliberately do not emulate.
    if (target->kind == Value::Kind::Object && !target->nested) add_items(target, {state});
  }

  const ValuePtr& arg(const ValuePtr& args, size_t i, const char* fn) {
    if (args->kind != Value::Kind::Tuple || args->items.size() <= i)
      fail(std::string(fn) + " called with too few arguments");
    return args->items[i];
  }
  std::vector<int64_t> int_tuple(const ValuePtr& v, const char* what) {
    if (v->kind != Value::Kind::Tuple && v->kind != Value::Kind::List) fail(std::string(what) + " is not a tuple");
    std::vector<int64_t> out;
    for (const auto& i : v->items) {
      if (i->kind != Value::Kind::Int) fail(std::string(what) + " holds a non-integer");
      out.push_back(i->integer);
    }
    return out;
  }

  ValuePtr rebuild_tensor(const ValuePtr& args, const char* fn) {
    const ValuePtr& storage = arg(args, 0, fn);
    if (storage->kind != Value::Kind::Storage) fail(std::string(fn) + ": first argument is not a storage");
    const ValuePtr& offset = arg(args, 1, fn);
    if (offset->kind != Value::Kind::Int) fail(std::string(fn) + ": storage offset is not an integer");
    const auto sizes = int_tuple(arg(args, 2, fn), "tensor size");
    const auto strides = int_tuple(arg(args, 3, fn), "tensor stride");
    if (sizes.size() != strides.size()) fail(std::string(fn) + ": size and stride differ in length");
    const int64_t numel = storage->tensor.numel();
    if (offset->integer < 0) fail(std::string(fn) + ": negative storage offset");
    // The highest element index the view touches, in checked arithmetic: a wrapped sum would let a
    // view start before its storage.
    int64_t last = offset->integer;
    int64_t view_numel = 1;
    bool empty = false;
    for (size_t d = 0; d < sizes.size(); ++d) {
      if (sizes[d] < 0 || strides[d] < 0) fail(std::string(fn) + ": negative size or stride");
      if (sizes[d] == 0) empty = true;
      int64_t reach = 0;
      if (__builtin_mul_overflow(sizes[d] == 0 ? 0 : sizes[d] - 1, strides[d], &reach) ||
          __builtin_add_overflow(last, reach, &last) || __builtin_mul_overflow(view_numel, sizes[d], &view_numel))
        fail(std::string(fn) + ": view size " + shape_string(sizes) + " with stride " + shape_string(strides) + " overflows");
    }
    if (!empty && last >= numel)
      fail(std::string(fn) + ": view reaches element " + std::to_string(last) + " of a storage of " + std::to_string(numel));
    // A view larger than its storage (stride 0) would materialise into more memory than the file holds.
    if (view_numel > numel)
      fail(std::string(fn) + ": a view of " + std::to_string(view_numel) + " elements over a storage of " + std::to_string(numel));
    auto v = make(Value::Kind::Tensor);
    // as_strided's offset is absolute in the underlying storage; a legacy storage view starts inside it.
    v->tensor = storage->tensor.as_strided(sizes, strides, storage->tensor.storage_offset() + offset->integer);
    return v;
  }

  ValuePtr reduce(const ValuePtr& callable, const ValuePtr& args) {
    if (callable->kind != Value::Kind::Global) return placeholder("<call of a non-global>", args);
    const std::string& name = callable->text;
    if (name == "collections.OrderedDict" || name == "builtins.dict") return make(Value::Kind::Dict);
    if (name == "torch._utils._rebuild_tensor_v2" || name == "torch._utils._rebuild_tensor")
      return rebuild_tensor(args, name.c_str());
    if (name == "torch._utils._rebuild_parameter" || name == "torch._utils._rebuild_parameter_with_state") {
      const ValuePtr& data = arg(args, 0, name.c_str());
      if (data->kind != Value::Kind::Tensor) fail(name + ": data is not a tensor");
      return data;
    }
    if (name == "torch._tensor._rebuild_from_type_v2") {
      // (func, new_type, func_args, state): the tensor subclass is dropped, the data kept. Nesting
      // is bounded by kMaxDepth, and the unwrapping is a loop, not a recursion.
      ValuePtr inner_callable = arg(args, 0, name.c_str()), inner_args = arg(args, 2, name.c_str());
      while (inner_callable->kind == Value::Kind::Global && inner_callable->text == name) {
        const ValuePtr next_args = inner_args;
        inner_callable = arg(next_args, 0, name.c_str());
        inner_args = arg(next_args, 2, name.c_str());
      }
      return reduce(inner_callable, inner_args);
    }
    return placeholder(name, args);
  }

  ValuePtr persistent_load(const ValuePtr& pid) {
    if (pid->kind != Value::Kind::Tuple || pid->items.size() < 5 || !pid->items[0]->is_string() ||
        pid->items[0]->text != "storage")
      fail("unknown persistent id (expected ('storage', type, key, location, numel))");
    const auto& type = pid->items[1];
    const auto& key = pid->items[2];
    const auto& numel = pid->items[4];
    if (type->kind != Value::Kind::Global) fail("storage type is not a global");
    if (!key->is_string()) fail("storage key is not a string");
    if (numel->kind != Value::Kind::Int || numel->integer < 0) fail("storage size is not a non-negative integer");
    auto v = make(Value::Kind::Storage);
    v->text = key->text;
    v->tensor = loader_(key->text, storage_dtype(type->text, context_), numel->integer);
    if (pid->items.size() > 5 && pid->items[5]->kind == Value::Kind::Tuple) {
      // Legacy view metadata: (view_key, offset, size) into the base storage.
      const auto& view = pid->items[5]->items;
      if (view.size() != 3 || view[1]->kind != Value::Kind::Int || view[2]->kind != Value::Kind::Int)
        fail("malformed storage view metadata");
      const int64_t off = view[1]->integer, n = view[2]->integer;
      if (off < 0 || n < 0 || off > v->tensor.numel() - n) fail("storage view out of bounds");
      v->tensor = v->tensor.narrow(0, off, n);
    }
    return v;
  }

  Unpickled finish() {
    if (stack_.size() != 1) fail("pickle ends with " + std::to_string(stack_.size()) + " values on the stack");
    return {stack_.back(), pos_};
  }

  // Legitimate pickles make at most a few values per byte (every push costs an opcode byte).
  static constexpr size_t kUnitsPerByte = 16;
  static constexpr size_t kBaseUnits = 1u << 16;
  const uint8_t* data_;
  size_t size_;
  size_t pos_ = 0;
  const StorageLoader& loader_;
  const std::string& context_;
  std::vector<ValuePtr> stack_;
  std::vector<size_t> marks_;
  std::unordered_map<uint64_t, ValuePtr> memo_;
  size_t units_ = 0;
  const size_t budget_ = kBaseUnits + kUnitsPerByte * size_;
};

}  // namespace

torch::ScalarType storage_dtype(const std::string& storage_class, const std::string& context) {
  static const std::pair<const char*, torch::ScalarType> kTypes[] = {
      {"torch.DoubleStorage", torch::kFloat64}, {"torch.FloatStorage", torch::kFloat32},
      {"torch.HalfStorage", torch::kFloat16},   {"torch.BFloat16Storage", torch::kBFloat16},
      {"torch.LongStorage", torch::kInt64},     {"torch.IntStorage", torch::kInt32},
      {"torch.ShortStorage", torch::kInt16},    {"torch.CharStorage", torch::kInt8},
      {"torch.ByteStorage", torch::kUInt8},     {"torch.BoolStorage", torch::kBool},
  };
  for (const auto& [name, type] : kTypes)
    if (storage_class == name) return type;
  throw Error(context + ": unsupported storage type '" + storage_class + "'");
}

Unpickled unpickle(const uint8_t* data, size_t size, const StorageLoader& load_storage, const std::string& context) {
  return Machine(data, size, load_storage, context).run();
}

}  // namespace vavae::io::pickle
