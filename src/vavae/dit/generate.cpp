#include "vavae/dit/generate.h"

#include "vavae/common/error.h"
#include "vavae/common/seed.h"

namespace vavae::dit {

Generated generate_latents(LightningDiTImpl& model, const GenerateOptions& o, torch::Device device) {
  if (o.count <= 0 || o.batch_size <= 0) throw Error("generate: count and batch size must be positive");
  const LightningDiTConfig& c = model.config;
  for (int64_t label : o.labels)
    if (label < 0 || label >= c.num_classes)
      throw Error("label " + std::to_string(label) + " is outside the model's " + std::to_string(c.num_classes) + " classes");
  const bool guided = o.guidance.scale > 1.0;
  if (guided && c.class_dropout_prob <= 0) throw Error("cfg_scale > 1 needs a model trained with label dropout (class_dropout_prob > 0)");
  torch::NoGradGuard no_grad;
  const bool was_training = model.is_training();
  model.eval();
  std::vector<torch::Tensor> latents;
  std::vector<int64_t> all_labels;
  for (int64_t first = 0; first < o.count; first += o.batch_size) {
    const int64_t b = std::min(o.batch_size, o.count - first);
    std::vector<torch::Tensor> noise;
    std::vector<int64_t> labels;
    for (int64_t i = first; i < first + b; ++i) {
      noise.push_back(torch::randn({c.in_channels, c.input_size, c.input_size},
                                   at::detail::createCPUGenerator(mix_seed(o.seed, static_cast<uint64_t>(i)))));
      labels.push_back(o.labels.empty() ? i % c.num_classes : o.labels[static_cast<size_t>(i) % o.labels.size()]);
    }
    torch::Tensor z = torch::stack(noise).to(device);
    torch::Tensor y = torch::tensor(labels, torch::kInt64).to(device);
    VelocityModel velocity = [&](const torch::Tensor& x, const torch::Tensor& t) { return model.forward(x, t, y); };
    if (guided) {
      z = torch::cat({z, z});
      y = torch::cat({y, torch::full_like(y, c.null_label())});
      velocity = [&](const torch::Tensor& x, const torch::Tensor& t) { return model.forward_with_cfg(x, t, y, o.guidance); };
    }
    const AutocastScope autocast(device, o.precision);
    latents.push_back(sample_ode(velocity, z, o.sampler).narrow(0, 0, b).cpu());
    all_labels.insert(all_labels.end(), labels.begin(), labels.end());
  }
  model.train(was_training);
  return {torch::cat(latents), torch::tensor(all_labels, torch::kInt64)};
}

}  // namespace vavae::dit
