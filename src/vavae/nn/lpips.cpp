#include "vavae/nn/lpips.h"

#include <ATen/Parallel.h>

#include <algorithm>
#include <cmath>
#include <limits>

#include "vavae/common/checked.h"
#include "vavae/common/error.h"
#include "vavae/common/precision.h"
#include "vavae/common/runtime.h"

namespace vavae::nn {
namespace {

// (torchvision index, output channels) of the VGG16 convolutions in each LPIPS slice.
const std::vector<std::vector<std::pair<int64_t, int64_t>>> kSlices = {
    {{0, 64}, {2, 64}},
    {{5, 128}, {7, 128}},
    {{10, 256}, {12, 256}, {14, 256}},
    {{17, 512}, {19, 512}, {21, 512}},
    {{24, 512}, {26, 512}, {28, 512}},
};
const int64_t kChannels[] = {64, 128, 256, 512, 512};
constexpr double kNormEps = 1e-10;  // upstream's normalize_tensor: f / (||f|| + 1e-10)
constexpr int64_t kMaxChunk = 1024;  // pixels per block of LayerDistance's passes

// One layer's LPIPS term without its intermediate tensors: for features f0, f1 [B, C, H, W], unit
// length over channels u = f / (||f|| + 1e-10), head weights w [C] and the head's dropout mask m
// (scaled by 1 / (1 - p); empty when dropout is off),
//   d[b] = mean over pixels of sum_c w_c m_c (u0_c - u1_c)^2,
// and its gradients with respect to f0 and f1 (the head is frozen). ATen's composition makes about
// fifteen passes over the features forward and backward and keeps the normalised features alive;
// this makes one forward and two backward, over blocks of pixels that stay in cache in between.
// At a pixel whose features are all zero the gradient is nan, as the composition's (its sqrt
// backward divides 0 by 0): the trainer skips such a step.
class LayerDistance {
 public:
  LayerDistance(const torch::Tensor& f0, const torch::Tensor& f1, const torch::Tensor& weight, const torch::Tensor& mask)
      : f0_(f0), f1_(f1), weight_(weight.reshape({-1}).contiguous()), mask_(mask.numel() > 0 ? mask.contiguous() : torch::Tensor()),
        b_(f0.size(0)), c_(f0.size(1)), p_(f0.numel() / (f0.size(0) * f0.size(1))) {}

  // d [B, 1, 1, 1]; fills the inverse norms 1 / (||f|| + eps) and the norms per (sample, pixel),
  // each [B, P]. One traversal: a block of pixels is summed and then compared while in cache.
  torch::Tensor distance(torch::Tensor& inverse0, torch::Tensor& inverse1, torch::Tensor& norm0, torch::Tensor& norm1) const {
    norm0 = torch::empty({b_, p_}, torch::kFloat32), norm1 = torch::empty({b_, p_}, torch::kFloat32);
    inverse0 = torch::empty({b_, p_}, torch::kFloat32), inverse1 = torch::empty({b_, p_}, torch::kFloat32);
    torch::Tensor per_pixel = torch::zeros({b_, p_}, torch::kFloat32);
    const float *x0 = f0_.data_ptr<float>(), *x1 = f1_.data_ptr<float>(), *w = weight_.data_ptr<float>();
    const float* m = mask_.defined() ? mask_.data_ptr<float>() : nullptr;
    float *n0 = norm0.data_ptr<float>(), *n1 = norm1.data_ptr<float>();
    float *r0 = inverse0.data_ptr<float>(), *r1 = inverse1.data_ptr<float>(), *d = per_pixel.data_ptr<float>();
    for_each_chunk([&](int64_t b, int64_t from, int64_t to) {
      float *s0 = n0 + b * p_, *s1 = n1 + b * p_, *q0 = r0 + b * p_, *q1 = r1 + b * p_, *out = d + b * p_;
      std::fill(s0 + from, s0 + to, 0.0f);
      std::fill(s1 + from, s1 + to, 0.0f);
      for (int64_t c = 0; c < c_; ++c) {
        const float *a = x0 + (b * c_ + c) * p_, *e = x1 + (b * c_ + c) * p_;
        for (int64_t p = from; p < to; ++p) s0[p] += a[p] * a[p], s1[p] += e[p] * e[p];
      }
      for (int64_t p = from; p < to; ++p) {
        s0[p] = std::sqrt(s0[p]), s1[p] = std::sqrt(s1[p]);
        q0[p] = 1.0f / static_cast<float>(s0[p] + kNormEps);
        q1[p] = 1.0f / static_cast<float>(s1[p] + kNormEps);
      }
      for (int64_t c = 0; c < c_; ++c) {
        const int64_t row = (b * c_ + c) * p_;
        const float *a = x0 + row, *e = x1 + row;
        if (m) {
          for (int64_t p = from; p < to; ++p) {
            const float diff = a[p] * q0[p] - e[p] * q1[p];
            out[p] += w[c] * (diff * diff * m[row + p]);
          }
        } else {
          for (int64_t p = from; p < to; ++p) {
            const float diff = a[p] * q0[p] - e[p] * q1[p];
            out[p] += w[c] * (diff * diff);
          }
        }
      }
    });
    return per_pixel.mean(1).view({b_, 1, 1, 1});
  }

