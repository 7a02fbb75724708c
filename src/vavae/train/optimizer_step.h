#pragma once
#include <torch/torch.h>

#include <vector>

namespace vavae::train {

// Adam's update of every parameter in one parallel pass over all their elements, where LibTorch's
// step runs eight tensor operations (and two temporaries) per parameter: the same arithmetic, element
// by element in the same order, on the same AdamParamState (checkpoints are unchanged). Where the
// pass does not apply (a parameter or gradient that is not a contiguous float32 CPU tensor: CUDA,
// for one), LibTorch's step as multi-tensor operations over all parameters at once; where neither
// applies (weight decay, amsgrad, several parameter groups, mixed devices), optimizer.step().
enum class AdamUpdate { one_pass, multi_tensor, per_parameter };
AdamUpdate adam_step(torch::optim::Adam& optimizer);

// Whether every element of every defined gradient is finite: one parallel pass over CPU float32
// gradients, ATen's multi-tensor check over GPU ones, float64 sums of any others.
bool gradients_finite(const std::vector<torch::Tensor>& parameters);

}  // namespace vavae::train
