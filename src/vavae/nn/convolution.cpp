#include "vavae/nn/convolution.h"

#include <array>
#include <atomic>
#include <cstdlib>
#include <map>
#include <mutex>
#include <optional>
#include <tuple>

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

#ifdef VAVAE_WITH_ONEDNN
using dnnl::memory;
using Tag = memory::format_tag;

dnnl::engine& cpu_engine() {
  static dnnl::engine engine(dnnl::engine::kind::cpu, 0);
  return engine;
}

// The three primitives of one convolution shape (their scratchpad: `scratchpad` below).
struct Kernels {
  dnnl::convolution_forward::primitive_desc forward_pd;
  dnnl::convolution_backward_data::primitive_desc input_grad_pd;
  dnnl::convolution_backward_weights::primitive_desc weight_grad_pd;
};

struct Shape {
  int64_t n, in, out, h, w;
  bool operator<(const Shape& o) const { return std::tie(n, in, out, h, w) < std::tie(o.n, o.in, o.out, o.h, o.w); }
};

memory::desc plain(memory::dims dims, Tag tag) { return memory::desc(std::move(dims), memory::data_type::f32, tag); }

// Kernels for `s`, or nullopt where oneDNN has no Winograd implementation for it (CPUs without
// AVX-512).
std::optional<Kernels> create_kernels(const Shape& s) {
  const auto any = [](memory::dims d) { return memory::desc(std::move(d), memory::data_type::f32, Tag::any); };
  const memory::dims src{s.n, s.in, s.h, s.w}, weights{s.out, s.in, 3, 3}, bias{s.out}, dst{s.n, s.out, s.h, s.w}, one{1, 1};
  const auto alg = dnnl::algorithm::convolution_winograd;
  dnnl::primitive_attr attr;
  attr.set_scratchpad_mode(dnnl::scratchpad_mode::user);
  auto& engine = cpu_engine();
  const auto forward = dnnl::convolution_forward::desc(dnnl::prop_kind::forward_training, alg, any(src), any(weights),
                                                       plain(bias, Tag::x), any(dst), one, one, one);
  Kernels k;
  k.forward_pd = dnnl::convolution_forward::primitive_desc(forward, attr, engine, /*allow_empty=*/true);
  if (!k.forward_pd) return std::nullopt;
  k.input_grad_pd = dnnl::convolution_backward_data::primitive_desc(
      dnnl::convolution_backward_data::desc(alg, any(src), any(weights), any(dst), one, one, one), attr, engine, k.forward_pd, true);
  const auto weight_grad =
      dnnl::convolution_backward_weights::desc(alg, any(src), any(weights), plain(bias, Tag::x), any(dst), one, one, one);
  k.weight_grad_pd = dnnl::convolution_backward_weights::primitive_desc(weight_grad, attr, engine, k.forward_pd, true);
  if (!k.input_grad_pd || !k.weight_grad_pd) return std::nullopt;
  return k;
}

const Kernels* kernels_for(const Shape& s) {
  static std::mutex mutex;
  static std::map<Shape, std::optional<Kernels>> cache;
  const std::lock_guard<std::mutex> lock(mutex);
  auto it = cache.find(s);
  if (it == cache.end()) it = cache.emplace(s, create_kernels(s)).first;
  return it->second ? &*it->second : nullptr;
}

Shape shape_of(const torch::Tensor& x, const torch::Tensor& weight) { return {x.size(0), x.size(1), weight.size(0), x.size(2), x.size(3)}; }

// Bytes from LibTorch's allocator laid out as `desc`: the tensor owns the memory.
torch::Tensor buffer(const memory::desc& desc) {
  return torch::empty({static_cast<int64_t>(desc.get_size())}, torch::TensorOptions().dtype(torch::kUInt8));
}

// Buffers that live only during one call (the kernels' scratchpad of transformed tiles, about 4.5x
// a layer's input; blocked copies of outputs and output gradients), kept per thread and grown, not
// allocated per call: fresh pages for them cost more than Winograd saves (the page faults of 230 MB
// per f16d32 layer at 256 px).
enum class Workspace { scratchpad, input, output, output_grad, count };

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

void reorder(const memory::desc& from, const torch::Tensor& data, const memory::desc& to, const torch::Tensor& out) {
  memory src = view(from, data), dst = view(to, out);
  dnnl::reorder(src, dst).execute(cpu_stream(), src, dst);
}

// `data` (laid out as `from`) laid out as `to`, in a new buffer or in `slot`; `data` itself when
// the layouts agree.
torch::Tensor relayout(const torch::Tensor& data, const memory::desc& from, const memory::desc& to,
                       std::optional<Workspace> slot = std::nullopt) {
  if (from == to) return data;
  torch::Tensor out = slot ? workspace(*slot, to) : buffer(to);
  reorder(from, data, to, out);
  return out;
}

memory::dims dims_of(const torch::Tensor& t) { return memory::dims(t.sizes().begin(), t.sizes().end()); }

