#include "vavae/nn/convolution.h"

#include <algorithm>
#include <array>
#include <atomic>
#include <cstdlib>
#include <map>
#include <mutex>
#include <optional>
#include <tuple>
#include <utility>
#include <vector>

#include "vavae/common/error.h"
#include "vavae/common/precision.h"
#include "vavae/common/runtime.h"

#ifdef VAVAE_WITH_ONEDNN
#include <oneapi/dnnl/dnnl.hpp>
#endif

namespace vavae::nn {
namespace {

// Below 16x16 pixels the transforms cost what the saved multiplications gain (oneDNN 2.6, AVX-512,
// forward and backward against the direct kernel: 0.4x at 4x4, 0.7-1.1x at 8x8, 1.4-1.6x at 16x16,
// 1.6-2.4x from 32x32).
constexpr int64_t kMinWinogradSide = 16;
// Convolutions with fewer channels (an RGB input or output layer) are a sliver of the work and fill
// a fraction of the vector width.
constexpr int64_t kMinWinogradChannels = 16;

std::atomic<int64_t> band_bytes{kDefaultWinogradBandBytes};

#ifdef VAVAE_WITH_ONEDNN
using dnnl::memory;
using Tag = memory::format_tag;

dnnl::engine& cpu_engine() {
  static dnnl::engine engine(dnnl::engine::kind::cpu, 0);
  return engine;
}

// The primitives of one band geometry (their scratchpad: `scratchpad` below). The input gradient is
// the forward convolution of the output gradient with the transposed, flipped weights.
struct Kernels {
  dnnl::convolution_forward::primitive_desc forward_pd;
  dnnl::convolution_backward_weights::primitive_desc weight_grad_pd;
};

// A band: `input_rows` rows of the input (the band's output rows and their halo inside the image)
// and zero padding where the band meets the image's top or bottom edge.
struct Geometry {
  int64_t n, in, out, input_rows, w, pad_top, pad_bottom;
  bool operator<(const Geometry& o) const {
    return std::tie(n, in, out, input_rows, w, pad_top, pad_bottom) <
           std::tie(o.n, o.in, o.out, o.input_rows, o.w, o.pad_top, o.pad_bottom);
  }
};

memory::desc plain(memory::dims dims, Tag tag) { return memory::desc(std::move(dims), memory::data_type::f32, tag); }

memory::desc any_layout(memory::dims dims) { return memory::desc(std::move(dims), memory::data_type::f32, Tag::any); }

dnnl::primitive_attr user_scratchpad() {
  dnnl::primitive_attr attr;
  attr.set_scratchpad_mode(dnnl::scratchpad_mode::user);
  return attr;
}

// A 3x3 stride-1 convolution of `input_rows` x w images from `in` to `out` channels, zero padding of
// one column on each side and of pad_top / pad_bottom rows.
struct Shape3x3 {
  memory::dims src, weights, bias, dst, stride, pad_before, pad_after;
  Shape3x3(int64_t n, int64_t in, int64_t out, int64_t input_rows, int64_t w, int64_t pad_top, int64_t pad_bottom)
      : src{n, in, input_rows, w}, weights{out, in, 3, 3}, bias{out}, dst{n, out, input_rows + pad_top + pad_bottom - 2, w},
        stride{1, 1}, pad_before{pad_top, 1}, pad_after{pad_bottom, 1} {}
};

// The forward kernel of `alg` for `s`, layouts left to oneDNN; empty where it has none.
dnnl::convolution_forward::primitive_desc forward_kernel(dnnl::algorithm alg, const Shape3x3& s) {
  const auto forward = dnnl::convolution_forward::desc(dnnl::prop_kind::forward_training, alg, any_layout(s.src), any_layout(s.weights),
                                                       plain(s.bias, Tag::x), any_layout(s.dst), s.stride, s.pad_before, s.pad_after);
  return dnnl::convolution_forward::primitive_desc(forward, user_scratchpad(), cpu_engine(), /*allow_empty=*/true);
}

// Kernels for `g`, or nullopt where oneDNN has no Winograd implementation for it (CPUs without
// AVX-512).
std::optional<Kernels> create_kernels(const Geometry& g) {
  const Shape3x3 s(g.n, g.in, g.out, g.input_rows, g.w, g.pad_top, g.pad_bottom);
  const auto alg = dnnl::algorithm::convolution_winograd;
  Kernels k;
  k.forward_pd = forward_kernel(alg, s);
  if (!k.forward_pd) return std::nullopt;
  const auto weight_grad = dnnl::convolution_backward_weights::desc(alg, any_layout(s.src), any_layout(s.weights), plain(s.bias, Tag::x),
                                                                    any_layout(s.dst), s.stride, s.pad_before, s.pad_after);
  k.weight_grad_pd = dnnl::convolution_backward_weights::primitive_desc(weight_grad, user_scratchpad(), cpu_engine(), k.forward_pd, true);
  if (!k.weight_grad_pd) return std::nullopt;
  return k;
}

// create(key), made once per key and kept for the process (primitive descriptors are cheap to keep
// and slow to make); nullptr where create found no kernel.
template <typename Value, typename Key>
const Value* memoised(const Key& key, std::optional<Value> (*create)(const Key&)) {
  static std::mutex mutex;
  static std::map<Key, std::optional<Value>> cache;
  const std::lock_guard<std::mutex> lock(mutex);
  auto it = cache.find(key);
  if (it == cache.end()) it = cache.emplace(key, create(key)).first;
  return it->second ? &*it->second : nullptr;
}

const Kernels* kernels_for(const Geometry& g) { return memoised(g, &create_kernels); }

// Output rows [first_row, first_row + rows), computed from input rows [input_first_row, ...).
struct Band {
  int64_t first_row, rows, input_first_row;
  const Kernels* kernels;
};

// The bands of a convolution from `in` to `out` channels of [n, ·, h, w] images; empty where oneDNN
// has no Winograd kernel for one of them. Bands are a power of two rows high (at least 8): they
// split the usual image sizes evenly, and oneDNN 2.6 runs bands of other heights (28 or 60 rows with
// a short last one) up to 20% slower. A remainder under one 4-row tile joins the last band.
std::vector<Band> bands_of(int64_t n, int64_t in, int64_t out, int64_t h, int64_t w) {
  const int64_t row_bytes = n * std::max(in, out) * w * static_cast<int64_t>(sizeof(float));
  int64_t rows_per_band = 8;
  while (rows_per_band * 2 + 2 <= band_bytes.load() / row_bytes) rows_per_band *= 2;
  std::vector<Band> bands;
  for (int64_t first = 0; first < h;) {
    int64_t rows = std::min(rows_per_band, h - first);
    if (h - first - rows < 4) rows = h - first;
    const int64_t pad_top = first == 0, pad_bottom = first + rows == h;
    const Geometry g{n, in, out, rows + 2 - pad_top - pad_bottom, w, pad_top, pad_bottom};
    const Kernels* k = kernels_for(g);
    if (!k) return {};
    bands.push_back({first, rows, first - 1 + pad_top, k});
    first += rows;
  }
  return bands;
}

// Bytes from LibTorch's allocator laid out as `desc`: the tensor owns the memory.
torch::Tensor buffer(const memory::desc& desc) {
  return torch::empty({static_cast<int64_t>(desc.get_size())}, torch::TensorOptions().dtype(torch::kUInt8));
}

// Buffers that live only during one band (the kernels' scratchpad of transformed tiles, about 4.5x
// the band's input; blocked copies of inputs, outputs and output gradients), kept per thread and
// grown, not allocated per call: fresh pages for them cost more than Winograd saves.
enum class Workspace { scratchpad, input, output, output_grad, weights, count };

torch::Tensor workspace(Workspace slot, const memory::desc& desc) {
  thread_local std::array<torch::Tensor, static_cast<size_t>(Workspace::count)> buffers;
  torch::Tensor& b = buffers[static_cast<size_t>(slot)];
  const auto bytes = static_cast<int64_t>(desc.get_size());
  if (!b.defined() || b.numel() < bytes) {
    b = torch::Tensor();  // the old one goes first: the peak is the new size alone
    b = torch::empty({bytes}, torch::TensorOptions().dtype(torch::kUInt8));
  }
  return b;
}

memory view(const memory::desc& desc, const torch::Tensor& t) { return memory(desc, cpu_engine(), t.data_ptr()); }
memory scratchpad(const memory::desc& desc) { return view(desc, workspace(Workspace::scratchpad, desc)); }

dnnl::stream& cpu_stream() {
  thread_local dnnl::stream stream(cpu_engine());
  return stream;
}

void reorder(memory from, memory to) { dnnl::reorder(from, to).execute(cpu_stream(), from, to); }

memory::dims dims_of(const torch::Tensor& t) { return memory::dims(t.sizes().begin(), t.sizes().end()); }

// `count` rows from `first` of a contiguous [N, C, H, W] fp32 tensor, in place.
memory rows_of(const torch::Tensor& t, int64_t first, int64_t count) {
  const int64_t c = t.size(1), h = t.size(2), w = t.size(3);
  const memory::desc desc({t.size(0), c, count, w}, memory::data_type::f32, memory::dims{c * h * w, h * w, w, 1});
  return memory(desc, cpu_engine(), t.data_ptr<float>() + first * w);
}

// Rows of `t` laid out as `desc` in the workspace `slot`.
torch::Tensor blocked_rows(const torch::Tensor& t, int64_t first, const memory::desc& desc, Workspace slot) {
  torch::Tensor out = workspace(slot, desc);
  reorder(rows_of(t, first, desc.dims()[2]), view(desc, out));
  return out;
}

// Weights [O, I, 3, 3] laid out as `desc`: `weight` itself when it already is.
torch::Tensor blocked_weights(const torch::Tensor& weight, const memory::desc& desc) {
  const memory::desc oihw = plain(dims_of(weight), Tag::oihw);
  if (oihw == desc) return weight;
  torch::Tensor out = buffer(desc);
  reorder(view(oihw, weight), view(desc, out));
  return out;
}

// Rows [first_row, first_row + pd's output rows) of y = conv(x's rows from input_first_row, w) + bias,
// `w` laid out as pd wants it; x and y contiguous [N, C, H, W].
void forward_rows(const dnnl::convolution_forward::primitive_desc& pd, const torch::Tensor& x, int64_t input_first_row,
                  const torch::Tensor& w, const torch::Tensor& bias, const torch::Tensor& y, int64_t first_row) {
  const torch::Tensor src = blocked_rows(x, input_first_row, pd.src_desc(), Workspace::input);
  const torch::Tensor dst = workspace(Workspace::output, pd.dst_desc());
  dnnl::convolution_forward(pd).execute(cpu_stream(), {{DNNL_ARG_SRC, view(pd.src_desc(), src)},
                                                       {DNNL_ARG_WEIGHTS, view(pd.weights_desc(), w)},
                                                       {DNNL_ARG_BIAS, view(plain({bias.size(0)}, Tag::x), bias)},
                                                       {DNNL_ARG_DST, view(pd.dst_desc(), dst)},
                                                       {DNNL_ARG_SCRATCHPAD, scratchpad(pd.scratchpad_desc())}});
  reorder(view(pd.dst_desc(), dst), rows_of(y, first_row, pd.dst_desc().dims()[2]));
}

// y = conv(x, weight) + bias over `bands`; all three contiguous, `bias` defined.
torch::Tensor banded_forward(const std::vector<Band>& bands, const torch::Tensor& x, const torch::Tensor& weight,
                             const torch::Tensor& bias) {
  torch::Tensor y = torch::empty({x.size(0), weight.size(0), x.size(2), x.size(3)}, x.options());
  torch::Tensor w;
  memory::desc w_desc;
  for (const Band& band : bands) {
    const auto& pd = band.kernels->forward_pd;
    if (!w.defined() || w_desc != pd.weights_desc()) w = blocked_weights(weight, w_desc = pd.weights_desc());
    forward_rows(pd, x, band.input_first_row, w, bias, y, band.first_row);
  }
  return y;
}

// The gradients of sum(conv(x, weight) * dy) with respect to weight and bias, band by band.
std::pair<torch::Tensor, torch::Tensor> banded_weight_grad(const std::vector<Band>& bands, const torch::Tensor& x,
                                                           const torch::Tensor& dy, const at::IntArrayRef weight_sizes) {
  torch::Tensor dw, db;
  for (const Band& band : bands) {
    const auto& pd = band.kernels->weight_grad_pd;
    const torch::Tensor src = blocked_rows(x, band.input_first_row, pd.src_desc(), Workspace::input);
    const torch::Tensor g = blocked_rows(dy, band.first_row, pd.diff_dst_desc(), Workspace::output_grad);
    const torch::Tensor band_dw = buffer(pd.diff_weights_desc());
    const torch::Tensor band_db = torch::empty({dy.size(1)}, dy.options());
    dnnl::convolution_backward_weights(pd).execute(cpu_stream(), {{DNNL_ARG_SRC, view(pd.src_desc(), src)},
                                                                  {DNNL_ARG_DIFF_DST, view(pd.diff_dst_desc(), g)},
                                                                  {DNNL_ARG_DIFF_WEIGHTS, view(pd.diff_weights_desc(), band_dw)},
                                                                  {DNNL_ARG_DIFF_BIAS, view(plain({dy.size(1)}, Tag::x), band_db)},
                                                                  {DNNL_ARG_SCRATCHPAD, scratchpad(pd.scratchpad_desc())}});
    torch::Tensor plain_dw = torch::empty(weight_sizes, dy.options());
    reorder(view(pd.diff_weights_desc(), band_dw), view(plain(dims_of(plain_dw), Tag::oihw), plain_dw));
    if (dw.defined()) {
      dw.add_(plain_dw), db.add_(band_db);
    } else {
      dw = plain_dw, db = band_db;
    }
  }
  return {dw, db};
}

std::vector<Band> bands_for(const torch::Tensor& x, int64_t in, int64_t out) {
  std::vector<Band> bands = bands_of(x.size(0), in, out, x.size(2), x.size(3));
  if (bands.empty())
    throw Error("no Winograd kernel for a " + std::to_string(in) + "->" + std::to_string(out) + " channel convolution of " +
                shape_string(x.sizes()));
  return bands;
}

struct WinogradConvolution : torch::autograd::Function<WinogradConvolution> {
  static torch::Tensor forward(torch::autograd::AutogradContext* ctx, const std::vector<Band>* bands, const torch::Tensor& x,
                               const torch::Tensor& weight, const torch::Tensor& bias) {
    const torch::Tensor x_plain = x.contiguous();
    // The weight gradient reads the input; an input gradient alone needs only the weights.
    const bool keep_input = weight.requires_grad() || bias.requires_grad();
    ctx->save_for_backward({keep_input ? x_plain : torch::Tensor(), weight});
    return banded_forward(*bands, x_plain, weight.contiguous(), bias.contiguous());
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx, torch::autograd::variable_list grads) {
    const auto saved = ctx->get_saved_variables();
    const torch::Tensor& x = saved[0];
    const torch::Tensor& weight = saved[1];
    const torch::Tensor dy = grads[0].contiguous();
    const int64_t in = weight.size(1), out = weight.size(0);
    torch::Tensor dx, dw, db;
    if (ctx->needs_input_grad(0)) {
      const torch::Tensor flipped = weight.transpose(0, 1).flip({2, 3}).contiguous();
      dx = banded_forward(bands_for(dy, out, in), dy, flipped, torch::zeros({in}, dy.options()));
    }
    if (ctx->needs_input_grad(1) || ctx->needs_input_grad(2)) {
      std::tie(dw, db) = banded_weight_grad(bands_for(dy, in, out), x, dy, weight.sizes());
      if (!ctx->needs_input_grad(1)) dw = torch::Tensor();
      if (!ctx->needs_input_grad(2)) db = torch::Tensor();
    }
    return {torch::Tensor(), dx, dw, db};  // nothing for the bands argument
  }
};

// Frozen weights on small images. A frozen network (LPIPS's VGG) convolves with the same weights at
// every step, and LibTorch's oneDNN path lays them out for the kernel again in every call: a
// 512x512x3x3 layer is 9.4 MB, about a millisecond, as much as the convolution itself at 8x8 pixels
// and below. Here the forward layout of weights that take no gradient is kept between calls until
// the tensor changes (its version counter counts in-place writes; a new tensor or storage is a new
// entry), and the kernels are oneDNN's direct ones, the ones LibTorch runs.
struct DirectGeometry {
  int64_t n, in, out, h, w;
  bool operator<(const DirectGeometry& o) const { return std::tie(n, in, out, h, w) < std::tie(o.n, o.in, o.out, o.h, o.w); }
};

struct DirectKernels {
  dnnl::convolution_forward::primitive_desc forward_pd;
  dnnl::convolution_backward_data::primitive_desc input_grad_pd;
};

// 3x3, stride 1, padding 1.
std::optional<DirectKernels> create_direct_kernels(const DirectGeometry& g) {
  const Shape3x3 s(g.n, g.in, g.out, g.h, g.w, 1, 1);
  const auto alg = dnnl::algorithm::convolution_direct;
  DirectKernels k;
  k.forward_pd = forward_kernel(alg, s);
  if (!k.forward_pd) return std::nullopt;
  const auto input_grad = dnnl::convolution_backward_data::desc(alg, any_layout(s.src), any_layout(s.weights), any_layout(s.dst), s.stride,
                                                                s.pad_before, s.pad_after);
  k.input_grad_pd = dnnl::convolution_backward_data::primitive_desc(input_grad, user_scratchpad(), cpu_engine(), k.forward_pd, true);
  if (!k.input_grad_pd) return std::nullopt;
  return k;
}

const DirectKernels* direct_kernels_for(const DirectGeometry& g) { return memoised(g, &create_direct_kernels); }

// The layouts of frozen weights, one per (tensor, layout), dropped with their tensor.
class FrozenLayouts {
 public:
  torch::Tensor laid_out(const torch::Tensor& weight, const memory::desc& desc) {
    const std::lock_guard<std::mutex> lock(mutex_);
    entries_.erase(std::remove_if(entries_.begin(), entries_.end(), [](const Entry& e) { return e.owner.expired(); }), entries_.end());
    const auto fresh = [&](Entry& e) {
      e.data = weight.data_ptr(), e.version = weight._version();
      e.layout = blocked_weights(weight.contiguous(), desc).clone();  // never an alias of the weight itself
    };
    for (Entry& e : entries_)
      if (e.owner._unsafe_get_target() == weight.unsafeGetTensorImpl() && e.desc == desc) {
        if (e.data != weight.data_ptr() || e.version != weight._version()) fresh(e);
        return e.layout;
      }
    Entry e{Owner(weight.getIntrusivePtr()), nullptr, 0, desc, {}};
    fresh(e);
    entries_.push_back(std::move(e));
    return entries_.back().layout;
  }

