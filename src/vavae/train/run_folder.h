#pragma once
#include <ATen/core/Generator.h>
#include <nlohmann/json.hpp>

#include <string>

#include "vavae/io/image.h"
#include "vavae/train/checkpoint.h"

// What a training run leaves behind: config.yaml (the resolved config), metrics.jsonl (one JSON
// object per logged step), images/ (validation grids), checkpoints/ (the newest K, written
// atomically) and autoencoder.safetensors (the inference weights of the newest checkpoint).
namespace vavae::train {

class RunFolder {
 public:
  // Creates it with checkpoints/ and images/. A folder that does not write (data-parallel ranks
  // other than 0) turns every write below into nothing.
  explicit RunFolder(std::string path, bool writes = true);

  const std::string& path() const { return path_; }
  std::string checkpoints() const;

  void write_config(const nlohmann::json& resolved);
  void append_metrics(const nlohmann::json& line);
  // On resume: drops what was logged after the checkpoint (and a line a crash cut short), so every
  // step appears once; removes temporaries a killed write left.
  void rewind_to(int64_t step);
  void write_grid(int64_t step, const io::Image& grid);  // images/val_<step>.png and images/latest.png

  // A checkpoint at step `state.step`, the newest `keep` kept, and the inference export.
  void save(TrainStep& step, const CheckpointState& state, at::Generator& noise, int64_t keep);
  // "; the last good checkpoint is X" or "; no checkpoint was written before", for messages.
  std::string last_checkpoint_note() const;

 private:
  std::string path_, metrics_;
  bool writes_ = true;
};

}  // namespace vavae::train
