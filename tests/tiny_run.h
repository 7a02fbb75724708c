#pragma once
// A tiny training setup shared by the training tests: smooth images that a small autoencoder
// learns in a few steps, and a config around them.
#include <filesystem>
#include <string>

#include "fixtures.h"
#include "vavae/io/image.h"

namespace vavae::test {

// `count` textured 16x16 images in two class folders (a, b).
inline std::string make_images(const std::string& name, int count = 48) {
  const std::string dir = scratch_dir(name);
  torch::manual_seed(11);
  for (int i = 0; i < count; ++i) {
    const std::string cls = dir + (i % 2 ? "/a" : "/b");
    std::filesystem::create_directories(cls);
    io::Image img;
    img.height = img.width = 16;
    // smooth gradients of random colour: learnable in a few steps
    const torch::Tensor ramp = torch::linspace(0, 1, 16).view({16, 1, 1}) * torch::linspace(0.5, 1, 16).view({1, 16, 1});
    const torch::Tensor t = (ramp * torch::rand({1, 1, 3}) * 200 + 30 * (i % 2)).to(torch::kUInt8).contiguous();
    img.rgb.assign(t.data_ptr<uint8_t>(), t.data_ptr<uint8_t>() + t.numel());
    io::write_png(cls + "/" + std::to_string(i) + ".png", img);
  }
  return dir;
}

struct TinyRun {
  int64_t disc_start = 40;  // upstream global steps (2 per batch)
  int64_t val_every = 5, checkpoint_every = 3, num_workers = 2;
  std::string trainer_extra;  // more `key: value` pairs for the trainer section
};

// The config text; `tail` is appended (stages, more sections).
inline std::string tiny_config(const std::string& images, const std::string& tail = "", const TinyRun& r = {}) {
  return R"(model:
  base_learning_rate: 1.0e-03
  params:
    embed_dim: 4
    lossconfig:
      params: {disc_start: )" + std::to_string(r.disc_start) + R"(, kl_weight: 1.0e-06, disc_weight: 0.5, perceptual_weight: 0.0, disc_num_layers: 2}
    ddconfig: {double_z: true, z_channels: 4, resolution: 16, in_channels: 3, out_ch: 3, ch: 32, ch_mult: [1, 2],
               num_res_blocks: 1, attn_resolutions: [], dropout: 0.0}
data:
  params:
    batch_size: 4
    num_workers: )" + std::to_string(r.num_workers) + R"(
    train: {source: ")" + images + R"(", resolution: 16, flip: true}
    validation: {source: ")" + images + R"(", resolution: 16, limit: 8}
trainer: {log_every: 1, val_every: )" + std::to_string(r.val_every) + ", checkpoint_every: " + std::to_string(r.checkpoint_every) +
         ", keep_checkpoints: 2, val_images: 4, seed: 3, threads: 1, device: " + test_device_name() + r.trainer_extra + R"(}
)" + tail;
}

}  // namespace vavae::test