// A contiguous 4-D fp32 tensor of `sizes` from a buffer laid out as `from`.
torch::Tensor to_plain(const torch::Tensor& data, const memory::desc& from, at::IntArrayRef sizes) {
  torch::Tensor out = torch::empty(sizes, torch::TensorOptions().dtype(torch::kFloat32));
  reorder(from, data, plain(dims_of(out), Tag::abcd), out);  // NCHW, or OIHW for weights
  return out;
}

struct ForwardResult {
  torch::Tensor y;
  torch::Tensor input;  // the input as the weight gradient reads it, when asked to keep it
};

// Forward pass (`bias` defined: a layer without one passes zeros). With `keep_input`, also the input
// in the weight gradient's layout, which backward keeps instead of the plain input.
ForwardResult run_forward(const Kernels& k, const torch::Tensor& x, const torch::Tensor& weight, const torch::Tensor& bias,
                          bool keep_input) {
  const auto& pd = k.forward_pd;
  const torch::Tensor x_plain = x.contiguous(), w_plain = weight.contiguous(), b = bias.contiguous();
  const std::optional<Workspace> input_slot = keep_input ? std::nullopt : std::optional<Workspace>(Workspace::input);
  const torch::Tensor src = relayout(x_plain, plain(dims_of(x_plain), Tag::nchw), pd.src_desc(), input_slot);
  const torch::Tensor w = relayout(w_plain, plain(dims_of(w_plain), Tag::oihw), pd.weights_desc());
  const torch::Tensor dst = workspace(Workspace::output, pd.dst_desc());
  dnnl::convolution_forward(pd).execute(cpu_stream(), {{DNNL_ARG_SRC, view(pd.src_desc(), src)},
                                                       {DNNL_ARG_WEIGHTS, view(pd.weights_desc(), w)},
                                                       {DNNL_ARG_BIAS, view(plain({b.size(0)}, Tag::x), b)},
                                                       {DNNL_ARG_DST, view(pd.dst_desc(), dst)},
                                                       {DNNL_ARG_SCRATCHPAD, scratchpad(pd.scratchpad_desc())}});
  ForwardResult r{to_plain(dst, pd.dst_desc(), {x.size(0), weight.size(0), x.size(2), x.size(3)}), {}};
  if (keep_input) r.input = relayout(src, pd.src_desc(), k.weight_grad_pd.src_desc());
  return r;
}

struct WinogradConvolution : torch::autograd::Function<WinogradConvolution> {
  static torch::Tensor forward(torch::autograd::AutogradContext* ctx, const Kernels* kernels, const torch::Tensor& x,
                               const torch::Tensor& weight, const torch::Tensor& bias) {
    const Shape s = shape_of(x, weight);
    ForwardResult r = run_forward(*kernels, x, weight, bias, /*keep_input=*/weight.requires_grad() || bias.requires_grad());
    ctx->save_for_backward({weight});
    if (r.input.defined()) ctx->saved_data["input"] = r.input;
    ctx->saved_data["n"] = s.n;
    ctx->saved_data["h"] = s.h;
    ctx->saved_data["w"] = s.w;
    return r.y;
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx, torch::autograd::variable_list grads) {
    const torch::Tensor weight = ctx->get_saved_variables()[0];
    const Shape s{ctx->saved_data["n"].toInt(), weight.size(1), weight.size(0), ctx->saved_data["h"].toInt(),
                  ctx->saved_data["w"].toInt()};
    const Kernels& k = *kernels_for(s);
    const torch::Tensor dy = grads[0].contiguous();
    const memory::desc dy_plain = plain(dims_of(dy), Tag::nchw);
    // The output gradient in the layout the input gradient reads (the weight gradient's too, as a rule).
    const torch::Tensor g = relayout(dy, dy_plain, k.input_grad_pd.diff_dst_desc(), Workspace::output_grad);
    torch::Tensor dx, dw, db;
    if (ctx->needs_input_grad(0)) {
      const auto& pd = k.input_grad_pd;
      const torch::Tensor w = relayout(weight.contiguous(), plain(dims_of(weight), Tag::oihw), pd.weights_desc());
      const torch::Tensor out = workspace(Workspace::output, pd.diff_src_desc());
      dnnl::convolution_backward_data(pd).execute(cpu_stream(), {{DNNL_ARG_DIFF_DST, view(pd.diff_dst_desc(), g)},
                                                                 {DNNL_ARG_WEIGHTS, view(pd.weights_desc(), w)},
                                                                 {DNNL_ARG_DIFF_SRC, view(pd.diff_src_desc(), out)},
                                                                 {DNNL_ARG_SCRATCHPAD, scratchpad(pd.scratchpad_desc())}});
      dx = to_plain(out, pd.diff_src_desc(), {s.n, s.in, s.h, s.w});
    }
    if (ctx->needs_input_grad(1) || ctx->needs_input_grad(2)) {
      const auto& pd = k.weight_grad_pd;
      const torch::Tensor g_w = relayout(g, k.input_grad_pd.diff_dst_desc(), pd.diff_dst_desc());
      const torch::Tensor out = buffer(pd.diff_weights_desc());
      db = torch::empty({s.out}, torch::TensorOptions().dtype(torch::kFloat32));
      dnnl::convolution_backward_weights(pd).execute(cpu_stream(), {{DNNL_ARG_SRC, view(pd.src_desc(), ctx->saved_data["input"].toTensor())},
                                                                    {DNNL_ARG_DIFF_DST, view(pd.diff_dst_desc(), g_w)},
                                                                    {DNNL_ARG_DIFF_WEIGHTS, view(pd.diff_weights_desc(), out)},
                                                                    {DNNL_ARG_DIFF_BIAS, view(plain({s.out}, Tag::x), db)},
                                                                    {DNNL_ARG_SCRATCHPAD, scratchpad(pd.scratchpad_desc())}});
      dw = to_plain(out, pd.diff_weights_desc(), {s.out, s.in, 3, 3});
      if (!ctx->needs_input_grad(1)) dw = torch::Tensor();
      if (!ctx->needs_input_grad(2)) db = torch::Tensor();
    }
    return {torch::Tensor(), dx, dw, db};  // nothing for the kernels argument
  }
};

