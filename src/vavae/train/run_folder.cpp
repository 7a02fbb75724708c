#include "vavae/train/run_folder.h"

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>

#include "vavae/common/error.h"
#include "vavae/common/json.h"
#include "vavae/config/train_config.h"
#include "vavae/io/files.h"

namespace vavae::train {
namespace {

namespace fs = std::filesystem;

std::string numbered(const char* pattern, int64_t step) {
  char name[64];
  std::snprintf(name, sizeof(name), pattern, static_cast<long long>(step));
  return name;
}

}  // namespace

RunFolder::RunFolder(std::string path, bool writes)
    : path_(std::move(path)), metrics_((fs::path(path_) / "metrics.jsonl").string()), writes_(writes) {
  if (!writes_) return;
  fs::create_directories(fs::path(path_) / "checkpoints");
  fs::create_directories(fs::path(path_) / "images");
}

std::string RunFolder::checkpoints() const { return (fs::path(path_) / "checkpoints").string(); }

void RunFolder::write_config(const nlohmann::json& resolved) {
  if (!writes_) return;
  io::write_file_atomically((fs::path(path_) / "config.yaml").string(), [&](std::ostream& out) { out << config::to_yaml(resolved); });
}

void RunFolder::append_metrics(const nlohmann::json& line) {
  if (!writes_) return;
  std::ofstream out(metrics_, std::ios::app);
  out << json_text(line) << "\n";
  out.close();
  if (!out) throw Error(metrics_ + ": cannot append the metrics line: " + std::strerror(errno));
}

void RunFolder::rewind_to(int64_t step) {
  if (!writes_) return;
  remove_stale_temporaries(checkpoints());
  remove_stale_temporaries(path_);
  std::ifstream in(metrics_);
  if (!in) return;
  std::string kept, line;
  while (std::getline(in, line))
    if (!line.empty()) {
      // A line cut short by a crash parses to nothing and is dropped with everything after the checkpoint.
      const nlohmann::json j = nlohmann::json::parse(line, nullptr, false);
      if (j.is_object() && j.value("step", int64_t{0}) <= step) kept += line + "\n";
    }
  in.close();
  io::write_file_atomically(metrics_, [&](std::ostream& out) { out << kept; });
}

void RunFolder::write_grid(int64_t step, const io::Image& grid) {
  if (!writes_) return;
  io::write_png((fs::path(path_) / "images" / numbered("val_%08lld.png", step)).string(), grid);
  io::write_png((fs::path(path_) / "images" / "latest.png").string(), grid);
}

void RunFolder::save(TrainStep& step, const CheckpointState& state, at::Generator& noise, int64_t keep) {
  if (!writes_) return;
  save_checkpoint((fs::path(checkpoints()) / numbered("step_%08lld.safetensors", state.step)).string(), step, state, noise);
  prune_checkpoints(checkpoints(), keep);
  export_autoencoder((fs::path(path_) / "autoencoder.safetensors").string(), *step.autoencoder);
}

std::string RunFolder::last_checkpoint_note() const {
  try {
    return "; the last good checkpoint is " + find_checkpoint(checkpoints());
  } catch (const Error&) {
    return "; no checkpoint was written before";
  }
}

}  // namespace vavae::train
