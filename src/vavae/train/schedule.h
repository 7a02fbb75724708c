#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "vavae/config/train_config.h"

// The stages of a run laid out in batches: where each begins and ends, and from which batch
// upstream's step counter runs (the last restarted stage).
namespace vavae::train {

struct Stage {
  config::StageConfig config;
  int64_t begin = 0, end = 0;  // batch range
  int64_t origin = 0;          // the batch where upstream's step counter was 0 (the last restart)
};

// The config's stages (or one stage of trainer.max_steps / max_epochs), capped at `cap` batches (0: no cap).
std::vector<Stage> schedule(const config::TrainConfig& c, int64_t batches_per_epoch, int64_t cap);

// The stage that holds batch `step` (the last one past the end).
const Stage& stage_at(const std::vector<Stage>& stages, int64_t step);

// trainer.lr_schedule's factor on the base learning rate at batch `step` of `total`: 1 when
// constant; cosine: 1 at step 0, falling to 0 at step `total` (never reached: the last step is total - 1).
double learning_rate_factor(const std::string& schedule, int64_t step, int64_t total);

}  // namespace vavae::train