bool cpu_has_winograd() {
  static const bool available = kernels_for({1, 16, 16, 16, 16}) != nullptr;
  return available;
}

// The kernels for this convolution, or null where the Winograd path does not apply to it.
const Kernels* applicable_kernels(const torch::Tensor& x, const torch::Tensor& weight) {
  if (convolution_algorithm() != ConvolutionAlgorithm::winograd) return nullptr;
  if (!x.device().is_cpu() || x.scalar_type() != torch::kFloat32 || weight.scalar_type() != torch::kFloat32) return nullptr;
  if (autocast_active(x.device())) return nullptr;  // autocast computes convolutions in bf16: its kernels, not these
  if (x.dim() != 4 || weight.dim() != 4 || weight.size(2) != 3 || weight.size(3) != 3 || x.size(1) != weight.size(1)) return nullptr;
  if (x.size(2) < kMinWinogradSide || x.size(3) < kMinWinogradSide) return nullptr;
  if (weight.size(0) < kMinWinogradChannels || weight.size(1) < kMinWinogradChannels) return nullptr;
  return kernels_for(shape_of(x, weight));
}

torch::Tensor convolve(const Kernels& kernels, const torch::Tensor& x, const torch::Tensor& weight, const torch::Tensor& bias) {
  const bool differentiable = torch::GradMode::is_enabled() &&
                              (x.requires_grad() || weight.requires_grad() || (bias.defined() && bias.requires_grad()));
  const torch::Tensor b = bias.defined() ? bias : torch::zeros({weight.size(0)}, x.options());  // a layer without bias adds 0
  if (differentiable) return WinogradConvolution::apply(&kernels, x, weight, b);
  return run_forward(kernels, x, weight, b, /*keep_input=*/false).y;
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

std::string convolution_algorithm_name() {
  return convolution_algorithm() == ConvolutionAlgorithm::winograd ? "Winograd" : "direct";
}

bool winograd_applies(const torch::Tensor& x, const torch::Tensor& weight) {
#ifdef VAVAE_WITH_ONEDNN
  return applicable_kernels(x, weight) != nullptr;
#else
  return false;
#endif
}

torch::Tensor winograd_conv3x3(const torch::Tensor& x, const torch::Tensor& weight, const torch::Tensor& bias) {
#ifdef VAVAE_WITH_ONEDNN
  const Kernels* kernels = applicable_kernels(x, weight);
  if (!kernels)
    throw Error("winograd_conv3x3: no Winograd kernel for input " + shape_string(x.sizes()) + " and weight " +
                shape_string(weight.sizes()));
  return convolve(*kernels, x, weight, bias);
#else
  throw Error("winograd_conv3x3: this build has no oneDNN");
#endif
}

torch::Tensor Conv2dImpl::forward(const torch::Tensor& x) {
  const auto& o = options;
  // 3x3, stride 1, zero padding of 1 on every side (the resolved padding covers 'same' too).
  const bool same_size_3x3 = (*o.kernel_size())[0] == 3 && (*o.kernel_size())[1] == 3 && (*o.stride())[0] == 1 &&
                             (*o.stride())[1] == 1 && (*o.dilation())[0] == 1 && (*o.dilation())[1] == 1 && o.groups() == 1 &&
                             !o.transposed() && torch::enumtype::get_enum_name(o.padding_mode()) == "kZeros" &&
                             _reversed_padding_repeated_twice == std::vector<int64_t>{1, 1, 1, 1};
#ifdef VAVAE_WITH_ONEDNN
  if (same_size_3x3)
    if (const Kernels* kernels = applicable_kernels(x, weight)) return convolve(*kernels, x, weight, bias);
#endif
  return torch::nn::Conv2dImpl::forward(x);
}

}  // namespace vavae::nn
