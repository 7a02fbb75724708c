#include "vavae/io/resample.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <string>
#include <vector>

#include "vavae/common/error.h"

namespace vavae::io {
namespace {

constexpr int kPrecisionBits = 32 - 8 - 2;  // Pillow's PRECISION_BITS for 8-bit images

double box_filter(double x) { return x > -0.5 && x <= 0.5 ? 1.0 : 0.0; }

double bicubic_filter(double x) {
  constexpr double a = -0.5;
  x = std::abs(x);
  if (x < 1.0) return ((a + 2.0) * x - (a + 3.0)) * x * x + 1;
  if (x < 2.0) return (((x - 5) * x + 8) * x - 4) * a;
  return 0.0;
}

// For each output position in [begin, end): the first input position, the number of taps and
// their fixed-point weights (Pillow's precompute_coeffs + normalize_coeffs_8bpc).
struct Taps {
  int64_t stride = 0;  // weights per output position
  std::vector<int64_t> first, count;
  std::vector<int32_t> weights;
};

Taps precompute_taps(int64_t in_size, int64_t out_size, ResampleFilter filter, int64_t begin, int64_t end) {
  const double support_at_1 = filter == ResampleFilter::box ? 0.5 : 2.0;
  const double scale = static_cast<double>(in_size) / static_cast<double>(out_size);
  const double filterscale = std::max(scale, 1.0);
  const double support = support_at_1 * filterscale;
  Taps taps;
  taps.stride = static_cast<int64_t>(std::ceil(support)) * 2 + 1;
  std::vector<double> k(static_cast<size_t>(taps.stride));
  for (int64_t xx = begin; xx < end; ++xx) {
    const double center = (static_cast<double>(xx) + 0.5) * scale;
    const double ss = 1.0 / filterscale;
    const int64_t xmin = std::max<int64_t>(static_cast<int64_t>(center - support + 0.5), 0);
    const int64_t xmax = std::min<int64_t>(static_cast<int64_t>(center + support + 0.5), in_size) - xmin;
    double sum = 0.0;
    for (int64_t x = 0; x < xmax; ++x) {
      const double arg = (static_cast<double>(x + xmin) - center + 0.5) * ss;
      k[x] = filter == ResampleFilter::box ? box_filter(arg) : bicubic_filter(arg);
      sum += k[x];
    }
    taps.first.push_back(xmin);
    taps.count.push_back(xmax);
    for (int64_t x = 0; x < taps.stride; ++x) {
      const double w = x < xmax ? (sum != 0.0 ? k[x] / sum : k[x]) : 0.0;
      const double fixed = w * static_cast<double>(1 << kPrecisionBits);
      taps.weights.push_back(static_cast<int32_t>(w < 0 ? -0.5 + fixed : 0.5 + fixed));
    }
  }
  return taps;
}

// The two inner loops, over contiguous runs of samples: vectorised for AVX2 where the CPU has it
// (x86-64 builds carry both versions and pick at load time).
#if (defined(__x86_64__) || defined(__i386__)) && defined(__has_attribute)
#if __has_attribute(target_clones)
#define VAVAE_AVX2_CLONE __attribute__((target_clones("avx2", "default")))
#endif
#endif
#ifndef VAVAE_AVX2_CLONE
#define VAVAE_AVX2_CLONE
#endif

VAVAE_AVX2_CLONE void accumulate(int32_t* acc, const uint8_t* src, int32_t weight, int64_t n) {
  for (int64_t i = 0; i < n; ++i) acc[i] += static_cast<int32_t>(src[i]) * weight;
}

VAVAE_AVX2_CLONE void round_to_8bit(uint8_t* dst, const int32_t* acc, int64_t n) {
  for (int64_t i = 0; i < n; ++i) dst[i] = static_cast<uint8_t>(std::clamp(acc[i] >> kPrecisionBits, 0, 255));
}

// One pass along the slow axis of `src` ([positions][run] samples): row `o` of the result is the
// weighted sum of rows first[o] - offset ... of src, each run of `run` samples at once.
void resample_rows(const uint8_t* src, int64_t run, int64_t offset, const Taps& taps, uint8_t* dst) {
  std::vector<int32_t> acc(static_cast<size_t>(run));
  for (size_t o = 0; o < taps.first.size(); ++o) {
    std::fill(acc.begin(), acc.end(), 1 << (kPrecisionBits - 1));
    for (int64_t j = 0; j < taps.count[o]; ++j)
      accumulate(acc.data(), src + (taps.first[o] + j - offset) * run, taps.weights[o * taps.stride + j], run);
    round_to_8bit(dst + static_cast<int64_t>(o) * run, acc.data(), run);
  }
}

// [rows][cols][3] <-> [cols][rows][3]: the horizontal pass runs as a pass over rows of the transpose.
// Pixels move as 4-byte words written in order (each spills one byte into the next pixel, written
// after it), hence the spare byte at the end; the source's very last pixel is copied as 3 bytes.
std::vector<uint8_t> transpose_pixels(const uint8_t* src, int64_t rows, int64_t cols, int64_t src_stride) {
  std::vector<uint8_t> out(static_cast<size_t>(rows * cols * 3 + 1));
  uint8_t* dst = out.data();
  for (int64_t x = 0; x < cols; ++x)
    for (int64_t y = 0; y < rows; ++y, dst += 3) {
      const uint8_t* pixel = src + y * src_stride + x * 3;
      if (y == rows - 1 && x == cols - 1) {
        std::memcpy(dst, pixel, 3);
      } else {
        uint32_t word;
        std::memcpy(&word, pixel, 4);
        std::memcpy(dst, &word, 4);
      }
    }
  out.pop_back();
  return out;
}

// True when every output position is the rounded mean of input positions 2o and 2o + 1 (a box
// filter halving an even size): that pass is (a + b + 1) >> 1, exactly what the weights give.
bool is_pairwise_mean(const Taps& taps, int64_t begin) {
  for (size_t o = 0; o < taps.first.size(); ++o)
    if (taps.count[o] != 2 || taps.first[o] != 2 * (begin + static_cast<int64_t>(o)) || taps.weights[o * taps.stride] != 1 << (kPrecisionBits - 1) ||
        taps.weights[o * taps.stride + 1] != 1 << (kPrecisionBits - 1))
      return false;
  return true;
}

}  // namespace

Image resample(const Image& image, int64_t height, int64_t width, ResampleFilter filter, Window window) {
  if (height <= 0 || width <= 0 || image.height <= 0 || image.width <= 0)
    throw Error("cannot resize a " + std::to_string(image.height) + "x" + std::to_string(image.width) + " image to " +
                std::to_string(height) + "x" + std::to_string(width));
  if (window.height < 0) window.height = height - window.top;
  if (window.width < 0) window.width = width - window.left;
  if (window.top < 0 || window.left < 0 || window.height <= 0 || window.width <= 0 || window.top + window.height > height ||
      window.left + window.width > width)
    throw Error("window " + std::to_string(window.height) + "x" + std::to_string(window.width) + " at (" + std::to_string(window.top) +
                "," + std::to_string(window.left) + ") leaves the " + std::to_string(height) + "x" + std::to_string(width) + " image");
  const bool horizontal = width != image.width, vertical = height != image.height;

  // The input rows the window needs: all the vertical taps, or the window's own rows.
  Taps rows_taps;
  int64_t row0 = window.top, row1 = window.top + window.height;
  if (vertical) {
    rows_taps = precompute_taps(image.height, height, filter, window.top, window.top + window.height);
    row0 = rows_taps.first.front();
    row1 = rows_taps.first.back() + rows_taps.count.back();
  }
  const int64_t rows = row1 - row0;

  // Horizontal pass: [rows][window.width][3], rounded to 8 bits as Pillow's intermediate image is.
  std::vector<uint8_t> middle;
  const Taps columns_taps = horizontal ? precompute_taps(image.width, width, filter, window.left, window.left + window.width) : Taps{};
  if (horizontal && is_pairwise_mean(columns_taps, window.left)) {
    middle.resize(static_cast<size_t>(rows * window.width * 3));
    for (int64_t y = 0; y < rows; ++y) {
      const uint8_t* in = &image.rgb[((row0 + y) * image.width + 2 * window.left) * 3];
      uint8_t* out = &middle[y * window.width * 3];
      for (int64_t x = 0; x < window.width * 3; x += 3)
        for (int64_t c = 0; c < 3; ++c) out[x + c] = static_cast<uint8_t>((in[2 * x + c] + in[2 * x + 3 + c] + 1) >> 1);
    }
  } else if (horizontal) {
    const std::vector<uint8_t> columns = transpose_pixels(image.rgb.data() + row0 * image.width * 3, rows, image.width, image.width * 3);
    std::vector<uint8_t> out_columns(static_cast<size_t>(window.width * rows * 3));
    resample_rows(columns.data(), rows * 3, 0, columns_taps, out_columns.data());
    middle = transpose_pixels(out_columns.data(), window.width, rows, rows * 3);
  } else {
    middle.resize(static_cast<size_t>(rows * window.width * 3));
    for (int64_t y = 0; y < rows; ++y)
      std::memcpy(&middle[y * window.width * 3], &image.rgb[((row0 + y) * image.width + window.left) * 3],
                  static_cast<size_t>(window.width * 3));
  }

  Image out;
  out.height = window.height;
  out.width = window.width;
  if (!vertical) {
    out.rgb = std::move(middle);
    return out;
  }
  out.rgb.resize(static_cast<size_t>(out.height * out.width * 3));
  resample_rows(middle.data(), window.width * 3, row0, rows_taps, out.rgb.data());
  return out;
}

}  // namespace vavae::io
