#include "vavae/loss/vf_loss.h"

#include "vavae/common/error.h"
#include "vavae/common/runtime.h"

namespace vavae::loss {
namespace {

namespace F = torch::nn::functional;
using torch::autograd::AutogradContext;
using torch::autograd::tensor_list;

// Rows per block so one block of one Gram matrix stays near 16 MiB.
int64_t default_rows_per_block(int64_t batch, int64_t n) {
  const int64_t budget = (16ll << 20) / 4;
  return std::max<int64_t>(1, std::min<int64_t>(n, budget / std::max<int64_t>(1, batch * n)));
}

// Rows [r0, r1) of G_z - G_f, [B, r1 - r0, N], from the position-major copies znT, fnT [B, N, D]
// (contiguous, so every block is a plain batched matrix product).
torch::Tensor gram_difference_rows(const torch::Tensor& znT, const torch::Tensor& fnT, int64_t r0, int64_t r1) {
  torch::Tensor d = torch::bmm(znT.slice(1, r0, r1), znT.transpose(1, 2));
  return d.sub_(torch::bmm(fnT.slice(1, r0, r1), fnT.transpose(1, 2)));
}

struct MarginalDistanceMatrix : torch::autograd::Function<MarginalDistanceMatrix> {
  static torch::Tensor forward(AutogradContext* ctx, torch::Tensor zn, torch::Tensor fn, double margin, int64_t rows) {
    torch::NoGradGuard no_grad;
    const int64_t n = zn.size(2);
    const torch::Tensor znT = zn.transpose(1, 2).contiguous(), fnT = fn.transpose(1, 2).contiguous();
    torch::Tensor sum = torch::zeros({}, zn.options());
    for (int64_t r0 = 0; r0 < n; r0 += rows)
      sum += gram_difference_rows(znT, fnT, r0, std::min(n, r0 + rows)).abs_().sub_(margin).relu_().sum();
    ctx->save_for_backward({znT, fnT});
    ctx->saved_data["margin"] = margin;
    ctx->saved_data["rows"] = rows;
    return sum / static_cast<double>(zn.size(0) * n * n);
  }

  static tensor_list backward(AutogradContext* ctx, tensor_list grad_outputs) {
    const auto saved = ctx->get_saved_variables();
    const torch::Tensor& znT = saved[0];
    const torch::Tensor& fnT = saved[1];
    const double margin = ctx->saved_data["margin"].toDouble();
    const int64_t rows = ctx->saved_data["rows"].toInt();
    const int64_t b = znT.size(0), n = znT.size(1);
    // dL/dG_z = S = sign(d) [|d| > m] / (B N^2), symmetric, and G_z = zn^T zn, so
    // dL/dzn = 2 zn S, i.e. (dL/dzn)^T = 2 S zn^T: each row block of S gives its own rows.
    torch::Tensor gradT = torch::empty_like(znT);
    for (int64_t r0 = 0; r0 < n; r0 += rows) {
      const int64_t r1 = std::min(n, r0 + rows);
      torch::Tensor d = gram_difference_rows(znT, fnT, r0, r1);
      const torch::Tensor active = d.abs().gt_(margin);
      torch::Tensor rows_of_grad = gradT.slice(1, r0, r1);
      torch::bmm_out(rows_of_grad, d.sign_().mul_(active), znT);
    }
    const torch::Tensor scale = grad_outputs[0] * (2.0 / static_cast<double>(b * n * n));
    return {gradT.transpose(1, 2) * scale, torch::Tensor(), torch::Tensor(), torch::Tensor()};
  }
};

void check_inputs(const torch::Tensor& z_proj, const torch::Tensor& features) {
  if (z_proj.dim() != 4 || features.dim() != 4)
    throw Error("VF loss needs [B,D,h,w] tensors, got z' " + shape_string(z_proj.sizes()) + " and features " +
                shape_string(features.sizes()));
  if (z_proj.size(0) != features.size(0))
    throw Error("VF loss: batch sizes differ, z' " + shape_string(z_proj.sizes()) + " vs features " + shape_string(features.sizes()));
  if (z_proj.size(1) != features.size(1))
    throw Error("VF loss: the projection gives " + std::to_string(z_proj.size(1)) + " channels but the features have " +
                std::to_string(features.size(1)));
}

}  // namespace

torch::Tensor align_features(const torch::Tensor& features, int64_t h, int64_t w) {
  if (features.size(2) == h && features.size(3) == w) return features;
  if (features.size(2) * w != features.size(3) * h)
    throw Error("VF loss: the foundation model's " + std::to_string(features.size(2)) + "x" + std::to_string(features.size(3)) +
                " token grid cannot map to the " + std::to_string(h) + "x" + std::to_string(w) +
                " latent grid (aspect ratios differ; feed the foundation model images of the latent's aspect, e.g. input_size 0)");
  return F::interpolate(features, F::InterpolateFuncOptions()
                                      .size(std::vector<int64_t>{h, w})
                                      .mode(torch::kBilinear)
                                      .align_corners(false));
}

torch::Tensor marginal_distance_matrix_loss(const torch::Tensor& z_normalized, const torch::Tensor& f_normalized,
                                            double margin, int64_t rows_per_block) {
  const int64_t b = z_normalized.size(0), n = z_normalized.size(2);
  // Whole matrices of up to 64 MiB cost less than the blockwise copies and recomputation.
  const int64_t rows = rows_per_block > 0 ? rows_per_block
                       : b * n * n <= (64ll << 20) / 4 ? n
                                                      : default_rows_per_block(b, n);
  if (rows >= n) {  // upstream's formula, differentiated by autograd
    const torch::Tensor fn = f_normalized.detach();
    const torch::Tensor gram_z = torch::bmm(z_normalized.transpose(1, 2), z_normalized);
    return torch::relu((gram_z - torch::bmm(fn.transpose(1, 2), fn)).abs() - margin).mean();
  }
  return MarginalDistanceMatrix::apply(z_normalized, f_normalized.detach(), margin, rows);
}

VFLossTerms vf_loss(const torch::Tensor& z_proj, const torch::Tensor& features, const VFLossConfig& config) {
  check_inputs(z_proj, features);
  const torch::Tensor f = align_features(features, z_proj.size(2), z_proj.size(3)).detach();
  if (!torch::isfinite(z_proj).all().item<bool>() || !torch::isfinite(f).all().item<bool>())
    throw Error("VF loss: non-finite values in the latent projection or the foundation features");
  const int64_t b = z_proj.size(0), d = z_proj.size(1);
  const torch::Tensor zn = F::normalize(z_proj, F::NormalizeFuncOptions().dim(1)).reshape({b, d, -1});  // [B, D, N]
  const torch::Tensor fn = F::normalize(f, F::NormalizeFuncOptions().dim(1)).reshape({b, d, -1});
  VFLossTerms t;
  t.mdms = marginal_distance_matrix_loss(zn, fn, config.distmat_margin);
  t.mcos = torch::relu(1.0 - config.cos_margin - torch::cosine_similarity(f, z_proj, 1, 1e-8)).mean();
  t.total = t.mdms * config.distmat_weight + t.mcos * config.cos_weight;
  return t;
}

}  // namespace vavae::loss
