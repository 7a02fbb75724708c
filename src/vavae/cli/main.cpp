// vavae: train and run VA-VAE image tokenizers.
#include <torch/version.h>

#include <filesystem>
#include <iostream>
#include <new>
#include <sstream>

#include "vavae/cli/common.h"
#include "vavae/common/error.h"
#include "vavae/common/runtime.h"
#include "vavae/config/model_config.h"
#include "vavae/dist/launcher.h"
#include "vavae/dist/process_group.h"
#include "vavae/io/weights.h"
#include "vavae/nn/convolution.h"

namespace vavae::cli {

void add_runtime_options(CLI::App& app, RuntimeOptions& options) {
  app.add_option("--threads", options.threads, "CPU threads for LibTorch (0 = all cores)")->capture_default_str();
  app.add_option("--device", options.device, "cpu, cuda or auto")->capture_default_str();
}

torch::Device apply_runtime_options(const RuntimeOptions& options) {
  configure_threads(options.threads);
  return resolve_device(options.device);
}

void add_model_options(CLI::App& app, ModelOptions& options) {
  app.add_option("--config", options.config, "model config (YAML or JSON, upstream layout)")->required();
  app.add_option("--weights", options.weights, "weights: safetensors or a torch checkpoint (.pt/.pth/.ckpt)")->required();
  app.add_flag("--partial", options.partial, "accept weights that miss some model tensors");
}

namespace {
std::vector<std::string>& arguments() {
  static std::vector<std::string> stored;
  return stored;
}
}  // namespace

const std::vector<std::string>& program_arguments() { return arguments(); }
void set_program_arguments(int argc, char** argv) { arguments().assign(argv, argv + argc); }

void add_nproc_option(CLI::App& app, int& nproc) {
  app.add_option("--nproc", nproc, "data-parallel ranks on this machine over loopback (without torchrun)")
      ->capture_default_str()
      ->check(CLI::Range(1, 1024));
}

bool run_as_local_ranks(int nproc) {
  if (nproc <= 1) return false;
  if (dist::launch_from_environment().world_size > 1) throw Error("--nproc starts the ranks itself; under torchrun or srun leave it out");
  std::vector<std::string> rest;  // the command line again, without --nproc
  const auto& all = program_arguments();
  for (size_t i = 1; i < all.size(); ++i) {
    if (all[i] == "--nproc") {
      ++i;
      continue;
    }
    if (all[i].rfind("--nproc=", 0) != 0) rest.push_back(all[i]);
  }
  dist::run_local_ranks(nproc, rest);
  return true;
}

void add_dist_options(CLI::App& app, DistOptions& options) {
  add_nproc_option(app, options.nproc);
  app.add_option("--dist-timeout", options.timeout_s, "data parallel: seconds a rank waits for the others")->capture_default_str();
}

RankContext join_ranks(const RuntimeOptions& runtime, const DistOptions& options) {
  const dist::Launch launch = dist::launch_from_environment();
  RuntimeOptions shared = runtime;
  shared.threads = dist::threads_per_rank(runtime.threads, launch);
  RankContext r;
  r.device = dist::rank_device(apply_runtime_options(shared), launch);
  r.group = dist::group_from_environment(r.device, std::chrono::milliseconds(static_cast<int64_t>(options.timeout_s * 1000)));
  return r;
}

nn::AutoencoderKL load_autoencoder(const ModelOptions& options, torch::Device device, nn::AutoencoderParts parts) {
  nn::AutoencoderKL model(config::load_autoencoder_config(options.config), parts);
  const io::WeightFile weights = io::read_weights(options.weights);
  io::LoadOptions load;
  load.partial = options.partial;
  const io::LoadReport report = io::load_into(*model, weights, load);
  std::cerr << options.weights << ": " << report.summary() << "\n";
  model->to(device);
  model->eval();
  return model;
}

}  // namespace vavae::cli

namespace {

// What this build can do (vavae --version): its LibTorch, the GPUs that LibTorch sees, the
// process groups and the CPU convolution path compiled in.
std::string build_description() {
  std::ostringstream s;
  s << "vavae, LibTorch " << TORCH_VERSION << "\n";
  s << "CUDA devices: " << (torch::cuda::is_available() ? torch::cuda::device_count() : 0) << "\n";
  s << "process groups: gloo" << (vavae::dist::nccl_built() ? ", nccl" : "") << "\n";
#ifdef VAVAE_WITH_ONEDNN
  s << "CPU 3x3 convolutions: " << vavae::nn::convolution_algorithm_name()
    << " (oneDNN Winograd and cached frozen layouts built in; VAVAE_CONV=direct|winograd)";
#else
  s << "CPU 3x3 convolutions: LibTorch's (no system oneDNN to share with this LibTorch)";
#endif
  return s.str();
}

// Every failure ends the same way: one line (file names and keys from files made printable), exit 1.
int report_error(const std::string& message) {
  std::string line = vavae::printable(message, 2000);
  std::cerr << "error: " << line << "\n";
  return 1;
}

}  // namespace

int main(int argc, char** argv) {
  vavae::request_huge_pages(argv);
  vavae::configure_allocator();
  vavae::cli::set_program_arguments(argc, argv);
  CLI::App app{"vavae: train and run VA-VAE image tokenizers (LDM AutoencoderKL + VF loss)"};
  app.require_subcommand(1);
  app.set_version_flag("--version", build_description, "show what this build can do (LibTorch, CUDA, process groups) and exit");
  vavae::cli::add_inspect_command(app);
  vavae::cli::add_codec_commands(app);
  vavae::cli::add_bench_command(app);
  vavae::cli::add_foundation_commands(app);
  vavae::cli::add_train_commands(app);
  vavae::cli::add_eval_commands(app);
  vavae::cli::add_dit_commands(app);
  try {
    vavae::nn::convolution_algorithm();  // a bad VAVAE_CONV stops the program before any work
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  } catch (const vavae::Error& e) {
    return report_error(e.what());
  } catch (const c10::Error& e) {
    const std::string msg = e.what_without_backtrace();
    return report_error(msg.substr(0, msg.find('\n')));
  } catch (const std::bad_alloc&) {
    return report_error("out of memory");
  } catch (const std::filesystem::filesystem_error& e) {
    return report_error(e.what());
  } catch (const std::exception& e) {
    return report_error(e.what());
  } catch (...) {
    return report_error("unknown failure");
  }
  return 0;
}
