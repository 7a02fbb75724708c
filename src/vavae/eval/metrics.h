#pragma once
#include <torch/torch.h>

#include "vavae/io/image.h"

namespace vavae::eval {

// Both metrics work on 8-bit RGB images scaled to [0, 1] (data range 1).

// 10 * log10(1 / MSE) over all pixels and channels; +infinity for identical images.
double psnr(const io::Image& reference, const io::Image& distorted);

// SSIM (Wang et al. 2004) with scikit-image's conventions: 11x11 Gaussian window (sigma 1.5,
// truncated at 3.5 sigma), K1 = 0.01, K2 = 0.03, population (co)variances, per channel then
// averaged, mean over the valid region where the window fits (no padding). Computed in double.
double ssim(const io::Image& reference, const io::Image& distorted);

// psnr() and ssim() of each pair of two equally long lists of images of one size, in one pass of
// tensor operations: [N] float64 each, the same numbers as the per-image functions.
torch::Tensor psnr_each(const std::vector<io::Image>& reference, const std::vector<io::Image>& distorted);
torch::Tensor ssim_each(const std::vector<io::Image>& reference, const std::vector<io::Image>& distorted);

// torchmetrics' StructuralSimilarityIndexMeasure(data_range=(low, high)) per image, as
// evaluate_tokenizer.py calls it on [-1, 1] tensors: both batches clamped to [low, high],
// C1 = (0.01 (high - low))^2, C2 = (0.03 (high - low))^2, the same 11x11 Gaussian window over the
// valid region, variances clamped at 0, averaged over channels and pixels. [B] float64.
// Not the number ssim() gives for the same images: the luminance term is not shift-invariant, so
// [-1, 1] with range 2 and [0, 1] with range 1 differ.
torch::Tensor ssim_torchmetrics(const torch::Tensor& preds, const torch::Tensor& target, double low, double high);

}  // namespace vavae::eval
