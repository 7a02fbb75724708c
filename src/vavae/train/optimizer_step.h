#pragma once
#include <torch/torch.h>

#include <vector>

namespace vavae::train {

// Adam's update of every parameter in one parallel pass over all their elements, where LibTorch's
// step runs eight tensor operations (and two temporaries) per parameter: the same arithmetic, element
// by element in the same order, on the same AdamParamState (checkpoints are unchanged). Falls back
// to optimizer.step() where the pass does not apply: weight decay, amsgrad, several parameter
// groups, or a parameter or gradient that is not a contiguous float32 CPU tensor.
void adam_step(torch::optim::Adam& optimizer);

// Whether every element of every defined gradient is finite, in one parallel pass over CPU float32
// gradients (others are summed in float64, as before).
bool gradients_finite(const std::vector<torch::Tensor>& parameters);

}  // namespace vavae::train
