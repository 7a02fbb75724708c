#pragma once
#include <functional>
#include <map>
#include <string>

#include "vavae/config/train_config.h"
#include "vavae/data/dataset.h"
#include "vavae/eval/reconstruction.h"
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

struct RunSummary {
  int64_t steps = 0;
  int64_t skipped_steps = 0;  // steps whose loss or gradients were not finite (no update)
  bool interrupted = false;
  eval::EvalResult final_eval;
};

// Trains as the config says, writing config.yaml, metrics.jsonl, checkpoints/, images/ and
// autoencoder.safetensors into the run folder. SIGINT/SIGTERM save a checkpoint and return.
RunSummary run_training(const config::TrainConfig& config, const RunOptions& options);

}  // namespace vavae::train
