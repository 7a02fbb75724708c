#include "vavae/dist/gradient_reducer.h"

namespace vavae::dist {

void broadcast_module(Group& group, torch::nn::Module& module) {
  if (!group.distributed()) return;
  torch::NoGradGuard no_grad;
  std::vector<torch::Tensor> tensors;
  for (const auto& p : module.parameters()) tensors.push_back(p.detach());
  for (const auto& b : module.buffers()) tensors.push_back(b.detach());
  group.broadcast(tensors);
}

GradientReducer::GradientReducer(std::shared_ptr<Group> group, int64_t bucket_bytes)
    : group_(std::move(group)), bucket_bytes_(bucket_bytes) {}

void GradientReducer::launch(const std::vector<torch::Tensor>& parameters) {
  if (!group_->distributed()) return;
  std::vector<torch::Tensor> current;
  int64_t bytes = 0;
  auto flush = [&] {
    if (current.empty()) return;
    Bucket b;
    b.parameters = std::move(current);
    std::vector<torch::Tensor> grads;
    for (auto& p : b.parameters) {
      if (!p.grad().defined()) p.mutable_grad() = torch::zeros_like(p);
      grads.push_back(p.grad().reshape(-1));
    }
    b.flat = {torch::cat(grads)};
    b.work = group_->all_reduce_sum_async(b.flat);
    pending_.push_back(std::move(b));
    current.clear();
    bytes = 0;
  };
  for (const auto& p : parameters) {
    if (!launched_.insert(p.unsafeGetTensorImpl()).second) continue;
    // One dtype and device per bucket.
    if (!current.empty() && (current.front().scalar_type() != p.scalar_type() || current.front().device() != p.device())) flush();
    current.push_back(p);
    bytes += p.numel() * static_cast<int64_t>(p.element_size());
    if (bytes >= bucket_bytes_) flush();
  }
  flush();
}

void GradientReducer::finish() {
  torch::NoGradGuard no_grad;
  const double scale = 1.0 / static_cast<double>(group_->size());
  for (auto& b : pending_) {
    b.work->wait();
    const torch::Tensor averaged = b.flat[0].mul_(scale);
    int64_t offset = 0;
    for (auto& p : b.parameters) {
      p.mutable_grad().copy_(averaged.slice(0, offset, offset + p.numel()).view_as(p));
      offset += p.numel();
    }
  }
  pending_.clear();
  launched_.clear();
}

}  // namespace vavae::dist
