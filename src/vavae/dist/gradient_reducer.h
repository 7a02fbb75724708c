#pragma once
#include <torch/torch.h>

#include <memory>
#include <unordered_set>
#include <vector>

#include "vavae/dist/process_group.h"

namespace vavae::dist {

// Averages parameter gradients across ranks in buckets: launch() flattens the gradients of the
// parameters it is given into buckets of about `bucket_bytes` and starts their all-reduce without
// waiting, so the communication of one group of parameters runs while the backward pass of the
// next is still computing; finish() waits for every bucket and writes the averages back. A
// gradient that is undefined on a rank counts as zeros, so every rank sends the same buckets.
// Every rank starts from rank 0's parameters and buffers (nothing to do for one process).
void broadcast_module(Group& group, torch::nn::Module& module);

class GradientReducer {
 public:
  explicit GradientReducer(std::shared_ptr<Group> group, int64_t bucket_bytes = int64_t{25} << 20);
  void launch(const std::vector<torch::Tensor>& parameters);
  void finish();

 private:
  struct Bucket {
    std::vector<torch::Tensor> parameters;
    std::vector<torch::Tensor> flat;  // one tensor, reduced in place
    std::shared_ptr<Work> work;
  };
  std::shared_ptr<Group> group_;
  int64_t bucket_bytes_;
  std::vector<Bucket> pending_;
  std::unordered_set<torch::TensorImpl*> launched_;
};

}  // namespace vavae::dist
