#pragma once
#include <torch/torch.h>

#include <functional>
#include <string>

// Rectified flow as LightningDiT's transport/ does it for its released setting (Linear path,
// velocity prediction): x_t = t x1 + (1 - t) x0 with x0 noise and x1 data, target u = x1 - x0,
// t = 0 noise and t = 1 data; sampling integrates dx/dt = v(x, t) from 0 to 1.
namespace vavae::dit {

struct TransportConfig {
  bool use_lognorm = true;       // t = sigmoid(N(0, 1)); otherwise uniform on [0, 1]
  bool use_cosine_loss = true;   // add mean over pixels of 1 - cos(v, u) across channels
};

// The draws one training step needs, made up front so a step is a pure function of them.
struct TransportDraws {
  torch::Tensor t;   // [B] float32
  torch::Tensor x0;  // like x1
};
TransportDraws draw_transport(const torch::Tensor& x1, const TransportConfig& c, at::Generator generator);

struct TransportLoss {
  torch::Tensor xt, ut, prediction;  // the model's input, target and output
  torch::Tensor mse;                 // [B]: mean over (C, H, W) of (v - u)^2
  torch::Tensor cosine;              // [B]: mean over (H, W) of 1 - cos_channels(v, u) (undefined without it)
  torch::Tensor total;               // train.py's: cosine.mean() + mse.mean(), or mse.mean()
};

using VelocityModel = std::function<torch::Tensor(const torch::Tensor& x, const torch::Tensor& t)>;
TransportLoss transport_loss(const VelocityModel& model, const torch::Tensor& x1, const TransportDraws& draws, const TransportConfig& c);

struct SamplerConfig {
  std::string method = "euler";  // euler or heun2 (torchdiffeq's fixed-grid solvers)
  int64_t num_steps = 250;       // time points (upstream's num_sampling_steps): num_steps - 1 steps
  double timestep_shift = 0.3;   // t -> s t / (1 + (s - 1) t) when > 0 (< 1 packs steps near the noise end)
  void validate() const;
};

// The time points: linspace(0, 1, N) in float32, shifted as upstream in float32 arithmetic.
torch::Tensor sampling_grid(const SamplerConfig& c);

// Integrates from x (t = 0) to t = 1. `trajectory` (when given) receives every time point's state,
// the initial one first. The model gets t as a [batch] vector.
torch::Tensor sample_ode(const VelocityModel& model, const torch::Tensor& x, const SamplerConfig& c,
                         std::vector<torch::Tensor>* trajectory = nullptr);

}  // namespace vavae::dit
