#pragma once
#include <CLI/CLI.hpp>

#include <memory>
#include <string>
#include <vector>

#include "vavae/dist/process_group.h"
#include "vavae/nn/autoencoder.h"

namespace vavae::cli {

struct RuntimeOptions {
  int threads = 0;  // 0: all cores
  std::string device = "cpu";
};
void add_runtime_options(CLI::App& app, RuntimeOptions& options);
torch::Device apply_runtime_options(const RuntimeOptions& options);  // sets threads, returns the device

struct ModelOptions {
  std::string config;
  std::string weights;
  bool partial = false;
};
void add_model_options(CLI::App& app, ModelOptions& options);
// Builds the autoencoder (its `parts`) from the config, loads the weights (reporting what was
// ignored, the other half's keys included, on stderr), moves it to `device` and switches to eval mode.
nn::AutoencoderKL load_autoencoder(const ModelOptions& options, torch::Device device,
                                   nn::AutoencoderParts parts = nn::AutoencoderParts::both);

// Encoded-image batches: runs `fn(first_index, batch)` over chunks of at most `batch_size`.
template <typename Fn>
void for_each_batch(int64_t count, int64_t batch_size, Fn&& fn) {
  for (int64_t start = 0; start < count; start += batch_size) fn(start, std::min(batch_size, count - start));
}

// The command line this process was started with (argv[0] first).
const std::vector<std::string>& program_arguments();
void set_program_arguments(int argc, char** argv);

// --nproc N: the command as N data-parallel ranks of this machine (over loopback, without torchrun).
void add_nproc_option(CLI::App& app, int& nproc);
// Starts the ranks and waits for them when nproc > 1 and this process is not a rank already;
// returns whether it did (then the caller has nothing left to do). Errors name a failed rank.
bool run_as_local_ranks(int nproc);

// A command that splits its work between ranks: --nproc and --dist-timeout.
struct DistOptions {
  int nproc = 1;
  double timeout_s = 3600;
};
void add_dist_options(CLI::App& app, DistOptions& options);
struct RankContext {
  torch::Device device = torch::kCPU;  // this rank's
  std::shared_ptr<dist::Group> group;
};
// After run_as_local_ranks: the runtime options applied, this rank's device and its group (a group
// of one without a launcher).
RankContext join_ranks(const RuntimeOptions& runtime, const DistOptions& options);

void add_inspect_command(CLI::App& app);
void add_codec_commands(CLI::App& app);  // encode, decode, reconstruct
void add_bench_command(CLI::App& app);
void add_foundation_commands(CLI::App& app);  // train-fm, probe
void add_train_commands(CLI::App& app);       // train, report, export
void add_eval_commands(CLI::App& app);
void add_dit_commands(CLI::App& app);         // dit train, dit sample

}  // namespace vavae::cli
