#pragma once
#include <string>

#include "vavae/io/safetensors.h"

// Writes a dict of CPU tensors as torch.save does (zip format: data.pkl, one storage record per
// tensor, version 3), so Python's torch.load reads it: e.g. LightningDiT's latents_stats.pt.
namespace vavae::io {

void write_torch_dict(const std::string& path, const NamedTensors& tensors);

}  // namespace vavae::io
