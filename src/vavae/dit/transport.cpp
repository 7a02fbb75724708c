#include "vavae/dit/transport.h"

#include "vavae/common/error.h"

namespace vavae::dit {

TransportDraws draw_transport(const torch::Tensor& x1, const TransportConfig& c, at::Generator generator) {
  const auto cpu = torch::TensorOptions().dtype(torch::kFloat32);
  TransportDraws d;
  d.x0 = torch::randn(x1.sizes(), generator, cpu).to(x1.device());
  // Logit-normal: sigmoid of a standard normal, computed in double and rounded (as upstream's numpy).
  d.t = c.use_lognorm ? torch::sigmoid(torch::randn({x1.size(0)}, generator, cpu.dtype(torch::kFloat64))).to(torch::kFloat32)
                      : torch::rand({x1.size(0)}, generator, cpu);
  d.t = d.t.to(x1.device());
  return d;
}

TransportLoss transport_loss(const VelocityModel& model, const torch::Tensor& x1, const TransportDraws& draws, const TransportConfig& c) {
  TransportLoss l;
  const torch::Tensor t = draws.t.view({-1, 1, 1, 1});
  l.xt = t * x1 + (1 - t) * draws.x0;
  l.ut = x1 - draws.x0;
  l.prediction = model(l.xt, draws.t);
  const std::vector<int64_t> all_but_batch = [&] {
    std::vector<int64_t> dims;
    for (int64_t d = 1; d < x1.dim(); ++d) dims.push_back(d);
    return dims;
  }();
  l.mse = (l.prediction - l.ut).pow(2).mean(all_but_batch);
  l.total = l.mse.mean();
  if (c.use_cosine_loss) {
    const torch::Tensor cos = torch::cosine_similarity(l.prediction, l.ut, 1);  // [B, H, W]
    std::vector<int64_t> pixels(all_but_batch.begin(), all_but_batch.end() - 1);
    l.cosine = (1 - cos).mean(pixels);
    l.total = l.cosine.mean() + l.total;
  }
  return l;
}

void SamplerConfig::validate() const {
  if (method != "euler" && method != "heun2")
    throw Error("sampler method '" + method + "' is not euler or heun2 (upstream's dopri5 is not available)");
  if (num_steps < 2) throw Error("num_sampling_steps must be at least 2 (time points), got " + std::to_string(num_steps));
  if (timestep_shift < 0) throw Error("timestep_shift must be >= 0, got " + std::to_string(timestep_shift));
}

torch::Tensor sampling_grid(const SamplerConfig& c) {
  c.validate();
  torch::Tensor grid = torch::linspace(0, 1, c.num_steps, torch::kFloat32);
  if (c.timestep_shift > 0) {
    const auto s = static_cast<float>(c.timestep_shift), s_minus_1 = static_cast<float>(c.timestep_shift - 1);
    float* t = grid.data_ptr<float>();
    for (int64_t i = 0; i < c.num_steps; ++i) t[i] = (s * t[i]) / (1.0f + s_minus_1 * t[i]);
  }
  return grid;
}

torch::Tensor sample_ode(const VelocityModel& model, const torch::Tensor& x, const SamplerConfig& c, std::vector<torch::Tensor>* trajectory) {
  const torch::Tensor grid = sampling_grid(c);
  const float* t = grid.data_ptr<float>();
  auto velocity = [&](const torch::Tensor& state, float time) {
    return model(state, torch::full({state.size(0)}, time, state.options()));
  };
  torch::Tensor state = x;
  if (trajectory) trajectory->push_back(state);
  for (int64_t i = 0; i + 1 < c.num_steps; ++i) {
    const float dt = t[i + 1] - t[i];
    if (c.method == "euler") {
      state = state + velocity(state, t[i]) * dt;
    } else {  // heun2: torchdiffeq's two-stage tableau (alpha 1, beta 1, weights 1/2, 1/2)
      const torch::Tensor k1 = velocity(state, t[i]);
      const torch::Tensor k2 = velocity(state + k1 * dt, t[i] + dt);
      state = state + (k1 * (0.5f * dt) + k2 * (0.5f * dt));
    }
    if (trajectory) trajectory->push_back(state);
  }
  return state;
}

}  // namespace vavae::dit