  // dL/df_side given dL/dd [B] (side 0: f0, 1: f1).
  torch::Tensor gradient(int side, const torch::Tensor& grad, const torch::Tensor& inverse0, const torch::Tensor& inverse1,
                         const torch::Tensor& norm) const {
    const torch::Tensor g = grad.reshape({b_}).to(torch::kFloat32).contiguous();
    torch::Tensor df = torch::empty_like(side == 0 ? f0_ : f1_);
    const float *x0 = f0_.data_ptr<float>(), *x1 = f1_.data_ptr<float>(), *w = weight_.data_ptr<float>(), *gp = g.data_ptr<float>();
    const float *r0 = inverse0.data_ptr<float>(), *r1 = inverse1.data_ptr<float>(), *n = norm.data_ptr<float>();
    const float* m = mask_.defined() ? mask_.data_ptr<float>() : nullptr;
    const float sign = side == 0 ? 1.0f : -1.0f;  // d/du0 = 2 w m (u0 - u1) = -d/du1
    float* out = df.data_ptr<float>();
    for_each_chunk([&](int64_t b, int64_t from, int64_t to) {
      const float *q0 = r0 + b * p_, *q1 = r1 + b * p_, *own = side == 0 ? q0 : q1, *length = n + b * p_;
      const float scale = sign * 2.0f * gp[b] / static_cast<float>(p_);
      float projection[kMaxChunk] = {};  // sum_c e_c f_c per pixel of the block
      // e_c = dd/du_c; first the projection, then dd/df_c = r e_c - f_c r^2 / ||f|| * sum_k e_k f_k.
      auto pass = [&](bool write) {
        for (int64_t c = 0; c < c_; ++c) {
          const int64_t row = (b * c_ + c) * p_;
          const float *a = x0 + row, *e = x1 + row, *f = side == 0 ? a : e;
          const float wc = scale * w[c];
          for (int64_t p = from; p < to; ++p) {
            float ec = wc * (a[p] * q0[p] - e[p] * q1[p]);
            if (m) ec *= m[row + p];
            if (write) {
              const float k = length[p] > 0 ? projection[p - from] * own[p] * own[p] / length[p] : std::numeric_limits<float>::quiet_NaN();
              out[row + p] = own[p] * ec - f[p] * k;
            } else {
              projection[p - from] += ec * f[p];
            }
          }
        }
      };
      pass(false);
      pass(true);
    });
    return df;
  }

 private:
  // Runs fn(sample, first pixel, end pixel) over blocks of pixels, in parallel; a block of both
  // sides' features takes about 256 KiB, so its second pass reads it from the core's L2.
  template <typename Fn>
  void for_each_chunk(Fn&& fn) const {
    const int64_t chunk = std::clamp<int64_t>(32768 / c_, 16, kMaxChunk);
    const int64_t chunks = (p_ + chunk - 1) / chunk;
    at::parallel_for(0, b_ * chunks, 1, [&](int64_t begin, int64_t end) {
      for (int64_t i = begin; i < end; ++i) {
        const int64_t b = i / chunks, from = (i % chunks) * chunk;
        fn(b, from, std::min(p_, from + chunk));
      }
    });
  }

