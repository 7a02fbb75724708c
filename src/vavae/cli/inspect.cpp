// vavae inspect FILE: what a weight file holds and how vavae reads it.
#include <iomanip>
#include <iostream>
#include <map>

#include "vavae/cli/common.h"
#include "vavae/common/runtime.h"
#include "vavae/io/weights.h"

namespace vavae::cli {
namespace {

std::string detect_layout(const io::NamedTensors& tensors, std::string& prefix) {
  for (const std::string p : {"", "first_stage_model.", "model.", "module.", "vae.", "autoencoder."})
    for (const auto& [name, t] : tensors)
      if (name == p + "encoder.conv_in.weight") {
        prefix = p;
        bool kl = false;
        for (const auto& [n, _] : tensors) kl |= n == p + "quant_conv.weight";
        return kl ? "LDM AutoencoderKL (VA-VAE tokenizer)" : "LDM encoder/decoder";
      }
  for (const auto& [name, t] : tensors) {
    if (name.find("net.slice1.") != std::string::npos || name.find("lin0.model.1.weight") != std::string::npos)
      return "LPIPS (VGG16 + linear heads)";
    if (name == "patch_embed.proj.weight" || name == "pos_embed") return "ViT (timm layout)";
  }
  return "unknown";
}

void run_inspect(const std::string& path, bool quiet) {
  const io::WeightFile file = io::read_weights(path);
  int64_t parameters = 0;
  std::map<std::string, int64_t> by_group;
  std::map<std::string, int64_t> by_dtype;
  for (const auto& [name, t] : file.tensors) {
    parameters += t.numel();
    by_group[printable(name.substr(0, name.find('.')), 80)] += t.numel();
    by_dtype[c10::toString(t.scalar_type())] += 1;
  }
  std::string prefix;
  const std::string layout = detect_layout(file.tensors, prefix);
  std::cout << "file:       " << printable(path, 4096) << "\n"
            << "format:     " << file.format << " (tensors at " << file.location << ")\n"
            << "layout:     " << layout << (prefix.empty() ? "" : " under prefix '" + prefix + "'") << "\n"
            << "tensors:    " << file.tensors.size() << "\n"
            << "parameters: " << parameters << "\n";
  std::cout << "dtypes:    ";
  for (const auto& [dtype, n] : by_dtype) std::cout << " " << dtype << " x" << n;
  std::cout << "\ngroups:    ";
  for (const auto& [group, n] : by_group) std::cout << " " << group << ".* (" << n << ")";
  std::cout << "\n";
  for (const auto& [key, value] : file.metadata) std::cout << "metadata:   " << printable(key, 80) << " = " << printable(value, 400) << "\n";
  if (quiet) return;
  for (const auto& [name, t] : file.tensors)
    std::cout << "  " << std::left << std::setw(60) << printable(name) << " " << std::setw(10) << c10::toString(t.scalar_type()) << " "
              << shape_string(t.sizes()) << "\n";
}

}  // namespace

void add_inspect_command(CLI::App& app) {
  auto* cmd = app.add_subcommand("inspect", "list the tensors, dtypes, shapes and layout of a weight file");
  auto path = std::make_shared<std::string>();
  auto quiet = std::make_shared<bool>(false);
  cmd->add_option("file", *path, "safetensors or torch checkpoint")->required();
  cmd->add_flag("--summary", *quiet, "print the summary only, not every tensor");
  cmd->callback([path, quiet] { run_inspect(*path, *quiet); });
}

}  // namespace vavae::cli
