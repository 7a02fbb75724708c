#pragma once
#include <torch/torch.h>

#include <vector>

#include "vavae/common/precision.h"
#include "vavae/dit/lightningdit.h"
#include "vavae/dit/transport.h"

namespace vavae::dit {

struct GenerateOptions {
  int64_t count = 16;
  std::vector<int64_t> labels;  // cycled over the samples; empty: i % num_classes
  uint64_t seed = 0;
  int64_t batch_size = 4;
  SamplerConfig sampler;
  Guidance guidance;  // scale > 1: classifier-free guidance, as inference.py decides
  Precision precision = Precision::fp32;  // of the model's forward passes
};

// Samples in the model's (normalised) latent space, [count, C, S, S], and their labels. Sample i's
// starting noise comes from (seed, i) alone, so a seed gives the same samples at any batch size.
// With guidance the state is [z, z] with labels [y, null], as inference.py runs it.
struct Generated {
  torch::Tensor latents, labels;
};
Generated generate_latents(LightningDiTImpl& model, const GenerateOptions& options, torch::Device device);

}  // namespace vavae::dit
