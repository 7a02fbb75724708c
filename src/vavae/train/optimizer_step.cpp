#include "vavae/train/optimizer_step.h"

#include <ATen/Parallel.h>
#include <immintrin.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstring>

#include "vavae/common/precision.h"
#include "vavae/train/adam_state.h"

namespace vavae::train {
namespace {

bool plain_cpu_float(const torch::Tensor& t) {
  return is_cpu_float(t) && t.is_contiguous() && !t.is_sparse();
}

// Runs body(tensor index, first element, end element) over the elements of all tensors of the
// given sizes as one range: one parallel region for the lot, however many small tensors it holds.
template <typename Body>
void for_each_span(const std::vector<int64_t>& sizes, Body body) {
  std::vector<int64_t> starts(sizes.size() + 1, 0);
  for (size_t i = 0; i < sizes.size(); ++i) starts[i + 1] = starts[i] + sizes[i];
  constexpr int64_t kGrain = 1 << 15;
  at::parallel_for(0, starts.back(), kGrain, [&](int64_t begin, int64_t end) {
    size_t i = std::upper_bound(starts.begin(), starts.end(), begin) - starts.begin() - 1;
    for (; i < sizes.size() && starts[i] < end; ++i) {
      const int64_t from = std::max(begin, starts[i]) - starts[i], to = std::min(end, starts[i + 1]) - starts[i];
      if (from < to) body(i, from, to);
    }
  });
}

struct AdamTensors {
  float* param;
  const float* grad;
  float* exp_avg;
  float* exp_avg_sq;
  float step_size, bias_correction2_sqrt;  // per parameter: its own step count
};

struct AdamConstants {
  float beta1, beta2, one_minus_beta1, one_minus_beta2, eps;
};

// LibTorch's sequence, per element, in float and rounded where ATen's vectorised kernels round
// (bit for bit on AVX2/AVX-512 machines; the fused multiply-adds are theirs):
//   exp_avg.mul_(b1).add_(g, 1 - b1); exp_avg_sq.mul_(b2).addcmul_(g, g, 1 - b2);
//   denom = exp_avg_sq.sqrt() / sqrt(bc2) + eps; p.addcdiv_(exp_avg, denom, -lr / bc1)
inline __attribute__((always_inline)) void adam_span_body(const AdamTensors& t, const AdamConstants& c, int64_t from, int64_t to) {
  const float neg_step = -t.step_size;
  for (int64_t k = from; k < to; ++k) {
    const float g = t.grad[k];
    const float m = std::fma(c.one_minus_beta1, g, t.exp_avg[k] * c.beta1);
    const float v = std::fma(c.one_minus_beta2 * g, g, t.exp_avg_sq[k] * c.beta2);
    t.exp_avg[k] = m;
    t.exp_avg_sq[k] = v;
    const float denom = std::sqrt(v) / t.bias_correction2_sqrt + c.eps;
    t.param[k] = t.param[k] + neg_step * m / denom;
  }
}
// std::fma is one instruction where the CPU has it, a library call otherwise.
__attribute__((target("fma"))) void adam_span_fma(const AdamTensors& t, const AdamConstants& c, int64_t from, int64_t to) {
  adam_span_body(t, c, from, to);
}
void adam_span(const AdamTensors& t, const AdamConstants& c, int64_t from, int64_t to) { adam_span_body(t, c, from, to); }

// The same operations on 8 or 16 lanes (the compiler keeps the scalar loop scalar: std::sqrt may
// set errno). Vector sqrt, division and fused multiply-add round as the scalar ones do, so every
// lane computes the scalar loop's bits; the tail goes through the scalar loop.
#define VAVAE_ADAM_LANES(Vec, suffix, set1, loadu, storeu, mul, add, div, fmadd, sqrt)                              \
  void adam_span_##suffix(const AdamTensors& t, const AdamConstants& c, int64_t from, int64_t to) {                  \
    constexpr int64_t lanes = sizeof(Vec) / sizeof(float);                                                           \
    const Vec beta1 = set1(c.beta1), beta2 = set1(c.beta2), one_minus_beta1 = set1(c.one_minus_beta1);               \
    const Vec one_minus_beta2 = set1(c.one_minus_beta2), eps = set1(c.eps);                                          \
    const Vec bias_correction2_sqrt = set1(t.bias_correction2_sqrt), neg_step = set1(-t.step_size);                  \
    int64_t k = from;                                                                                                \
    for (; k + lanes <= to; k += lanes) {                                                                            \
      const Vec g = loadu(t.grad + k);                                                                               \
      const Vec m = fmadd(one_minus_beta1, g, mul(loadu(t.exp_avg + k), beta1));                                     \
      const Vec v = fmadd(mul(one_minus_beta2, g), g, mul(loadu(t.exp_avg_sq + k), beta2));                          \
      storeu(t.exp_avg + k, m);                                                                                      \
      storeu(t.exp_avg_sq + k, v);                                                                                   \
      const Vec denom = add(div(sqrt(v), bias_correction2_sqrt), eps);                                               \
      storeu(t.param + k, add(loadu(t.param + k), div(mul(neg_step, m), denom)));                                    \
    }                                                                                                                \
    adam_span_body(t, c, k, to);                                                                                     \
  }
// _mm512_sqrt_ps starts from an undefined vector, which GCC 12 reports as maybe uninitialised.
__attribute__((target("avx512f"))) inline __m512 sqrt_512(__m512 v) { return _mm512_maskz_sqrt_ps(static_cast<__mmask16>(0xFFFF), v); }
__attribute__((target("avx2,fma"))) VAVAE_ADAM_LANES(__m256, avx2, _mm256_set1_ps, _mm256_loadu_ps, _mm256_storeu_ps,
                                                     _mm256_mul_ps, _mm256_add_ps, _mm256_div_ps, _mm256_fmadd_ps, _mm256_sqrt_ps)
__attribute__((target("avx512f,fma"))) VAVAE_ADAM_LANES(__m512, avx512, _mm512_set1_ps, _mm512_loadu_ps, _mm512_storeu_ps,
                                                        _mm512_mul_ps, _mm512_add_ps, _mm512_div_ps, _mm512_fmadd_ps, sqrt_512)
#undef VAVAE_ADAM_LANES

// A moment the one-pass update can work on once made contiguous (absent: created as float zeros).
bool usable_moment(const torch::Tensor& m, const torch::Tensor& p) {
  return is_cpu_float(m) && !m.is_sparse() && m.sizes() == p.sizes();
}

// One parameter group without weight decay or amsgrad: the step both faster updates reproduce.
bool plain_adam(torch::optim::Adam& optimizer) {
  if (optimizer.param_groups().size() != 1) return false;
  const auto& options = static_cast<const torch::optim::AdamOptions&>(optimizer.param_groups().front().options());
  return options.weight_decay() == 0 && !options.amsgrad();
}

// Counts a step of parameter state `s` and returns Adam's step size lr / (1 - beta1^t) and
// bias correction sqrt(1 - beta2^t) for it, in double as LibTorch computes them.
struct StepScales {
  double step_size, bias_correction2_sqrt;
};
StepScales count_step(torch::optim::AdamParamState& s, const torch::optim::AdamOptions& options) {
  s.step(s.step() + 1);
  const double t = static_cast<double>(s.step());
  return {options.lr() / (1 - std::pow(std::get<0>(options.betas()), t)), std::sqrt(1 - std::pow(std::get<1>(options.betas()), t))};
}

// Whether the one-pass update computes what optimizer.step() would.
bool one_pass_applies(torch::optim::Adam& optimizer) {
  if (!plain_adam(optimizer)) return false;
  const auto& state = optimizer.state();
  for (const auto& p : optimizer.param_groups().front().params()) {
    if (!p.grad().defined()) continue;
    if (!plain_cpu_float(p) || !plain_cpu_float(p.grad())) return false;
    const auto it = state.find(adam_state_key(state, p));
    if (it == state.end()) continue;
    const auto& s = static_cast<const torch::optim::AdamParamState&>(*it->second);
    if (!usable_moment(s.exp_avg(), p) || !usable_moment(s.exp_avg_sq(), p)) return false;
  }
  return true;
}

// Whether the multi-tensor update computes what optimizer.step() would: a plain Adam whose
// parameters with gradients are dense and of one device and dtype.
bool multi_tensor_applies(torch::optim::Adam& optimizer) {
  if (!plain_adam(optimizer)) return false;
  const torch::Tensor* first = nullptr;
  for (const auto& p : optimizer.param_groups().front().params()) {
    if (!p.grad().defined()) continue;
    if (p.is_sparse() || p.grad().is_sparse()) return false;
    if (!first) first = &p;
    if (p.device() != first->device() || p.scalar_type() != first->scalar_type() || p.grad().device() != p.device() ||
        p.grad().scalar_type() != p.scalar_type())
      return false;
  }
  return true;
}

// LibTorch's Adam step as ATen's multi-tensor (_foreach_) operations: the same operations in the
// same order, each over all parameters at once. On a GPU that is a few kernel launches per group of
// tensors where optimizer.step() launches eight per parameter (some 2,800 per step for the f16d32
// model's 350 parameter tensors); on the CPU ATen runs them tensor by tensor, the very operations of
// optimizer.step().
void multi_tensor_adam_step(torch::optim::Adam& optimizer) {
  torch::NoGradGuard no_grad;
  auto& group = optimizer.param_groups().front();
  const auto& options = static_cast<const torch::optim::AdamOptions&>(group.options());
  const double beta1 = std::get<0>(options.betas()), beta2 = std::get<1>(options.betas());
  std::vector<torch::Tensor> params, grads, exp_avgs, exp_avg_sqs;
  std::vector<at::Scalar> bias_correction2_sqrt, neg_step_size;
  for (const auto& p : group.params()) {
    if (!p.grad().defined()) continue;
    auto& s = adam_param_state(optimizer.state(), p);
    const StepScales scales = count_step(s, options);
    params.push_back(p);
    grads.push_back(p.grad());
    exp_avgs.push_back(s.exp_avg());
    exp_avg_sqs.push_back(s.exp_avg_sq());
    bias_correction2_sqrt.emplace_back(scales.bias_correction2_sqrt);
    neg_step_size.emplace_back(-scales.step_size);
  }
  if (params.empty()) return;
  at::_foreach_mul_(exp_avgs, beta1);
  at::_foreach_add_(exp_avgs, grads, 1 - beta1);
  at::_foreach_mul_(exp_avg_sqs, beta2);
  at::_foreach_addcmul_(exp_avg_sqs, grads, grads, 1 - beta2);
  std::vector<torch::Tensor> denom = at::_foreach_sqrt(exp_avg_sqs);
  at::_foreach_div_(denom, bias_correction2_sqrt);
  at::_foreach_add_(denom, options.eps());
  at::_foreach_addcdiv_(params, exp_avgs, denom, neg_step_size);
}

// Whether ATen's multi-tensor inf/nan check (the one GradScaler runs) takes `g`: dense floating
// point of at most 32 bits on a GPU.
bool multi_tensor_check_takes(const torch::Tensor& g) {
  const auto t = g.scalar_type();
  return g.is_cuda() && !g.is_sparse() && (t == torch::kFloat32 || t == torch::kFloat16 || t == torch::kBFloat16);
}

// Whether the GPU gradients are all finite: per device, one multi-tensor check that "unscales" by
// exactly 1 (ATen leaves the values as they are when the scale is 1) and raises a flag on an inf
// or nan; a few kernel launches and one read-back, where a sum per gradient launched hundreds.
bool device_gradients_finite(const std::vector<torch::Tensor>& gradients) {
  std::vector<std::pair<torch::Device, std::vector<torch::Tensor>>> by_device;
  for (const auto& g : gradients) {
    auto it = std::find_if(by_device.begin(), by_device.end(), [&](const auto& d) { return d.first == g.device(); });
    if (it == by_device.end()) it = by_device.insert(by_device.end(), {g.device(), {}});
    it->second.push_back(g);
  }
  for (auto& [device, list] : by_device) {
    const auto options = torch::TensorOptions().dtype(torch::kFloat32).device(device);
    torch::Tensor found = torch::zeros({1}, options);
    at::_amp_foreach_non_finite_check_and_unscale_(list, found, torch::ones({1}, options));
    if (found.item<float>() != 0) return false;
  }
  return true;
}

}  // namespace

