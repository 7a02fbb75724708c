// vavae fid (the Fréchet distance of two image folders, feature sets or statistics) and
// vavae latent-stats (LightningDiT's latent normalisation).
#include <filesystem>
#include <iomanip>
#include <iostream>

#include "vavae/cli/common.h"
#include "vavae/common/error.h"
#include "vavae/data/dataset.h"
#include "vavae/data/latent_folder.h"
#include "vavae/dist/process_group.h"
#include "vavae/eval/feature_net.h"
#include "vavae/eval/fid.h"
#include "vavae/eval/latent_report.h"
#include "vavae/eval/tokenizer_eval.h"
#include "vavae/io/files.h"
#include "vavae/io/image.h"
#include "vavae/io/safetensors.h"

namespace vavae::cli {
namespace {

struct FidOptions {
  std::string first, second, save, inception, feature_net;
  int64_t batch_size = 50;
  RuntimeOptions runtime;
};

// An image folder (its images, as pytorch-fid lists them), "stats.npz" (pytorch-fid's mu and sigma)
// or "features.safetensors[:tensor]" ([N, D] features; the tensor may be omitted when the file
// holds one 2-D tensor).
eval::FeatureStatistics statistics_of(const std::string& spec, const FidOptions& o, nn::FIDInceptionV3& inception, torch::Device device) {
  if (io::ends_with(spec, ".npz")) return eval::read_npz_statistics(spec);
  if (!o.feature_net.empty() && !io::ends_with(spec, ".safetensors") && spec.find(".safetensors:") == std::string::npos) {
    const auto dataset = data::open_dataset(spec);  // a folder, fashion-mnist:test, idx:DIR:split, a list
    std::vector<io::Image> images;
    for (size_t i = 0; i < dataset->size(); ++i) images.push_back(dataset->image(i));
    std::cout << "fid: " << images.size() << " images in " << dataset->describe() << ", features of " << o.feature_net << std::endl;
    eval::FeatureNet net = eval::load_feature_net(o.feature_net, device);
    return eval::feature_statistics(eval::feature_net_features(*net, images, o.batch_size, device));
  }
  const auto colon = spec.rfind(':');
  const bool named = colon != std::string::npos && io::ends_with(spec.substr(0, colon), ".safetensors");
  const std::string path = named ? spec.substr(0, colon) : spec;
  if (std::filesystem::is_directory(path)) {
    if (o.inception.empty())
      throw Error(path + ": an image folder needs the Inception weights: --inception pt_inception-2015-12-05-6726825d.pth");
    if (!inception) {
      inception = nn::FIDInceptionV3();
      nn::load_fid_inception(*inception, o.inception);
      inception->to(device);
    }
    const auto files = io::list_images(path);
    std::cout << "fid: " << files.size() << " images in " << path << std::endl;
    return eval::feature_statistics(eval::inception_features(*inception, files, o.batch_size, device));
  }
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

void add_latent_stats_command(CLI::App& app) {
  auto* cmd = app.add_subcommand("latent-stats", "LightningDiT's latent normalisation of a latent folder: latents_stats.pt");
  auto folder = std::make_shared<std::string>();
  auto seed = std::make_shared<uint64_t>(0);
  cmd->add_option("folder", *folder, "the folder of latents_rankRR_shardSSS.safetensors files")->required();
  cmd->add_option("--seed", *seed, "which 10,000 items are drawn when there are more")->capture_default_str();
  cmd->callback([folder, seed] {
    const data::LatentStats stats = data::compute_latent_stats(*folder, *seed);
    data::write_latent_stats(*folder, stats);
    std::cout << "latent statistics over " << stats.mean.size(1) << " channels: mean " << stats.mean.mean().item<double>()
              << " (average), std " << stats.std.mean().item<double>() << " (average); wrote " << *folder
              << "/latents_stats.pt and stats/latents_stats.safetensors" << std::endl;
  });
}

void add_extract_latents_command(CLI::App& app) {
  auto* cmd = app.add_subcommand("extract-latents", "encode an ImageFolder into LightningDiT's latent shards (extract_features.py)");
  struct Options {
    ModelOptions model;
    RuntimeOptions runtime;
    data::ExtractOptions extract;
    bool stats = true;
    DistOptions dist;
  };
  auto o = std::make_shared<Options>();
  add_model_options(*cmd, o->model);
  add_runtime_options(*cmd, o->runtime);
  cmd->add_option("--data", o->extract.data, "labelled image folder (ROOT/CLASS/IMAGE, as ImageFolder) or dataset (fashion-mnist:train, ...)")->required();
  cmd->add_option("--output", o->extract.output, "folder for latents_rank00_shardSSS.safetensors")->required();
  cmd->add_option("--resolution", o->extract.resolution, "ADM centre-crop size")->capture_default_str();
  cmd->add_option("--pad", o->extract.pad, "zero padding on every side before the crop")->capture_default_str()->check(CLI::NonNegativeNumber);
  cmd->add_option("--batch-size", o->extract.batch_size, "images per batch")->capture_default_str()->check(CLI::PositiveNumber);
  cmd->add_option("--images-per-shard", o->extract.images_per_shard, "images per shard (rounded down to whole batches, as upstream)")
      ->capture_default_str();
  cmd->add_option("--seed", o->extract.seed, "seed of the posterior samples")->capture_default_str();
  cmd->add_flag("!--no-stats", o->stats, "do not write latents_stats.pt afterwards");
  add_dist_options(*cmd, o->dist);
  cmd->callback([o] {
    if (run_as_local_ranks(o->dist.nproc)) return;
    const auto [device, group] = join_ranks(o->runtime, o->dist);
    o->extract.rank = group->rank(), o->extract.world_size = group->size();
    nn::AutoencoderKL model = load_autoencoder(o->model, device, nn::AutoencoderParts::encoder);
    data::extract_latents(*model, o->extract, device);
    group->barrier();  // every rank's shards are written
    if (!o->stats || !group->is_root()) return;
    data::write_latent_stats(o->extract.output, data::compute_latent_stats(o->extract.output, o->extract.seed));
    std::cout << "extract-latents: wrote " << o->extract.output << "/latents_stats.pt" << std::endl;
  });
}

void add_tokenizer_eval_command(CLI::App& app) {
  auto* cmd = app.add_subcommand("eval", "reconstruct an image folder and report rFID, PSNR, SSIM and LPIPS (evaluate_tokenizer.py)");
  struct Options {
    ModelOptions model;
    RuntimeOptions runtime;
    eval::TokenizerEvalOptions eval;
    std::string data, lpips, lpips_heads, inception, posterior = "sample";
    DistOptions dist;
  };
  auto o = std::make_shared<Options>();
  add_model_options(*cmd, o->model);
  add_runtime_options(*cmd, o->runtime);
  cmd->add_option("--data", o->data, "image folder (ImageFolder: ROOT/CLASS/IMAGE) or dataset (fashion-mnist:test, list.txt, ...)")->required();
  cmd->add_option("--output", o->eval.output, "folder for metrics.csv, summary.json, worst.png, ref_images/, decoded_images/")->required();
  cmd->add_option("--resolution", o->eval.resolution, "Resize + CenterCrop size")->capture_default_str()->check(CLI::PositiveNumber);
  cmd->add_option("--pad", o->eval.pad, "zero padding on every side first (2 for Fashion-MNIST at 32 px)")->capture_default_str()->check(CLI::NonNegativeNumber);
  cmd->add_option("--batch-size", o->eval.batch_size, "images per batch (SSIM and LPIPS average batch means, as upstream)")
      ->capture_default_str()->check(CLI::PositiveNumber);
  cmd->add_option("--limit", o->eval.limit, "evaluate the first N images only (0: all)")->capture_default_str()->check(CLI::NonNegativeNumber);
  cmd->add_option("--worst", o->eval.worst, "reconstructions shown in worst.png")->capture_default_str()->check(CLI::NonNegativeNumber);
  cmd->add_option("--posterior", o->posterior, "sample (upstream) or mode")->capture_default_str()->check(CLI::IsMember({"sample", "mode"}));
  cmd->add_option("--seed", o->eval.seed, "seed of the posterior samples")->capture_default_str();
  cmd->add_flag("!--no-images", o->eval.save_images, "do not write ref_images/ and decoded_images/");
  cmd->add_option("--lpips", o->lpips, "LPIPS weights (upstream LPIPS names, or torchvision vgg16 with --lpips-heads)");
  cmd->add_option("--lpips-heads", o->lpips_heads, "LPIPS vgg.pth heads beside torchvision vgg16 weights");
  cmd->add_option("--inception", o->inception, "FID Inception weights for rFID (pt_inception-2015-12-05-6726825d.pth or safetensors)");
  add_dist_options(*cmd, o->dist);
  cmd->callback([o] {
    if (run_as_local_ranks(o->dist.nproc)) return;
    const auto [device, group] = join_ranks(o->runtime, o->dist);
    o->eval.sample_posterior = o->posterior == "sample";
    nn::AutoencoderKL model = load_autoencoder(o->model, device);
    nn::LPIPS lpips{nullptr};
    if (!o->lpips.empty()) {
      lpips = nn::LPIPS();
      nn::load_lpips(*lpips, o->lpips, o->lpips_heads);
      lpips->to(device);
    }
    nn::FIDInceptionV3 inception{nullptr};
    if (!o->inception.empty()) {
      inception = nn::FIDInceptionV3();
      nn::load_fid_inception(*inception, o->inception);
      inception->to(device);
    }
    const auto dataset = data::open_labelled_dataset(o->data);
    if (group->is_root()) std::cout << "eval: " << dataset->describe() << std::endl;
    const eval::TokenizerEvalResult r =
        eval::evaluate_tokenizer(*model, *dataset, o->eval, device, lpips.is_empty() ? nullptr : lpips.get(),
                                 inception.is_empty() ? nullptr : inception.get(), group.get());
    if (!group->is_root()) return;
    eval::write_tokenizer_eval(r, o->eval, o->model.weights, o->data);
    std::cout << eval::tokenizer_eval_table(r) << "eval: wrote " << o->eval.output << "/summary.json, metrics.csv"
              << (r.worst.height > 0 ? ", worst.png" : "") << std::endl;
  });
}

void add_latent_report_command(CLI::App& app) {
  auto* cmd = app.add_subcommand("latent-report", "statistics, spectrum, uniformity and linear probe of latent folders, side by side (latent_report.html)");
  struct Options {
    std::vector<std::string> folders, names;
    std::string output;
    eval::LatentReportOptions report;
    RuntimeOptions runtime;
  };
  auto o = std::make_shared<Options>();
  cmd->add_option("folders", o->folders, "latent folders (extract-latents output), one column each")->required();
  cmd->add_option("--name", o->names, "a name per folder (default: the folder's name)");
  cmd->add_option("--output", o->output, "folder for latent_report.html and latent_report.json")->required();
  cmd->add_option("--images", o->report.images, "items drawn for statistics, spectrum and probe")->capture_default_str()->check(CLI::PositiveNumber);
  cmd->add_option("--points", o->report.points, "latent vectors in the t-SNE embedding")->capture_default_str()->check(CLI::Range(8, 20000));
  cmd->add_option("--perplexity", o->report.tsne.perplexity, "t-SNE perplexity")->capture_default_str();
  cmd->add_option("--iterations", o->report.tsne.iterations, "t-SNE iterations")->capture_default_str()->check(CLI::PositiveNumber);
  cmd->add_option("--seed", o->report.seed, "which items and vectors are drawn")->capture_default_str();
  add_runtime_options(*cmd, o->runtime);
  cmd->callback([o] {
    apply_runtime_options(o->runtime);
    if (!o->names.empty() && o->names.size() != o->folders.size())
      throw Error("latent-report: " + std::to_string(o->names.size()) + " names for " + std::to_string(o->folders.size()) + " folders");
    std::vector<eval::LatentReport> reports;
    for (size_t i = 0; i < o->folders.size(); ++i) {
      const std::string name = o->names.empty() ? std::filesystem::path(o->folders[i]).lexically_normal().filename().string() : o->names[i];
      reports.push_back(eval::analyse_latent_folder(o->folders[i], name, o->report));
      const auto& r = reports.back();
      std::cout << name << ": effective rank " << r.spectrum.effective_rank << " of " << r.channels << ", density CV "
                << r.uniformity.density_cv << ", Gini " << r.uniformity.gini << ", normalised entropy " << r.uniformity.normalized_entropy;
      if (r.probed) std::cout << ", linear probe " << r.probe.test_accuracy;
      std::cout << std::endl;
    }
    std::cout << "latent-report: wrote " << eval::write_latent_report(reports, o->report, o->output) << std::endl;
  });
}

void add_eval_commands(CLI::App& app) {
  add_tokenizer_eval_command(app);
  add_latent_report_command(app);
  add_latent_stats_command(app);
  add_extract_latents_command(app);
  auto* cmd = app.add_subcommand("fid", "FID between two image folders, feature sets or pytorch-fid statistics (.npz)");
  auto o = std::make_shared<FidOptions>();
  cmd->add_option("first", o->first, "image folder, stats.npz or features.safetensors[:tensor]")->required();
  cmd->add_option("second", o->second, "image folder, stats.npz or features.safetensors[:tensor]")->required();
  cmd->add_option("--inception", o->inception, "FID Inception weights (pt_inception-2015-12-05-6726825d.pth or safetensors)");
  cmd->add_option("--feature-net", o->feature_net,
                  "a train-feature-net network instead of Inception (for data without Inception weights; not comparable with FID); "
                  "then a dataset spec such as fashion-mnist:test also works");
  cmd->add_option("--batch-size", o->batch_size, "images per Inception batch")->capture_default_str()->check(CLI::PositiveNumber);
  cmd->add_option("--save-stats", o->save, "also write the first set's statistics as pytorch-fid's .npz");
  add_runtime_options(*cmd, o->runtime);
  cmd->callback([o] {
    const torch::Device device = apply_runtime_options(o->runtime);
    nn::FIDInceptionV3 inception{nullptr};
    const eval::FeatureStatistics first = statistics_of(o->first, *o, inception, device);
    const eval::FeatureStatistics second = statistics_of(o->second, *o, inception, device);
    if (!o->save.empty()) eval::write_npz_statistics(o->save, first);
    if (o->feature_net.empty())
      std::cout << "FID " << std::setprecision(10) << eval::frechet_distance(first, second) << std::endl;
    else  // not comparable with Inception FID: said on the line itself
      std::cout << "FD (feature network " << o->feature_net << ", not Inception) " << std::setprecision(10)
                << eval::frechet_distance(first, second) << std::endl;
  });
}

}  // namespace vavae::cli
