#include "vavae/io/image_decode.h"

#include <jpeglib.h>
#include <png.h>

#include <algorithm>
#include <csetjmp>
#include <cstdio>
#include <cstring>
#include <vector>

#include "vavae/common/error.h"

namespace vavae::io {
namespace {

// PNG's deflate and JPEG's entropy coding cannot encode pixels much denser than ~1000:1: a small
// file declaring a huge image is a decompression bomb.
constexpr int64_t kMaxExpansion = 1100;

void check_size(int64_t width, int64_t height, size_t file_bytes, const std::string& path) {
  if (width <= 0 || height <= 0) throw Error(path + ": image of " + std::to_string(width) + "x" + std::to_string(height) + " pixels");
  const int64_t pixels = width * height;  // both below 2^31: no overflow
  if (pixels > kMaxImagePixels)
    throw Error(path + ": declares " + std::to_string(width) + "x" + std::to_string(height) + " pixels, more than the limit of " +
                std::to_string(kMaxImagePixels));
  if (pixels * 3 > kMaxExpansion * static_cast<int64_t>(file_bytes) + 4096)
    throw Error(path + ": declares " + std::to_string(width) + "x" + std::to_string(height) + " pixels, more than its " +
                std::to_string(file_bytes) + " bytes can encode");
}

// ---- PNG ----

struct PngInput {
  const uint8_t* data;
  size_t size, pos;
};

struct PngFailure {
  std::jmp_buf jump;
  char message[200] = "";
};

void png_read_from_memory(png_structp png, png_bytep out, png_size_t n) {
  auto* in = static_cast<PngInput*>(png_get_io_ptr(png));
  if (n > in->size - in->pos) png_error(png, "file ends early");
  std::memcpy(out, in->data + in->pos, n);
  in->pos += n;
}

void png_fail(png_structp png, png_const_charp message) {
  auto* failure = static_cast<PngFailure*>(png_get_error_ptr(png));
  std::snprintf(failure->message, sizeof(failure->message), "%s", message);
  std::longjmp(failure->jump, 1);
}

void png_ignore_warning(png_structp, png_const_charp) {}

}  // namespace

Image decode_png(const uint8_t* data, size_t size, const std::string& path) {
  PngFailure failure;
  PngInput input{data, size, 0};
  png_structp png = png_create_read_struct(PNG_LIBPNG_VER_STRING, &failure, png_fail, png_ignore_warning);
  if (!png) throw Error(path + ": cannot start the PNG decoder");
  png_infop info = png_create_info_struct(png);
  // Every object with a destructor is declared before setjmp, so a longjmp back skips none.
  Image image;
  std::vector<png_bytep> rows;
  std::string size_error;
  if (setjmp(failure.jump)) {
    png_destroy_read_struct(&png, &info, nullptr);
    throw Error(path + ": cannot read PNG: " + failure.message);
  }
  if (!info) png_error(png, "out of memory");
  png_set_read_fn(png, &input, png_read_from_memory);
  png_set_user_limits(png, 1 << 15, 1 << 15);
  png_set_chunk_malloc_max(png, 8 << 20);  // one ancillary chunk (text, ICC profile) at most 8 MiB
  png_read_info(png, info);
  const png_uint_32 width = png_get_image_width(png, info), height = png_get_image_height(png, info);
  const int color = png_get_color_type(png, info);
  // check_size throws a C++ exception: the decoder is released first.
  bool size_ok = true;
  try {
    check_size(width, height, size, path);
  } catch (const Error& e) {
    size_ok = false;
    size_error = e.what();
  }
  if (!size_ok) {
    png_destroy_read_struct(&png, &info, nullptr);
    throw Error(size_error);
  }
  png_set_strip_16(png);
  png_set_strip_alpha(png);
  png_set_packing(png);
  if (color == PNG_COLOR_TYPE_PALETTE) png_set_palette_to_rgb(png);
  if (color == PNG_COLOR_TYPE_GRAY || color == PNG_COLOR_TYPE_GRAY_ALPHA) {
    png_set_expand_gray_1_2_4_to_8(png);
    png_set_gray_to_rgb(png);
  }
  if (png_get_valid(png, info, PNG_INFO_tRNS)) png_set_tRNS_to_alpha(png);  // then stripped with the alpha channel
  png_set_interlace_handling(png);
  png_read_update_info(png, info);
  if (png_get_rowbytes(png, info) != static_cast<size_t>(width) * 3) png_error(png, "unexpected row layout after conversion");
  image.width = width;
  image.height = height;
  image.rgb.resize(static_cast<size_t>(width) * height * 3);
  rows.resize(height);
  for (png_uint_32 y = 0; y < height; ++y) rows[y] = image.rgb.data() + static_cast<size_t>(y) * width * 3;
  png_read_image(png, rows.data());
  png_destroy_read_struct(&png, &info, nullptr);
  return image;
}

// ---- JPEG ----

namespace {

struct JpegFailure {
  jpeg_error_mgr manager;
  std::jmp_buf jump;
  char message[JMSG_LENGTH_MAX] = "";
};

void jpeg_fail(j_common_ptr cinfo) {
  auto* failure = reinterpret_cast<JpegFailure*>(cinfo->err);
  (*cinfo->err->format_message)(cinfo, failure->message);
  std::longjmp(failure->jump, 1);
}

void jpeg_ignore_message(j_common_ptr, int) {}

}  // namespace

Image decode_jpeg(const uint8_t* data, size_t size, const std::string& path, int64_t shorter_side_at_least) {
  jpeg_decompress_struct cinfo{};
  JpegFailure failure;
  cinfo.err = jpeg_std_error(&failure.manager);
  failure.manager.error_exit = jpeg_fail;
  failure.manager.emit_message = jpeg_ignore_message;
  Image image;
  std::vector<uint8_t> cmyk_row;
  std::string size_error;
  if (setjmp(failure.jump)) {
    jpeg_destroy_decompress(&cinfo);
    throw Error(path + ": cannot read JPEG: " + failure.message);
  }
  jpeg_create_decompress(&cinfo);
  jpeg_mem_src(&cinfo, data, static_cast<unsigned long>(size));
  jpeg_read_header(&cinfo, TRUE);
  // libjpeg's own allocation cap, on top of the size check (progressive files keep coefficients).
  cinfo.mem->max_memory_to_use = 2048L << 20;
  const bool cmyk = cinfo.jpeg_color_space == JCS_CMYK || cinfo.jpeg_color_space == JCS_YCCK;
  cinfo.out_color_space = cmyk ? JCS_CMYK : JCS_RGB;
  bool size_ok = true;
  try {
    check_size(cinfo.image_width, cinfo.image_height, size, path);
  } catch (const Error& e) {
    size_ok = false;
    size_error = e.what();
  }
  if (!size_ok) {
    jpeg_destroy_decompress(&cinfo);
    throw Error(size_error);
  }
  if (shorter_side_at_least > 0) {
    const int64_t shorter = std::min<int64_t>(cinfo.image_width, cinfo.image_height);
    // Only 1/2, 1/4 and 1/8: libjpeg-turbo has SIMD kernels for those (PIL's draft() uses the same);
    // its generic M/8 kernels measured slower than a full decode.
    cinfo.scale_num = 1;
    cinfo.scale_denom = 1;
    while (cinfo.scale_denom < 8 && (shorter + 2 * cinfo.scale_denom - 1) / (2 * cinfo.scale_denom) >= shorter_side_at_least)
      cinfo.scale_denom *= 2;
  }
  jpeg_calc_output_dimensions(&cinfo);
  image.width = cinfo.output_width;
  image.height = cinfo.output_height;
  image.rgb.resize(static_cast<size_t>(image.width) * image.height * 3);
  if (cmyk) cmyk_row.resize(static_cast<size_t>(image.width) * 4);
  jpeg_start_decompress(&cinfo);
  if (cinfo.output_width != static_cast<JDIMENSION>(image.width) || cinfo.output_height != static_cast<JDIMENSION>(image.height) ||
      cinfo.output_components != (cmyk ? 4 : 3))
  {
    std::snprintf(failure.message, sizeof(failure.message), "unexpected output layout");
    std::longjmp(failure.jump, 1);
  }
  // Adobe's CMYK JPEGs store inverted values (PIL's "CMYK;I"); PIL then maps CMYK to RGB as
  // R = (255 - K) - (C (255 - K)) / 255, rounded by its MULDIV255.
  const bool inverted = cinfo.saw_Adobe_marker;
  auto muldiv255 = [](int a, int b) {
    const int t = a * b + 128;
    return ((t >> 8) + t) >> 8;
  };
  while (cinfo.output_scanline < cinfo.output_height) {
    uint8_t* out = image.rgb.data() + static_cast<size_t>(cinfo.output_scanline) * image.width * 3;
    JSAMPROW row = cmyk ? cmyk_row.data() : out;
    jpeg_read_scanlines(&cinfo, &row, 1);
    if (!cmyk) continue;
    for (int64_t x = 0; x < image.width; ++x) {
      const uint8_t* p = cmyk_row.data() + 4 * x;
      const int nk = inverted ? p[3] : 255 - p[3];
      for (int c = 0; c < 3; ++c) {
        const int ink = inverted ? 255 - p[c] : p[c];
        out[3 * x + c] = static_cast<uint8_t>(nk - muldiv255(ink, nk));
      }
    }
  }
  jpeg_finish_decompress(&cinfo);
  jpeg_destroy_decompress(&cinfo);
  return image;
}

}  // namespace vavae::io
