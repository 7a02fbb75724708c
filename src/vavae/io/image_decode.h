#pragma once
#include <cstddef>
#include <cstdint>
#include <string>

#include "vavae/io/image.h"

// Decoding untrusted image files with the well-kept, fuzzed system libraries: libpng and
// libjpeg-turbo. Every decode first reads the header and refuses sizes beyond kMaxImagePixels or
// beyond what the file's bytes can encode, before a pixel is allocated. Output is 8-bit RGB as
// PIL's convert("RGB") gives it: gray replicated, alpha dropped, 16-bit cut to its high byte,
// palettes expanded, CMYK (Adobe-inverted or plain) converted.
namespace vavae::io {

constexpr int64_t kMaxImagePixels = int64_t{1} << 28;  // 16384 x 16384

Image decode_png(const uint8_t* data, size_t size, const std::string& path);
// With `shorter_side_at_least` > 0, libjpeg-turbo's DCT scaling decodes at the smallest of 1, 1/2,
// 1/4 and 1/8 of the full size whose shorter side still reaches it: a cheaper decode of fewer
// pixels, which then differ slightly from box-halving the full-size image.
Image decode_jpeg(const uint8_t* data, size_t size, const std::string& path, int64_t shorter_side_at_least = 0);

}  // namespace vavae::io
