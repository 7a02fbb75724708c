#pragma once
#include <torch/torch.h>

#include <functional>
#include <map>
#include <string>

#include "vavae/config/train_config.h"
#include "vavae/data/dataset.h"
#include "vavae/io/image.h"
#include "vavae/nn/autoencoder.h"
#include "vavae/nn/lpips.h"

// How well an autoencoder reconstructs a split: PSNR, SSIM, L1, LPIPS and upstream's validation
// loss terms, and a grid of inputs above their reconstructions.
namespace vavae::eval {

struct EvalResult {
  double psnr = 0, ssim = 0, l1 = 0;
  double lpips = -1;  // mean LPIPS distance; -1 without LPIPS weights
  int64_t images = 0;
  io::Image grid;  // inputs above reconstructions
  std::map<std::string, double> losses;  // upstream's validation loss terms (rec_loss, total_loss, ...), batch means
};

// Upstream's validation_step for one batch: the loss terms under upstream's names (no prefix).
using ValidationLosses = std::function<std::map<std::string, double>(const torch::Tensor& images)>;

// Reconstructs (posterior mode) the first `limit` images of a split (all when 0) and averages
// PSNR and SSIM (and LPIPS when `lpips` is given, and upstream's loss terms when `losses` is); the
// grid shows the first `grid_images`. LPIPS runs in eval mode whatever its mode in training.
EvalResult evaluate(nn::AutoencoderKL& autoencoder, const data::Dataset& dataset, const config::DataSplitConfig& split,
                    int64_t limit, int64_t grid_images, int64_t batch_size, torch::Device device, nn::LPIPSImpl* lpips = nullptr,
                    const ValidationLosses& losses = nullptr);

}  // namespace vavae::eval