  torch::Tensor f0_, f1_, weight_, mask_;
  int64_t b_, c_, p_;
};

struct LayerDistanceFunction : torch::autograd::Function<LayerDistanceFunction> {
  static torch::Tensor forward(torch::autograd::AutogradContext* ctx, const torch::Tensor& f0, const torch::Tensor& f1,
                               const torch::Tensor& weight, const torch::Tensor& mask) {
    const torch::Tensor a = f0.contiguous(), b = f1.contiguous();
    const LayerDistance layer(a, b, weight, mask);
    torch::Tensor inverse0, inverse1, norm0, norm1;
    const torch::Tensor d = layer.distance(inverse0, inverse1, norm0, norm1);
    ctx->save_for_backward({a, b, weight, mask, inverse0, inverse1, norm0, norm1});
    return d;
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx, torch::autograd::variable_list grads) {
    const auto s = ctx->get_saved_variables();
    const LayerDistance layer(s[0], s[1], s[2], s[3]);
    torch::Tensor df0, df1;
    if (ctx->needs_input_grad(0)) df0 = layer.gradient(0, grads[0], s[4], s[5], s[6]);
    if (ctx->needs_input_grad(1)) df1 = layer.gradient(1, grads[0], s[4], s[5], s[7]);
    return {df0, df1, torch::Tensor(), torch::Tensor()};
  }
};

}  // namespace

VggSliceImpl::VggSliceImpl(int64_t in_channels, const std::vector<std::pair<int64_t, int64_t>>& layout, bool pool_first)
    : starts_with_pool(pool_first) {
  int64_t in = in_channels;
  for (const auto& [index, out] : layout) {
    convs.push_back(register_module(std::to_string(index), Conv2d(torch::nn::Conv2dOptions(in, out, 3).padding(1))));
    in = out;
  }
}

torch::Tensor VggSliceImpl::forward(torch::Tensor x) {
  if (starts_with_pool) x = torch::max_pool2d(x, 2, 2);
  for (auto& conv : convs) x = torch::relu(conv(x));
  return x;
}

LinearHeadImpl::LinearHeadImpl(int64_t channels) {
  model = register_module("model", torch::nn::Sequential(torch::nn::Dropout(0.5),
                                                          torch::nn::Conv2d(torch::nn::Conv2dOptions(channels, 1, 1).bias(false))));
}

LPIPSImpl::LPIPSImpl() {
  auto scaling = register_module("scaling_layer", std::make_shared<torch::nn::Module>());
  shift = scaling->register_buffer("shift", torch::tensor({-.030f, -.088f, -.188f}).view({1, 3, 1, 1}));
  scale = scaling->register_buffer("scale", torch::tensor({.458f, .448f, .450f}).view({1, 3, 1, 1}));
  auto net = register_module("net", std::make_shared<torch::nn::Module>());
  int64_t in = 3;
  for (size_t i = 0; i < kSlices.size(); ++i) {
    slices.push_back(net->register_module("slice" + std::to_string(i + 1), VggSlice(in, kSlices[i], i > 0)));
    in = kSlices[i].back().second;
  }
  for (size_t i = 0; i < 5; ++i) lins.push_back(register_module("lin" + std::to_string(i), LinearHead(kChannels[i])));
  torch::NoGradGuard no_grad;
  for (auto& p : parameters()) p.fill_(std::numeric_limits<float>::quiet_NaN());
}

bool LPIPSImpl::has_weights() const {
  // Loading replaces every tensor at once (load_into fails otherwise), so one head tells.
  return !torch::isnan(lins[0]->model->ptr(1)->as<torch::nn::Conv2d>()->weight).any().item<bool>();
}

torch::Tensor LPIPSImpl::scale_input(const torch::Tensor& x) const { return (x - shift) / scale; }

std::vector<torch::Tensor> LPIPSImpl::vgg_taps(const torch::Tensor& x) {
  std::vector<torch::Tensor> taps;
  torch::Tensor h = scale_input(x);
  for (auto& slice : slices) {
    h = slice->forward(h);
    taps.push_back(h);
  }
  return taps;
}

torch::Tensor LPIPSImpl::layer_distance(size_t k, const torch::Tensor& f0, const torch::Tensor& f1) {
  auto& head = *lins.at(k);
  auto& dropout = *head.model[0]->as<torch::nn::Dropout>();
  const torch::Tensor& weight = head.model[1]->as<torch::nn::Conv2d>()->weight;
  if (f0.dim() != 4 || f0.sizes() != f1.sizes() || f0.size(1) != weight.size(1))
    throw Error("LPIPS layer " + std::to_string(k) + ": features of shapes " + shape_string(f0.sizes()) + " and " + shape_string(f1.sizes()) +
                " for a head of " + std::to_string(weight.size(1)) + " channels");
  if (f0.numel() > 0 && is_cpu_float(f0) && is_cpu_float(f1) && is_cpu_float(weight) && !weight.requires_grad()) {
    torch::Tensor mask = torch::empty({0});  // torch::dropout's own noise: the same draws from the same generator
    const double p = dropout.options.p();
    if (dropout.is_training() && p > 0) mask = torch::empty_like(f0, torch::MemoryFormat::Contiguous).bernoulli_(1 - p).div_(1 - p);
    return LayerDistanceFunction::apply(f0, f1, weight, mask);
  }
  auto unit = [](const torch::Tensor& h) { return h / (torch::sqrt(h.pow(2).sum(1, true)) + kNormEps); };
  return head.model->forward((unit(f0) - unit(f1)).pow(2)).mean({2, 3}, true);
}

torch::Tensor LPIPSImpl::forward(const torch::Tensor& x0, const torch::Tensor& x1, std::vector<torch::Tensor>* layers) {
  if (x0.sizes() != x1.sizes()) throw Error("LPIPS: the two image batches differ in shape");
  if (!has_weights()) throw Error("LPIPS weights are not loaded: give the LPIPS weight file (or set perceptual_weight to 0)");
  // A side without gradients (the real images in training) runs without an autograd graph, so the
  // backward pass only goes through VGG once; without gradients both sides share one batch.
  const bool grad = torch::GradMode::is_enabled() && (x0.requires_grad() || x1.requires_grad());
  std::vector<torch::Tensor> f0, f1;
  if (!grad) {
    const int64_t b = x0.size(0);
    for (const auto& f : vgg_taps(torch::cat({x0, x1}))) {
      f0.push_back(f.slice(0, 0, b));
      f1.push_back(f.slice(0, b));
    }
  } else {
    auto side = [&](const torch::Tensor& x) {
      if (x.requires_grad()) return vgg_taps(x);
      torch::NoGradGuard no_grad;
      return vgg_taps(x);
    };
    f0 = side(x0);
    f1 = side(x1);
  }
  torch::Tensor total;
  for (size_t k = 0; k < f0.size(); ++k) {
    const torch::Tensor term = layer_distance(k, f0[k], f1[k]);
    if (layers) layers->push_back(term);
    total = k == 0 ? term : total + term;
  }
  return total.to(x0.scalar_type());  // fp32 from a bf16-autocast pass
}

void load_lpips(LPIPSImpl& lpips, const std::string& weights, const std::string& heads) {
  io::WeightFile file = io::read_weights(weights);
  bool torchvision = false;
  for (const auto& [k, t] : file.tensors) torchvision |= k.rfind("features.", 0) == 0;
  if (torchvision) {
    // torchvision vgg16: features.<i>.{weight,bias} -> net.slice<k>.<i>.*; classifier.* is not used.
    io::NamedTensors renamed;
    for (const auto& [k, t] : file.tensors) {
      if (k.rfind("features.", 0) != 0) continue;
      const int64_t index = parse_count(k.substr(9, k.find('.', 9) - 9), weights + ": layer index of '" + k + "'");
      for (size_t s = 0; s < kSlices.size(); ++s)
        for (const auto& [i, _] : kSlices[s])
          if (i == index) renamed.emplace_back("net.slice" + std::to_string(s + 1) + "." + k.substr(9), t);
    }
    if (heads.empty()) throw Error(weights + ": torchvision VGG16 weights need the LPIPS linear heads too (vgg.pth)");
    for (const auto& [k, t] : io::read_weights(heads).tensors) renamed.emplace_back(k, t);
    renamed.emplace_back("scaling_layer.shift", lpips.shift.clone());
    renamed.emplace_back("scaling_layer.scale", lpips.scale.clone());
    file.tensors = std::move(renamed);
  } else if (!heads.empty()) {
    for (const auto& [k, t] : io::read_weights(heads).tensors) file.tensors.emplace_back(k, t);
  }
  if (file.tensors.empty()) throw Error(weights + ": no LPIPS weights found");
  io::load_into(lpips, file);
  for (auto& p : lpips.parameters()) p.set_requires_grad(false);
  lpips.eval();
}

}  // namespace vavae::nn
