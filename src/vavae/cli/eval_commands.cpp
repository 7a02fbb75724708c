// vavae fid: the Fréchet distance between two sets of features or statistics.
#include <filesystem>
#include <iomanip>
#include <iostream>

#include "vavae/cli/common.h"
#include "vavae/common/error.h"
#include "vavae/eval/fid.h"
#include "vavae/io/files.h"
#include "vavae/io/safetensors.h"

namespace vavae::cli {
namespace {

// "stats.npz" (pytorch-fid's mu and sigma) or "features.safetensors[:tensor]" ([N, D] features;
// the tensor may be omitted when the file holds one 2-D tensor).
eval::FeatureStatistics statistics_of(const std::string& spec) {
  if (io::ends_with(spec, ".npz")) return eval::read_npz_statistics(spec);
  const auto colon = spec.rfind(':');
  const bool named = colon != std::string::npos && io::ends_with(spec.substr(0, colon), ".safetensors");
  const std::string path = named ? spec.substr(0, colon) : spec;
  if (std::filesystem::is_directory(path))
    throw Error(path + ": image folders need InceptionV3 features, which vavae does not compute yet; give features "
                       "(.safetensors) or pytorch-fid statistics (.npz)");
  if (!io::ends_with(path, ".safetensors")) throw Error(spec + ": expected stats.npz or features.safetensors[:tensor]");
  io::SafetensorsReader reader(path);
  std::string name = named ? spec.substr(colon + 1) : "";
  if (name.empty()) {
    for (const auto& e : reader.entries())
      if (e.shape.size() == 2) {
        if (!name.empty()) throw Error(path + ": holds several 2-D tensors; name one as " + path + ":NAME");
        name = e.name;
      }
    if (name.empty()) throw Error(path + ": holds no [N, D] feature tensor");
  }
  return eval::feature_statistics(reader.tensor(name));
}

}  // namespace

void add_eval_commands(CLI::App& app) {
  auto* cmd = app.add_subcommand("fid", "Frechet distance between two feature sets or pytorch-fid statistics (.npz)");
  auto a = std::make_shared<std::string>(), b = std::make_shared<std::string>(), save = std::make_shared<std::string>();
  cmd->add_option("first", *a, "stats.npz or features.safetensors[:tensor]")->required();
  cmd->add_option("second", *b, "stats.npz or features.safetensors[:tensor]")->required();
  cmd->add_option("--save-stats", *save, "also write the first set's statistics as pytorch-fid's .npz");
  cmd->callback([a, b, save] {
    const eval::FeatureStatistics first = statistics_of(*a), second = statistics_of(*b);
    if (!save->empty()) eval::write_npz_statistics(*save, first);
    std::cout << "FID " << std::setprecision(10) << eval::frechet_distance(first, second) << std::endl;
  });
}

}  // namespace vavae::cli