AdamUpdate adam_step(torch::optim::Adam& optimizer) {
  if (!one_pass_applies(optimizer)) {
    if (multi_tensor_applies(optimizer)) {
      multi_tensor_adam_step(optimizer);
      return AdamUpdate::multi_tensor;
    }
    optimizer.step();
    return AdamUpdate::per_parameter;
  }
  auto& group = optimizer.param_groups().front();
  const auto& options = static_cast<const torch::optim::AdamOptions&>(group.options());
  const double beta1 = std::get<0>(options.betas()), beta2 = std::get<1>(options.betas());
  auto& state = optimizer.state();
  std::vector<AdamTensors> tensors;
  std::vector<int64_t> sizes;
  for (const auto& p : group.params()) {
    if (!p.grad().defined()) continue;
    auto& s = adam_param_state(state, p);
    if (!s.exp_avg().is_contiguous() || !s.exp_avg_sq().is_contiguous()) {
      s.exp_avg(s.exp_avg().contiguous());
      s.exp_avg_sq(s.exp_avg_sq().contiguous());
    }
    const StepScales scales = count_step(s, options);
    torch::Tensor param = p;  // shares the storage; data_ptr needs a non-const handle
    tensors.push_back({param.data_ptr<float>(), p.grad().data_ptr<float>(), s.exp_avg().data_ptr<float>(),
                       s.exp_avg_sq().data_ptr<float>(), static_cast<float>(scales.step_size),
                       static_cast<float>(scales.bias_correction2_sqrt)});
    sizes.push_back(p.numel());
  }
  const AdamConstants c{static_cast<float>(beta1), static_cast<float>(beta2), static_cast<float>(1 - beta1),
                        static_cast<float>(1 - beta2), static_cast<float>(options.eps())};
  static const auto span = __builtin_cpu_supports("avx512f") ? &adam_span_avx512
                           : __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") ? &adam_span_avx2
                           : __builtin_cpu_supports("fma")                                    ? &adam_span_fma
                                                                                              : &adam_span;
  for_each_span(sizes, [&](size_t i, int64_t from, int64_t to) { span(tensors[i], c, from, to); });
  return AdamUpdate::one_pass;
}

