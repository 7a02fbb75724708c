#pragma once
#include <torch/torch.h>

#include <tuple>

namespace vavae::nn {

// silu(group_norm(x)) without autograd in two passes over x (group statistics in float64, then
// normalise and activate), where ATen's group_norm and silu make three, writing to `out`, which may
// be x itself: the decoder's inference keeps one activation-sized tensor less alive. Contiguous
// float32 CPU tensors (applies() says whether); the sigmoid's exponential is the Cephes polynomial
// of the backward pass.
struct GroupNormSiLUInference {
  static bool applies(const torch::Tensor& x, const torch::Tensor& weight, const torch::Tensor& bias);
  static void run(const torch::Tensor& x, torch::Tensor& out, const torch::Tensor& weight, const torch::Tensor& bias, int64_t groups,
                  double eps);
};

// The backward pass of silu(group_norm(x)) in two passes over the activations, where ATen's
// composition (recompute the normalised x, silu_backward, native_group_norm_backward) makes about
// seven. Takes x, the incoming gradient, the GroupNorm's weight and bias and its saved per
// (sample, group) mean and rstd; returns (dx, dweight, dbias). Applies to contiguous float32 CPU
// tensors (applies() says whether); the sigmoid's exponential is a Cephes polynomial (within 2 ulp).
struct GroupNormSiLUBackward {
  static bool applies(const torch::Tensor& x, const torch::Tensor& grad, const torch::Tensor& weight, const torch::Tensor& bias);
  static std::tuple<torch::Tensor, torch::Tensor, torch::Tensor> run(const torch::Tensor& x, const torch::Tensor& grad,
                                                                     const torch::Tensor& weight, const torch::Tensor& bias,
                                                                     const torch::Tensor& mean, const torch::Tensor& rstd,
                                                                     int64_t groups);
};

}  // namespace vavae::nn
