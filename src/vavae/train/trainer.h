#pragma once
#include <functional>
#include <map>
#include <string>

#include "vavae/config/train_config.h"
#include "vavae/data/dataset.h"
#include "vavae/io/image.h"
#include "vavae/nn/autoencoder.h"
#include "vavae/nn/lpips.h"

namespace vavae::train {

struct RunOptions {
  RunOptions(std::string output_dir = "", std::string resume_from = "", int64_t step_cap = 0)
      : output(std::move(output_dir)), resume(std::move(resume_from)), max_steps(step_cap) {}
  std::string output;        // the run folder
  std::string resume;        // a run folder or checkpoint to continue ("" = start fresh)
  int64_t max_steps = 0;     // caps the run's length whatever the config says (0 = no cap)
  // Sees (and may change) each batch before the step, given the step index: fault injection in tests.
  std::function<void(int64_t step, torch::Tensor& images)> before_step;
};

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
// grid shows the first `grid_images`.
EvalResult evaluate(nn::AutoencoderKL& autoencoder, const data::Dataset& dataset, const config::DataSplitConfig& split,
                    int64_t limit, int64_t grid_images, int64_t batch_size, torch::Device device, nn::LPIPSImpl* lpips = nullptr,
                    const ValidationLosses& losses = nullptr);

struct RunSummary {
  int64_t steps = 0;
  int64_t skipped_steps = 0;  // steps whose loss or gradients were not finite (no update)
  bool interrupted = false;
  EvalResult final_eval;
};

// Trains as the config says, writing config.yaml, metrics.jsonl, checkpoints/, images/ and
// autoencoder.safetensors into the run folder. SIGINT/SIGTERM save a checkpoint and return.
RunSummary run_training(const config::TrainConfig& config, const RunOptions& options);

}  // namespace vavae::train
