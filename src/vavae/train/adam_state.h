#pragma once
#include <torch/torch.h>

#include <sstream>
#include <string>
#include <type_traits>
#include <unordered_map>

#include "vavae/train/optimizer_step.h"

namespace vavae::train {

// Adam's per-parameter state is keyed by the parameter's TensorImpl: a string of its address in
// LibTorch 1.x, the address itself in 2.x.
template <typename StateMap>
typename StateMap::key_type adam_state_key(const StateMap&, const torch::Tensor& parameter) {
  using Key = typename StateMap::key_type;
  if constexpr (std::is_same_v<Key, std::string>) {
    std::ostringstream address;
    address << static_cast<const void*>(parameter.unsafeGetTensorImpl());
    return address.str();
  } else {
    return static_cast<Key>(parameter.unsafeGetTensorImpl());
  }
}

// The Adam state of parameter `p`, created as Adam's first step creates it (step 0, zero moments)
// when there is none yet; `created` says which.
template <typename StateMap>
torch::optim::AdamParamState& adam_param_state(StateMap& state, const torch::Tensor& p, bool* created = nullptr) {
  auto& slot = state[adam_state_key(state, p)];
  if (created) *created = !slot;
  if (!slot) {
    auto fresh = std::make_unique<torch::optim::AdamParamState>();
    fresh->step(0);
    fresh->exp_avg(torch::zeros_like(p, torch::MemoryFormat::Preserve));
    fresh->exp_avg_sq(torch::zeros_like(p, torch::MemoryFormat::Preserve));
    slot = std::move(fresh);
  }
  return static_cast<torch::optim::AdamParamState&>(*slot);
}

// An Adam step on all-zero gradients whose moments are all zero moves nothing but the step count
// (m and v stay 0, the update 0 / (0 + eps) is 0). IdleAdam does exactly that without Adam's passes
// over every parameter, and falls back to the real step whenever that cannot be proven: weight
// decay, amsgrad, or a moment not known to be zero.
class IdleAdam {
 public:
  // One step of `optimizer` whose gradients are all zero (the caller guarantees it).
  void step(torch::optim::Adam& optimizer) {
    const auto& group = optimizer.param_groups().at(0);
    const auto& options = static_cast<const torch::optim::AdamOptions&>(group.options());
    if (options.weight_decay() != 0 || options.amsgrad() || !moments_zero(optimizer)) {
      adam_step(optimizer);
      known_zero_.clear();
      return;
    }
    auto& state = optimizer.state();
    for (const auto& p : group.params()) {
      bool created = false;
      auto& s = adam_param_state(state, p, &created);
      if (created) {
        remember(s.exp_avg());
        remember(s.exp_avg_sq());
      }
      s.step(s.step() + 1);
    }
  }
  // After a real step of the same optimizer: its moments may have moved.
  void forget() { known_zero_.clear(); }

 private:
  bool moments_zero(torch::optim::Adam& optimizer) {
    auto& state = optimizer.state();
    for (const auto& p : optimizer.param_groups().at(0).params()) {
      const auto it = state.find(adam_state_key(state, p));
      if (it == state.end()) continue;
      const auto& s = static_cast<const torch::optim::AdamParamState&>(*it->second);
      for (const torch::Tensor& m : {s.exp_avg(), s.exp_avg_sq()}) {
        if (known_zero_.count(m.unsafeGetTensorImpl())) continue;
        if (m.count_nonzero().item<int64_t>() != 0) return false;
        remember(m);
      }
    }
    return true;
  }
  // Held, not only their addresses: a freed moment's address cannot come back as another tensor's.
  void remember(const torch::Tensor& moment) { known_zero_.emplace(moment.unsafeGetTensorImpl(), moment); }
  std::unordered_map<const void*, torch::Tensor> known_zero_;  // moments checked zero since the last real step
};

}  // namespace vavae::train
