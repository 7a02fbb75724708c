#include "vavae/nn/group_norm_silu_kernel.h"

#include <ATen/Parallel.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <type_traits>
#include <vector>

#include "vavae/common/precision.h"

// The generic (plain x86-64) instantiation passes 64-byte vectors between always-inlined helpers:
// no call ever crosses the ABI the warning is about.
#if defined(__GNUC__)
#pragma GCC diagnostic ignored "-Wpsabi"
#endif

namespace vavae::nn {
namespace {

constexpr int64_t kLanes = 16;  // one AVX-512 register, two AVX2 ones, four SSE ones
using Lanes = float __attribute__((vector_size(kLanes * sizeof(float))));
using IntLanes = int32_t __attribute__((vector_size(kLanes * sizeof(int32_t))));

// Cephes' expf: exp(x) = 2^n exp(r), r = x - n ln2 in two parts, exp(r) by a degree-6 polynomial.
// Written once for a float or 16 lanes (GCC/Clang vector extensions): branch-free, no library calls,
// with n rounded by the 1.5 * 2^23 trick, so each lane computes what the scalar version does.
template <typename T>
inline __attribute__((always_inline)) T clamp_for_exp(T x) {
  if constexpr (std::is_same_v<T, float>) {
    return std::min(std::max(x, -87.0f), 88.0f);
  } else {
    x = x < -87.0f ? T{} - 87.0f : x;
    return x > 88.0f ? T{} + 88.0f : x;
  }
}
template <typename T, typename I>
inline __attribute__((always_inline)) T exp_polynomial(T x) {
  x = clamp_for_exp(x);
  const T n = (x * 1.44269504088896341f + 12582912.0f) - 12582912.0f;  // round to nearest
  T r = x - n * 0.693359375f;
  r = r - n * -2.12194440e-4f;
  const T z = r * r;
  T p = r * 1.9875691500e-4f + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  p = p * z + r + 1.0f;
  I exponent;
  if constexpr (std::is_same_v<T, float>) {
    exponent = (static_cast<int32_t>(n) + 127) << 23;
  } else {
    exponent = (__builtin_convertvector(n, IntLanes) + 127) << 23;
  }
  T two_to_n;
  std::memcpy(&two_to_n, &exponent, sizeof two_to_n);
  return p * two_to_n;
}

// d/da silu(a) * dy at a = x * scale + shift.
template <typename T, typename I>
inline __attribute__((always_inline)) T silu_gradient(T x, T dy, float scale, float shift) {
  const T a = x * scale + shift;
  const T s = 1.0f / (exp_polynomial<T, I>(-a) + 1.0f);
  return dy * (s * (a * (1.0f - s) + 1.0f));
}

struct Row {
  const float* x;
  const float* dy;
  float* dx;
  int64_t size;
  float scale, shift;  // group_norm(x) = x * scale + shift on this (sample, channel)
};

struct RowSums {
  double x_weighted, plain;  // sum of dL/da * x, sum of dL/da
};

// dx <- dL/da over the row; returns its sums.
inline __attribute__((always_inline)) RowSums silu_gradient_row(const Row& row) {
  Lanes sum_x{}, sum{};
  const int64_t blocks = row.size / kLanes;
  for (int64_t block = 0; block < blocks; ++block) {
    Lanes x, dy;
    std::memcpy(&x, row.x + block * kLanes, sizeof x);
    std::memcpy(&dy, row.dy + block * kLanes, sizeof dy);
    const Lanes da = silu_gradient<Lanes, IntLanes>(x, dy, row.scale, row.shift);
    std::memcpy(row.dx + block * kLanes, &da, sizeof da);
    sum_x += da * x;
    sum += da;
  }
  double total_x = 0, total = 0;
  for (int64_t l = 0; l < kLanes; ++l) total_x += sum_x[l], total += sum[l];
  for (int64_t i = blocks * kLanes; i < row.size; ++i) {
    const float da = silu_gradient<float, int32_t>(row.x[i], row.dy[i], row.scale, row.shift);
    row.dx[i] = da;
    total_x += da * row.x[i];
    total += da;
  }
  return {total_x, total};
}

inline void input_gradient_row(float* __restrict dx, const float* __restrict x, int64_t size, float c1, float c2, float c3) {
  for (int64_t i = 0; i < size; ++i) dx[i] = c1 * dx[i] + c2 * x[i] + c3;
}

// y <- silu(x * scale + shift) over a row (y may be x).
inline __attribute__((always_inline)) void silu_row(float* y, const float* x, int64_t size, float scale, float shift) {
  const int64_t blocks = size / kLanes;
  for (int64_t block = 0; block < blocks; ++block) {
    Lanes v;
    std::memcpy(&v, x + block * kLanes, sizeof v);
    const Lanes a = v * scale + shift;
    const Lanes out = a / (exp_polynomial<Lanes, IntLanes>(-a) + 1.0f);
    std::memcpy(y + block * kLanes, &out, sizeof out);
  }
  for (int64_t i = blocks * kLanes; i < size; ++i) {
    const float a = x[i] * scale + shift;
    y[i] = a / (exp_polynomial<float, int32_t>(-a) + 1.0f);
  }
}

struct Moments {
  double sum, squares;
};

// Sum and sum of squares of a group in float64, eight lanes at a time in two independent chains.
inline __attribute__((always_inline)) Moments group_moments(const float* v, int64_t size) {
  using Floats = float __attribute__((vector_size(8 * sizeof(float))));
  using Doubles = double __attribute__((vector_size(8 * sizeof(double))));
  Doubles sum[2]{}, squares[2]{};
  const int64_t blocks = size / 16;
  for (int64_t block = 0; block < blocks; ++block) {
    for (int half = 0; half < 2; ++half) {
      Floats f;
      std::memcpy(&f, v + block * 16 + half * 8, sizeof f);
      const Doubles d = __builtin_convertvector(f, Doubles);
      sum[half] += d;
      squares[half] += d * d;
    }
  }
  Moments m{0, 0};
  for (int lane = 0; lane < 8; ++lane) m.sum += sum[0][lane] + sum[1][lane], m.squares += squares[0][lane] + squares[1][lane];
  for (int64_t k = blocks * 16; k < size; ++k) m.sum += v[k], m.squares += static_cast<double>(v[k]) * v[k];
  return m;
}

// The same bodies compiled for AVX2+FMA and AVX-512 where the CPU has them (the build targets
// plain x86-64); chosen once per call.
__attribute__((target("avx2,fma"))) RowSums silu_gradient_row_avx2(const Row& row) { return silu_gradient_row(row); }
__attribute__((target("avx512f"))) RowSums silu_gradient_row_avx512(const Row& row) { return silu_gradient_row(row); }
__attribute__((target("avx2,fma"))) void silu_row_avx2(float* y, const float* x, int64_t size, float scale, float shift) {
  silu_row(y, x, size, scale, shift);
}
__attribute__((target("avx512f"))) void silu_row_avx512(float* y, const float* x, int64_t size, float scale, float shift) {
  silu_row(y, x, size, scale, shift);
}
__attribute__((target("avx2,fma"))) Moments group_moments_avx2(const float* v, int64_t size) { return group_moments(v, size); }
__attribute__((target("avx512f"))) Moments group_moments_avx512(const float* v, int64_t size) { return group_moments(v, size); }
__attribute__((target("avx2,fma"))) void input_gradient_row_avx2(float* dx, const float* x, int64_t size, float c1, float c2, float c3) {
  input_gradient_row(dx, x, size, c1, c2, c3);
}
__attribute__((target("avx512f"))) void input_gradient_row_avx512(float* dx, const float* x, int64_t size, float c1, float c2, float c3) {
  input_gradient_row(dx, x, size, c1, c2, c3);
}

// Rows are the (sample, channel) planes of an [n, c, ...] tensor; the GroupNorm's statistics are
// per (sample, group).
struct GroupLayout {
  int64_t channels, groups;
  int64_t channel(int64_t row) const { return row % channels; }
  int64_t group(int64_t row) const { return (row / channels) * groups + channel(row) / (channels / groups); }
};

// body(row, channel, group) for every row of an [n, c, size] tensor, on ATen's threads, about 32768
// elements per task.
template <typename Body>
void for_each_row(const GroupLayout& layout, int64_t rows, int64_t size, const Body& body) {
  const int64_t grain = std::max<int64_t>(1, 32768 / std::max<int64_t>(size, 1));
  at::parallel_for(0, rows, grain, [&](int64_t begin, int64_t end) {
    for (int64_t row = begin; row < end; ++row) body(row, layout.channel(row), layout.group(row));
  });
}

// group_norm(x) = x * scale + shift on one row.
struct ChannelAffine {
  float scale, shift;
  ChannelAffine(float mean, float rstd, float gamma, float beta) : scale(rstd * gamma), shift(beta - mean * scale) {}
};

// The widest of a function's clones this CPU runs.
template <typename Function>
Function widest_clone(Function plain, Function avx2, Function avx512) {
  static const bool has_avx512 = __builtin_cpu_supports("avx512f");
  static const bool has_avx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  return has_avx512 ? avx512 : has_avx2 ? avx2 : plain;
}

}  // namespace

bool GroupNormSiLUInference::applies(const torch::Tensor& x, const torch::Tensor& weight, const torch::Tensor& bias) {
  return is_cpu_float(x) && is_cpu_float(weight) && is_cpu_float(bias) && x.dim() >= 2 && x.is_contiguous();
}

void GroupNormSiLUInference::run(const torch::Tensor& x, torch::Tensor& out, const torch::Tensor& weight_in, const torch::Tensor& bias_in,
                                 int64_t groups, double eps) {
  const auto moments_pass = widest_clone(&group_moments, &group_moments_avx2, &group_moments_avx512);
  const auto silu_pass = widest_clone(&silu_row, &silu_row_avx2, &silu_row_avx512);
  const torch::Tensor weight = weight_in.contiguous(), bias = bias_in.contiguous();
  const int64_t n = x.size(0), c = x.size(1), size = x.numel() / (n * c), per_group = c / groups;
  const int64_t group_size = per_group * size;
  const GroupLayout layout{c, groups};
  // Mean and 1 / std per (sample, group), accumulated in float64 (a group is contiguous).
  std::vector<float> mean(static_cast<size_t>(n * groups)), rstd(static_cast<size_t>(n * groups));
  const float* xp = x.data_ptr<float>();
  at::parallel_for(0, n * groups, 1, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) {
      const Moments moments = moments_pass(xp + i * group_size, group_size);
      const double m = moments.sum / static_cast<double>(group_size);
      const double variance = std::max(moments.squares / static_cast<double>(group_size) - m * m, 0.0);
      mean[i] = static_cast<float>(m);
      rstd[i] = static_cast<float>(1.0 / std::sqrt(variance + eps));
    }
  });
  const float *g = weight.data_ptr<float>(), *b = bias.data_ptr<float>();
  float* yp = out.data_ptr<float>();
  for_each_row(layout, n * c, size, [&](int64_t row, int64_t channel, int64_t group) {
    const ChannelAffine affine(mean[group], rstd[group], g[channel], b[channel]);
    silu_pass(yp + row * size, xp + row * size, size, affine.scale, affine.shift);
  });
}

