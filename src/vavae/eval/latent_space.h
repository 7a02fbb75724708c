#pragma once
#include <torch/torch.h>

#include <cstdint>

// How a latent space is shaped: its covariance spectrum, a 2-D embedding of a sample, and how
// evenly that sample fills the embedding (LightningDiT's tools/latent_vis.py analysis).
namespace vavae::eval {

struct Spectrum {
  torch::Tensor eigenvalues;  // [C] float64, descending: the covariance of the vectors
  double effective_rank = 0;  // exp(entropy of eigenvalues / their sum) (Roy & Vetterli): C for a white space, 1 for a line
};
// The spectrum of the unbiased covariance of [N, C] vectors.
Spectrum covariance_spectrum(const torch::Tensor& vectors);

struct TsneOptions {
  double perplexity = 30;
  int64_t iterations = 1000;              // sklearn's n_iter, the exaggerated ones included
  int64_t exaggeration_iterations = 250;  // early exaggeration 12, momentum 0.5; then momentum 0.8
  double early_exaggeration = 12;
};
// Exact t-SNE (van der Maaten & Hinton) with sklearn's defaults: per-point bandwidths by binary
// search on the perplexity, PCA initialisation scaled to std 1e-4, learning rate
// max(N / 12 / 4, 50), gains and momentum. (latent_vis.py runs sklearn's Barnes-Hut
// approximation of the same objective.) [N, D] -> [N, 2] float64.
torch::Tensor tsne(const torch::Tensor& points, const TsneOptions& options = {});

// scipy.stats.gaussian_kde(points.T)(points.T): the Gaussian KDE with Scott's bandwidth
// (covariance of the points times n^(-2/(d+4))) evaluated at the points themselves. [N] float64.
torch::Tensor gaussian_kde_at_points(const torch::Tensor& points);

struct Uniformity {
  double density_std = 0;         // population std of the densities
  double density_cv = 0;          // std / mean: 0 when the sample fills its embedding evenly
  double normalized_entropy = 0;  // entropy of the normalised densities / log2 N: 1 when even
  double gini = 0;                // Gini coefficient of the densities: 0 when even
};
// latent_vis.py's calculate_uniformity_metrics of the densities at the points.
Uniformity uniformity_of_densities(const torch::Tensor& densities);

}  // namespace vavae::eval
