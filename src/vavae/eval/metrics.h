#pragma once
#include "vavae/io/image.h"

namespace vavae::eval {

// Both metrics work on 8-bit RGB images scaled to [0, 1] (data range 1).

// 10 * log10(1 / MSE) over all pixels and channels; +infinity for identical images.
double psnr(const io::Image& reference, const io::Image& distorted);

// SSIM (Wang et al. 2004) with scikit-image's conventions: 11x11 Gaussian window (sigma 1.5,
// truncated at 3.5 sigma), K1 = 0.01, K2 = 0.03, population (co)variances, per channel then
// averaged, mean over the valid region where the window fits (no padding). Computed in double.
double ssim(const io::Image& reference, const io::Image& distorted);

}  // namespace vavae::eval
