#pragma once
#include <torch/torch.h>

#include <string>
#include <vector>

#include "vavae/eval/latent_space.h"
#include "vavae/eval/linear_probe.h"
#include "vavae/io/image.h"

// vavae latent-report: what a latent folder (extract-latents' shards) looks like to a diffusion
// model: per-channel statistics, the covariance spectrum, how evenly a sample fills a 2-D
// embedding, and how linearly separable the classes are; one HTML page for one or more folders.
namespace vavae::eval {

struct LatentReportOptions {
  int64_t images = 10000;  // items drawn (seeded) for the statistics, the spectrum and the probe
  int64_t points = 2000;   // latent vectors (random item, flip and position, as latent_vis.py) in the embedding
  uint64_t seed = 0;
  TsneOptions tsne;
  int64_t probe_iterations = 100;
};

struct LatentReport {
  std::string name, folder;
  int64_t items = 0, channels = 0, height = 0, width = 0;
  torch::Tensor channel_mean, channel_std;  // [C] of the raw latents
  std::string normalization;                // where the mean and std that normalise the latents came from
  Spectrum spectrum;                        // of the normalised latent vectors (one per position)
  torch::Tensor embedding, densities;       // [P, 2] t-SNE of normalised vectors, [P] KDE density at each
  Uniformity uniformity;
  bool probed = false;                      // classes exist
  ProbeResult probe;                        // logistic regression on the flattened normalised latents
  int64_t probe_train = 0, probe_test = 0;
};

LatentReport analyse_latent_folder(const std::string& folder, const std::string& name, const LatentReportOptions& options);

// The embedding as a scatter plot, each point coloured by its density (viridis), densest on top.
io::Image density_scatter(const torch::Tensor& embedding, const torch::Tensor& densities, int64_t size = 420);

// OUTPUT/latent_report.html (the folders side by side), OUTPUT/latent_report.json and the density
// pictures as OUTPUT/density_K.png (K = 1, 2, ... in folder order); returns the page's path.
std::string write_latent_report(const std::vector<LatentReport>& reports, const LatentReportOptions& options,
                                const std::string& output);

}  // namespace vavae::eval