bool gradients_finite(const std::vector<torch::Tensor>& parameters) {
  std::vector<const float*> data;
  std::vector<int64_t> sizes;
  std::vector<torch::Tensor> others, on_devices;
  for (const auto& p : parameters) {
    const torch::Tensor& g = p.grad();
    if (!g.defined()) continue;
    if (plain_cpu_float(g)) {
      data.push_back(g.data_ptr<float>());
      sizes.push_back(g.numel());
    } else if (multi_tensor_check_takes(g)) {
      on_devices.push_back(g);
    } else {
      others.push_back(g.sum(torch::kFloat64));
    }
  }
  if (!on_devices.empty() && !device_gradients_finite(on_devices)) return false;
  std::atomic<bool> finite{true};
  for_each_span(sizes, [&](size_t i, int64_t from, int64_t to) {
    // x * 0 is 0 for a finite x and nan for inf or nan: no branch in the loop. Sixteen lanes, so
    // the additions do not wait on each other and the loop runs at memory speed.
    using Lanes = float __attribute__((vector_size(16 * sizeof(float))));
    Lanes zeros{};
    int64_t k = from;
    for (; k + 16 <= to; k += 16) {
      Lanes v;
      std::memcpy(&v, data[i] + k, sizeof v);
      zeros += v * 0.0f;
    }
    float zero = 0;
    for (; k < to; ++k) zero += data[i][k] * 0.0f;
    for (int lane = 0; lane < 16; ++lane) zero += zeros[lane];
    if (std::isnan(zero)) finite.store(false, std::memory_order_relaxed);
  });
  if (!finite.load()) return false;
  return others.empty() || torch::stack(others).sum().isfinite().item<bool>();
}

}  // namespace vavae::train