 private:
  using Owner = c10::weak_intrusive_ptr<c10::TensorImpl, c10::UndefinedTensorImpl>;
  struct Entry {
    Owner owner;
    const void* data;
    int64_t version;
    memory::desc desc;
    torch::Tensor layout;
  };
  std::mutex mutex_;
  std::vector<Entry> entries_;
};

FrozenLayouts& frozen_layouts() {
  static auto* layouts = new FrozenLayouts;  // never destroyed: tensors may outlive static destruction
  return *layouts;
}

torch::Tensor direct_forward(const DirectKernels& k, const torch::Tensor& x, const torch::Tensor& weight, const torch::Tensor& bias) {
  const torch::Tensor y = torch::empty({x.size(0), weight.size(0), x.size(2), x.size(3)}, x.options());
  forward_rows(k.forward_pd, x, 0, frozen_layouts().laid_out(weight, k.forward_pd.weights_desc()), bias, y, 0);
  return y;
}

// The input gradient, with the weights laid out for it in this call (a backward pass uses them once).
torch::Tensor direct_input_grad(const DirectKernels& k, const torch::Tensor& dy, const torch::Tensor& weight) {
  const auto& pd = k.input_grad_pd;
  const torch::Tensor w = workspace(Workspace::weights, pd.weights_desc());
  reorder(view(plain(dims_of(weight), Tag::oihw), weight), view(pd.weights_desc(), w));
  const torch::Tensor g = blocked_rows(dy, 0, pd.diff_dst_desc(), Workspace::output_grad);
  const torch::Tensor diff_src = workspace(Workspace::input, pd.diff_src_desc());
  dnnl::convolution_backward_data(pd).execute(cpu_stream(), {{DNNL_ARG_DIFF_DST, view(pd.diff_dst_desc(), g)},
                                                             {DNNL_ARG_WEIGHTS, view(pd.weights_desc(), w)},
                                                             {DNNL_ARG_DIFF_SRC, view(pd.diff_src_desc(), diff_src)},
                                                             {DNNL_ARG_SCRATCHPAD, scratchpad(pd.scratchpad_desc())}});
  torch::Tensor dx = torch::empty({dy.size(0), weight.size(1), dy.size(2), dy.size(3)}, dy.options());
  reorder(view(pd.diff_src_desc(), diff_src), rows_of(dx, 0, dx.size(2)));
  return dx;
}

// The kernels for `weight` on [n, ·, h, w] images.
const DirectKernels& direct_kernels_of(const torch::Tensor& weight, int64_t n, int64_t h, int64_t w) {
  const DirectKernels* k = direct_kernels_for({n, weight.size(1), weight.size(0), h, w});
  if (!k)
    throw Error("no direct convolution kernel for weight " + shape_string(weight.sizes()) + " on " + std::to_string(n) + " images of " +
                std::to_string(h) + "x" + std::to_string(w));
  return *k;
}

torch::Tensor frozen_forward(const torch::Tensor& x, const torch::Tensor& weight, const torch::Tensor& bias) {
  const torch::Tensor x_plain = x.contiguous();
  return direct_forward(direct_kernels_of(weight, x.size(0), x.size(2), x.size(3)), x_plain, weight, bias);
}

// Differentiable in the input only: the weights and bias are frozen.
struct FrozenWeightConvolution : torch::autograd::Function<FrozenWeightConvolution> {
  static torch::Tensor forward(torch::autograd::AutogradContext* ctx, const torch::Tensor& x, const torch::Tensor& weight,
                               const torch::Tensor& bias) {
    ctx->save_for_backward({weight});
    return frozen_forward(x, weight, bias);
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx, torch::autograd::variable_list grads) {
    const torch::Tensor weight = ctx->get_saved_variables()[0].contiguous();
    const torch::Tensor dy = grads[0].contiguous();
    const DirectKernels& k = direct_kernels_of(weight, dy.size(0), dy.size(2), dy.size(3));
    return {direct_input_grad(k, dy, weight), torch::Tensor(), torch::Tensor()};
  }
};

bool frozen_direct_applies(const torch::Tensor& x, const torch::Tensor& weight, const torch::Tensor& bias) {
  if (convolution_algorithm() != ConvolutionAlgorithm::winograd) return false;
  if (!is_cpu_float(x) || !is_cpu_float(weight) || (bias.defined() && !is_cpu_float(bias))) return false;
  if (autocast_active(x.device())) return false;
  if (weight.requires_grad() || (bias.defined() && bias.requires_grad()) || weight.is_inference()) return false;
  if (x.dim() != 4 || weight.dim() != 4 || weight.size(2) != 3 || weight.size(3) != 3 || x.size(1) != weight.size(1)) return false;
  if (weight.size(0) < kMinWinogradChannels || weight.size(1) < kMinWinogradChannels) return false;
  return direct_kernels_for({x.size(0), weight.size(1), weight.size(0), x.size(2), x.size(3)}) != nullptr;
}

torch::Tensor frozen_direct(const torch::Tensor& x, const torch::Tensor& weight, const torch::Tensor& bias) {
  const torch::Tensor b = bias.defined() ? bias.contiguous() : torch::zeros({weight.size(0)}, x.options());
  if (torch::GradMode::is_enabled() && x.requires_grad()) return FrozenWeightConvolution::apply(x, weight, b);
  return frozen_forward(x, weight, b);
}

bool cpu_has_winograd() {
  static const bool available = kernels_for({1, 16, 16, 16, 16, 1, 1}) != nullptr;
  return available;
}

// The forward bands of this convolution; none where the Winograd path does not take it (including
// when the input gradient's convolution, the channels swapped, has no kernel).
std::vector<Band> winograd_bands(const torch::Tensor& x, const torch::Tensor& weight) {
  if (convolution_algorithm() != ConvolutionAlgorithm::winograd) return {};
  if (!x.device().is_cpu() || x.scalar_type() != torch::kFloat32 || weight.scalar_type() != torch::kFloat32) return {};
  if (autocast_active(x.device())) return {};  // autocast computes convolutions in bf16: its kernels, not these
  if (x.dim() != 4 || weight.dim() != 4 || weight.size(2) != 3 || weight.size(3) != 3 || x.size(1) != weight.size(1)) return {};
  if (x.size(2) < kMinWinogradSide || x.size(3) < kMinWinogradSide) return {};
  if (weight.size(0) < kMinWinogradChannels || weight.size(1) < kMinWinogradChannels) return {};
  const int64_t n = x.size(0), in = x.size(1), out = weight.size(0), h = x.size(2), w = x.size(3);
  if (!kernels_for({n, out, in, h, w, 1, 1})) return {};
  return bands_of(n, in, out, h, w);
}

torch::Tensor convolve(const std::vector<Band>& bands, const torch::Tensor& x, const torch::Tensor& weight, const torch::Tensor& bias) {
  const bool differentiable = torch::GradMode::is_enabled() &&
                              (x.requires_grad() || weight.requires_grad() || (bias.defined() && bias.requires_grad()));
  const torch::Tensor b = bias.defined() ? bias : torch::zeros({weight.size(0)}, x.options());  // a layer without bias adds 0
  if (differentiable) return WinogradConvolution::apply(&bands, x, weight, b);
  return banded_forward(bands, x.contiguous(), weight.contiguous(), b.contiguous());
}
#endif

ConvolutionAlgorithm initial_algorithm() {
  const char* env = std::getenv("VAVAE_CONV");
  const std::string value = env ? env : "";
  if (value == "direct") return ConvolutionAlgorithm::direct;
  if (!value.empty() && value != "winograd")
    throw Error("VAVAE_CONV must be 'direct' or 'winograd', got '" + printable(value) + "'");
  return winograd_available() ? ConvolutionAlgorithm::winograd : ConvolutionAlgorithm::direct;
}

std::atomic<ConvolutionAlgorithm>& algorithm_setting() {
  static std::atomic<ConvolutionAlgorithm> setting(initial_algorithm());
  return setting;
}

}  // namespace

bool winograd_available() {
#ifdef VAVAE_WITH_ONEDNN
  return cpu_has_winograd();
#else
  return false;
#endif
}

void set_convolution_algorithm(ConvolutionAlgorithm algorithm) {
  algorithm_setting() = algorithm == ConvolutionAlgorithm::winograd && !winograd_available() ? ConvolutionAlgorithm::direct : algorithm;
}

ConvolutionAlgorithm convolution_algorithm() { return algorithm_setting(); }

void set_winograd_band_bytes(int64_t bytes) {
  if (bytes <= 0) throw Error("the Winograd band size must be positive, got " + std::to_string(bytes) + " bytes");
  band_bytes = bytes;
}

int64_t winograd_band_bytes() { return band_bytes; }

std::string convolution_algorithm_name() {
  return convolution_algorithm() == ConvolutionAlgorithm::winograd ? "Winograd" : "direct";
}

bool winograd_applies(const torch::Tensor& x, const torch::Tensor& weight) {
#ifdef VAVAE_WITH_ONEDNN
  return !winograd_bands(x, weight).empty();
#else
  return false;
#endif
}

torch::Tensor winograd_conv3x3(const torch::Tensor& x, const torch::Tensor& weight, const torch::Tensor& bias) {
#ifdef VAVAE_WITH_ONEDNN
  const std::vector<Band> bands = winograd_bands(x, weight);
  if (bands.empty())
    throw Error("winograd_conv3x3: no Winograd kernel for input " + shape_string(x.sizes()) + " and weight " +
                shape_string(weight.sizes()));
  return convolve(bands, x, weight, bias);
#else
  throw Error("winograd_conv3x3: this build has no oneDNN");
#endif
}

torch::Tensor Conv2dImpl::forward(const torch::Tensor& x) {
#ifdef VAVAE_WITH_ONEDNN
  const auto& o = options;
  // 3x3, stride 1, zero padding of 1 on every side (the resolved padding covers 'same' too).
  const bool same_size_3x3 = (*o.kernel_size())[0] == 3 && (*o.kernel_size())[1] == 3 && (*o.stride())[0] == 1 &&
                             (*o.stride())[1] == 1 && (*o.dilation())[0] == 1 && (*o.dilation())[1] == 1 && o.groups() == 1 &&
                             !o.transposed() && torch::enumtype::get_enum_name(o.padding_mode()) == "kZeros" &&
                             _reversed_padding_repeated_twice == std::vector<int64_t>{1, 1, 1, 1};
  if (same_size_3x3) {
    if (const std::vector<Band> bands = winograd_bands(x, weight); !bands.empty()) return convolve(bands, x, weight, bias);
    if (frozen_direct_applies(x, weight, bias)) return frozen_direct(x, weight, bias);
  }
#endif
  return torch::nn::Conv2dImpl::forward(x);
}

}  // namespace vavae::nn
