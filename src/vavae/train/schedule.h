#pragma once
#include <cstdint>
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

}  // namespace vavae::train