bool GroupNormSiLUBackward::applies(const torch::Tensor& x, const torch::Tensor& grad, const torch::Tensor& weight,
                                    const torch::Tensor& bias) {
  return is_cpu_float(x) && is_cpu_float(grad) && is_cpu_float(weight) && is_cpu_float(bias) && x.dim() >= 2 && x.sizes() == grad.sizes();
}

std::tuple<torch::Tensor, torch::Tensor, torch::Tensor> GroupNormSiLUBackward::run(const torch::Tensor& x_in, const torch::Tensor& grad,
                                                                                   const torch::Tensor& weight, const torch::Tensor& bias,
                                                                                   const torch::Tensor& mean_in, const torch::Tensor& rstd_in,
                                                                                   int64_t groups) {
  const auto silu_gradient_pass = widest_clone(&silu_gradient_row, &silu_gradient_row_avx2, &silu_gradient_row_avx512);
  const auto input_gradient_pass = widest_clone(&input_gradient_row, &input_gradient_row_avx2, &input_gradient_row_avx512);
  const torch::Tensor x = x_in.contiguous(), dy = grad.contiguous();
  const torch::Tensor mean = mean_in.to(torch::kFloat32).contiguous(), rstd = rstd_in.to(torch::kFloat32).contiguous();
  const torch::Tensor gamma = weight.contiguous(), beta = bias.contiguous();
  const int64_t n = x.size(0), c = x.size(1), size = x.numel() / (n * c), per_group = c / groups;
  const GroupLayout layout{c, groups};
  torch::Tensor dx = torch::empty_like(x);
  // Per (sample, channel): the sums of dL/da * x and of dL/da (a: the GroupNorm's output).
  torch::Tensor sums = torch::empty({n, c, 2}, torch::kFloat64);
  const float *xp = x.data_ptr<float>(), *dyp = dy.data_ptr<float>(), *g = gamma.data_ptr<float>(), *b = beta.data_ptr<float>();
  const float *mp = mean.data_ptr<float>(), *rp = rstd.data_ptr<float>();
  float* dxp = dx.data_ptr<float>();
  double* sp = sums.data_ptr<double>();

  for_each_row(layout, n * c, size, [&](int64_t row, int64_t channel, int64_t group) {
    const ChannelAffine affine(mp[group], rp[group], g[channel], b[channel]);
    const Row r{xp + row * size, dyp + row * size, dxp + row * size, size, affine.scale, affine.shift};
    const RowSums sums_of_row = silu_gradient_pass(r);
    sp[2 * row] = sums_of_row.x_weighted;
    sp[2 * row + 1] = sums_of_row.plain;
  });

  // ATen's group-norm input gradient: dx = c1 * da + c2 * x + c3 with, per (sample, group),
  // c2 = (db * mean - ds) * rstd^3 / D and c3 = -c2 * mean - db * rstd / D (ds, db weighted by gamma).
  const double inverse_size = 1.0 / static_cast<double>(per_group * size);
  torch::Tensor c2 = torch::empty({n, groups}, torch::kFloat64), c3 = torch::empty({n, groups}, torch::kFloat64);
  double *c2p = c2.data_ptr<double>(), *c3p = c3.data_ptr<double>();
  for (int64_t s = 0; s < n; ++s) {
    for (int64_t gr = 0; gr < groups; ++gr) {
      double ds = 0, db = 0;
      for (int64_t ch = gr * per_group; ch < (gr + 1) * per_group; ++ch) {
        ds += sp[2 * (s * c + ch)] * g[ch];
        db += sp[2 * (s * c + ch) + 1] * g[ch];
      }
      const int64_t i = s * groups + gr;
      const double m = mp[i], rs = rp[i];
      c2p[i] = (db * m - ds) * rs * rs * rs * inverse_size;
      c3p[i] = -c2p[i] * m - db * rs * inverse_size;
    }
  }
  for_each_row(layout, n * c, size, [&](int64_t row, int64_t channel, int64_t group) {
    const float c1 = rp[group] * g[channel];
    const float k2 = static_cast<float>(c2p[group]), k3 = static_cast<float>(c3p[group]);
    input_gradient_pass(dxp + row * size, xp + row * size, size, c1, k2, k3);
  });

  // dweight = sum over samples of (ds - db * mean) * rstd, dbias = sum of db, per channel.
  torch::Tensor dweight = torch::zeros({c}, torch::kFloat64), dbias = torch::zeros({c}, torch::kFloat64);
  double *dwp = dweight.data_ptr<double>(), *dbp = dbias.data_ptr<double>();
  for (int64_t s = 0; s < n; ++s) {
    for (int64_t ch = 0; ch < c; ++ch) {
      const int64_t i = layout.group(s * c + ch);
      dwp[ch] += (sp[2 * (s * c + ch)] - sp[2 * (s * c + ch) + 1] * mp[i]) * rp[i];
      dbp[ch] += sp[2 * (s * c + ch) + 1];
    }
  }
  return {dx, dweight.to(torch::kFloat32), dbias.to(torch::kFloat32)};
}

}  // namespace vavae::nn
