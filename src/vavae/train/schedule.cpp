#include "vavae/train/schedule.h"

#include <algorithm>
#include <cmath>

#include "vavae/common/error.h"

namespace vavae::train {

std::vector<Stage> schedule(const config::TrainConfig& c, int64_t batches_per_epoch, int64_t cap) {
  std::vector<Stage> stages;
  int64_t at = 0;
  auto steps_of = [&](int64_t steps, double epochs) {
    return steps > 0 ? steps : static_cast<int64_t>(std::ceil(epochs * static_cast<double>(batches_per_epoch)));
  };
  int64_t origin = 0;
  for (const auto& s : c.stages) {
    const int64_t n = steps_of(s.steps, s.epochs);
    if (s.restart) origin = at;
    stages.push_back({s, at, at + n, origin});
    at += n;
  }
  if (stages.empty()) {
    const int64_t n = steps_of(c.trainer.max_steps, c.trainer.max_epochs);
    if (n <= 0) throw Error("the config sets no length: give trainer.max_steps, trainer.max_epochs or stages");
    config::StageConfig only;
    only.name = "train";
    only.objective = c.objective;
    stages.push_back({only, 0, n, 0});
  } else if (c.trainer.max_steps > 0) {
    cap = cap > 0 ? std::min(cap, c.trainer.max_steps) : c.trainer.max_steps;
  }
  if (cap > 0)
    for (auto& s : stages) s.begin = std::min(s.begin, cap), s.end = std::min(s.end, cap);
  return stages;
}

const Stage& stage_at(const std::vector<Stage>& stages, int64_t step) {
  for (const auto& s : stages)
    if (step < s.end) return s;
  return stages.back();
}

double learning_rate_factor(const std::string& schedule, int64_t step, int64_t total) {
  if (schedule == "constant" || total <= 0) return 1.0;
  return 0.5 * (1.0 + std::cos(M_PI * static_cast<double>(step) / static_cast<double>(total)));
}

}  // namespace vavae::train
