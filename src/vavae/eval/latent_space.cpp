#include "vavae/eval/latent_space.h"

#include <cmath>
#include <limits>

#include "vavae/common/error.h"
#include "vavae/common/runtime.h"

namespace vavae::eval {
namespace {

constexpr double kMachineEpsilon = std::numeric_limits<double>::epsilon();

torch::Tensor squared_distances(const torch::Tensor& x) {  // [N, D] -> [N, N], exact zeros on the diagonal
  const torch::Tensor norms = x.pow(2).sum(1);
  torch::Tensor d = (norms.unsqueeze(1) + norms.unsqueeze(0) - 2 * torch::matmul(x, x.t())).clamp_min(0);
  return d.fill_diagonal_(0);
}

// sklearn's _binary_search_perplexity, all rows at once: the conditional P(j|i) whose entropy
// (in nats) is log(perplexity), 100 bisection steps on each row's precision beta.
torch::Tensor conditional_probabilities(const torch::Tensor& distances, double perplexity) {
  const int64_t n = distances.size(0);
  const double target = std::log(perplexity);
  const auto options = distances.options();
  torch::Tensor beta = torch::ones({n, 1}, options);
  torch::Tensor low = torch::full({n, 1}, -std::numeric_limits<double>::infinity(), options);
  torch::Tensor high = torch::full({n, 1}, std::numeric_limits<double>::infinity(), options);
  const torch::Tensor off_diagonal = 1 - torch::eye(n, options);
  torch::Tensor p;
  for (int step = 0; step < 100; ++step) {
    p = torch::exp(-distances * beta) * off_diagonal;
    const torch::Tensor sum = p.sum(1, true).clamp_min(1e-8);
    p = p / sum;
    const torch::Tensor entropy = torch::log(sum) + beta * (distances * p).sum(1, true);
    const torch::Tensor diff = entropy - target;
    if (diff.abs().max().item<double>() <= 1e-5) break;
    const torch::Tensor too_flat = diff > 0;  // entropy too high: raise beta
    low = torch::where(too_flat, beta, low);
    high = torch::where(too_flat, high, beta);
    const torch::Tensor up = torch::where(torch::isinf(high), beta * 2, (beta + high) / 2);
    const torch::Tensor down = torch::where(torch::isinf(low), beta / 2, (beta + low) / 2);
    beta = torch::where(too_flat, up, down);
  }
  return p;
}

}  // namespace

Spectrum covariance_spectrum(const torch::Tensor& vectors) {
  if (vectors.dim() != 2 || vectors.size(0) < 2) throw Error("covariance spectrum: needs [N >= 2, C] vectors, got " + shape_string(vectors.sizes()));
  const torch::Tensor x = vectors.to(torch::kFloat64);
  const torch::Tensor centered = x - x.mean(0, true);
  const torch::Tensor covariance = torch::matmul(centered.t(), centered) / static_cast<double>(x.size(0) - 1);
  const torch::Tensor values = std::get<0>(torch::linalg_eigh(covariance, "L")).flip(0).clamp_min(0);
  Spectrum s{values, 0.0};
  const double total = values.sum().item<double>();
  if (total <= 0) return s;
  const torch::Tensor p = values / total;
  s.effective_rank = std::exp(-(p * torch::log(p.clamp_min(1e-300))).sum().item<double>());
  return s;
}

torch::Tensor tsne(const torch::Tensor& points, const TsneOptions& o) {
  const int64_t n = points.size(0);
  if (points.dim() != 2 || n < 4) throw Error("t-SNE: needs [N >= 4, D] points, got " + shape_string(points.sizes()));
  if (o.perplexity <= 0 || o.perplexity >= static_cast<double>(n))
    throw Error("t-SNE: the perplexity must lie between 0 and the number of points (" + std::to_string(n) + ")");
  torch::NoGradGuard no_grad;
  const torch::Tensor x = points.to(torch::kFloat64);
  const torch::Tensor conditional = conditional_probabilities(squared_distances(x), o.perplexity);
  torch::Tensor p = conditional + conditional.t();
  p = (p / p.sum().clamp_min(kMachineEpsilon)).clamp_min(kMachineEpsilon);

  // PCA initialisation, first component scaled to std 1e-4.
  const torch::Tensor centered = x - x.mean(0, true);
  const auto svd = torch::linalg_svd(centered, /*full_matrices=*/false);
  torch::Tensor y = torch::matmul(centered, std::get<2>(svd).slice(0, 0, 2).t());
  y = y / y.select(1, 0).std(false) * 1e-4;

  const double learning_rate = std::max(static_cast<double>(n) / o.early_exaggeration / 4.0, 50.0);
  torch::Tensor update = torch::zeros_like(y), gains = torch::ones_like(y);
  for (int64_t it = 0; it < o.iterations; ++it) {
    const bool exaggerated = it < o.exaggeration_iterations;
    const torch::Tensor w = 1.0 / (1.0 + squared_distances(y));  // Student t, one degree of freedom
    const torch::Tensor off = w.fill_diagonal_(0);
    const torch::Tensor q = (off / off.sum()).clamp_min(kMachineEpsilon);
    const torch::Tensor m = ((exaggerated ? p * o.early_exaggeration : p) - q) * off;
    torch::Tensor grad = 4.0 * (m.sum(1, true) * y - torch::matmul(m, y));
    const torch::Tensor same_direction = update * grad < 0;
    gains = torch::where(same_direction, gains + 0.2, gains * 0.8).clamp_min(0.01);
    update = (exaggerated ? 0.5 : 0.8) * update - learning_rate * gains * grad;
    y = y + update;
  }
  return y;
}

torch::Tensor gaussian_kde_at_points(const torch::Tensor& points) {
  const int64_t n = points.size(0), d = points.size(1);
  if (points.dim() != 2 || n <= d) throw Error("Gaussian KDE: needs more points than dimensions, got " + shape_string(points.sizes()));
  const torch::Tensor x = points.to(torch::kFloat64);
  const torch::Tensor centered = x - x.mean(0, true);
  const double factor = std::pow(static_cast<double>(n), -1.0 / static_cast<double>(d + 4));  // Scott's rule
  const torch::Tensor covariance = torch::matmul(centered.t(), centered) / static_cast<double>(n - 1) * (factor * factor);
  const torch::Tensor chol = torch::linalg_cholesky(covariance);
  const torch::Tensor whitened = torch::linalg_solve_triangular(chol, x.t(), /*upper=*/false, /*left=*/true, /*unitriangular=*/false).t();
  const double norm = std::pow(2 * M_PI, static_cast<double>(d) / 2.0) * chol.diagonal().prod().item<double>();
  return torch::exp(-0.5 * squared_distances(whitened)).mean(1) / norm;
}

Uniformity uniformity_of_densities(const torch::Tensor& densities) {
  const torch::Tensor d = densities.to(torch::kFloat64).flatten();
  const int64_t n = d.numel();
  if (n < 2) throw Error("uniformity: needs at least two densities");
  Uniformity u;
  const double mean = d.mean().item<double>();
  u.density_std = d.std(false).item<double>();
  u.density_cv = u.density_std / mean;
  const torch::Tensor p = d / d.sum();
  u.normalized_entropy = -(p * torch::log2(p + 1e-10)).sum().item<double>() / std::log2(static_cast<double>(n));
  const torch::Tensor sorted = std::get<0>(d.sort());
  const torch::Tensor index = torch::arange(1, n + 1, d.options());
  u.gini = ((2 * index - static_cast<double>(n) - 1) * sorted).sum().item<double>() / (static_cast<double>(n) * sorted.sum().item<double>());
  return u;
}

}  // namespace vavae::eval
