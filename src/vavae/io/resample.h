#pragma once
#include <cstdint>

#include "vavae/io/image.h"

namespace vavae::io {

enum class ResampleFilter { box, bicubic };  // PIL's Image.BOX and Image.BICUBIC (a = -0.5)

// PIL's `image.resize((width, height), resample=filter)` on 8-bit RGB, bit for bit: Pillow's
// two-pass fixed-point resampler (horizontal pass first, each pass rounded to 8 bits, 22-bit
// coefficients). Only `window` of the result is computed, so a resize followed by a crop costs the
// crop's pixels; the window's pixels equal those of the full resize.
Image resample(const Image& image, int64_t height, int64_t width, ResampleFilter filter, Window window = {});

}  // namespace vavae::io
