// vavae bench encode|decode: inference speed and peak memory, one JSON line like torch_ref.py.
#include <nlohmann/json.hpp>

#include <algorithm>
#include <chrono>
#include <iostream>

#include "vavae/cli/common.h"
#include "vavae/common/error.h"
#include "vavae/common/runtime.h"
#include "vavae/config/model_config.h"

namespace vavae::cli {
namespace {

struct BenchOptions {
  std::string what;
  std::string config;  // empty: the released f16d32 architecture
  int64_t batch = 1, resolution = 256, steps = 5, warmup = 1;
  RuntimeOptions runtime;
};

void run_bench(const BenchOptions& o) {
  const torch::Device device = apply_runtime_options(o.runtime);
  const nn::AutoencoderConfig config = o.config.empty() ? nn::AutoencoderConfig{} : config::load_autoencoder_config(o.config);
  if (o.resolution % config.downsample_factor() != 0)
    throw Error("--res " + std::to_string(o.resolution) + " is not divisible by " + std::to_string(config.downsample_factor()));
  torch::manual_seed(0);
  nn::AutoencoderKL model(config);
  model->to(device);
  model->eval();
  torch::NoGradGuard no_grad;
  const int64_t latent = o.resolution / config.downsample_factor();
  const torch::Tensor input = o.what == "encode"
                                  ? torch::rand({o.batch, config.in_channels, o.resolution, o.resolution}, device) * 2 - 1
                                  : torch::randn({o.batch, config.embed_dim, latent, latent}, device);
  auto step = [&] {
    if (o.what == "encode") model->encode(input).sample();
    else model->decode(input);
    if (device.is_cuda()) torch::cuda::synchronize();
  };
  for (int64_t i = 0; i < o.warmup; ++i) step();
  std::vector<double> seconds;
  for (int64_t i = 0; i < o.steps; ++i) {
    const auto t0 = std::chrono::steady_clock::now();
    step();
    seconds.push_back(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
  }
  std::sort(seconds.begin(), seconds.end());
  const double median = seconds[seconds.size() / 2];
  nlohmann::json out = {{"impl", "vavae"},       {"bench", o.what},
                        {"batch", o.batch},      {"res", o.resolution},
                        {"threads", at::get_num_threads()}, {"device", device.str()},
                        {"s_per_step", median},  {"images_per_s", static_cast<double>(o.batch) / median},
                        {"peak_rss_mb", peak_rss_mib()}};
  std::cout << out.dump() << std::endl;
}

}  // namespace

void add_bench_command(CLI::App& app) {
  auto* cmd = app.add_subcommand("bench", "time encode or decode of the f16d32 model (or --config) with random weights");
  auto o = std::make_shared<BenchOptions>();
  cmd->add_option("what", o->what, "encode or decode")->required()->check(CLI::IsMember({"encode", "decode"}));
  cmd->add_option("--config", o->config, "model config (default: the released f16d32 architecture)");
  cmd->add_option("--batch", o->batch, "batch size")->capture_default_str()->check(CLI::PositiveNumber);
  cmd->add_option("--res", o->resolution, "image resolution")->capture_default_str()->check(CLI::PositiveNumber);
  cmd->add_option("--steps", o->steps, "timed iterations (median reported)")->capture_default_str()->check(CLI::PositiveNumber);
  cmd->add_option("--warmup", o->warmup, "untimed iterations first")->capture_default_str();
  add_runtime_options(*cmd, o->runtime);
  cmd->callback([o] { run_bench(*o); });
}

}  // namespace vavae::cli
